"""Finding every method: import each module of emoeditor/editors/ so its file registers itself.

Spec parsing goes through here (not `registry` directly), so a method that is one new file in
this folder is known to `scripts/evaluate.py --methods` without being named anywhere else.
Discovery lives apart from the registry because every method file imports the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Sequence

from emoeditor.editors import registry
from emoeditor.editors.registry import MethodSpec

_discovered = False


def discover() -> None:
    """Import every module of emoeditor/editors/ once."""
    global _discovered
    if _discovered:
        return
    import emoeditor.editors as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _discovered = True


def available_methods() -> list[str]:
    """Every name a method spec may use (presets and registered kinds)."""
    discover()
    return sorted(set(registry.PRESETS) | set(registry.EDITOR_FACTORIES))


def parse_method(spec: str) -> MethodSpec:
    discover()
    return registry.parse_method(spec)


def parse_methods(specs: Sequence[str]) -> list[MethodSpec]:
    discover()
    return registry.parse_methods(specs)
