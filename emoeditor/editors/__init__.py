"""Every editing method behind one Editor interface; one file per method, registered on import.

Importing this package imports every module in this folder, so a new method is one new file
that decorates its factory with `register_editor` (see registry.py): nothing else changes.
"""

import importlib
import pkgutil

from emoeditor.editors.base import EditResult, Editor
from emoeditor.editors.registry import (EDITOR_FACTORIES, PRESETS, MethodContext, MethodSpec, parse_method,
                                        parse_methods, register_editor)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EDITOR_FACTORIES", "PRESETS", "EditResult", "Editor", "MethodContext", "MethodSpec", "parse_method",
           "parse_methods", "register_editor"]
