"""One logging setup for every entry point: our messages at INFO, third-party chatter quiet.

`--quiet` shows warnings and errors only and hides every progress bar; `--verbose` shows our
DEBUG messages, the libraries' INFO and their model-loading bars; the default shows our INFO
lines, our progress bars and the hub's download bars, and the libraries' errors only (their
"Loading pipeline components" bars take a blink and say nothing). Library warnings that say
nothing a user of this project can act on (they concern our own calls or our random-weight test
models) are filtered here, once, by message, so anything new still shows.

diffusers, transformers and huggingface_hub keep their own logger levels and progress-bar
switches; a library imported after `setup_logging` is configured the moment its import ends,
so the setup never imports them itself (a script that never loads a model stays fast).

Importing this module drops one message at its source that no setup could reach in time:
bitsandbytes (the `[dev]`/`[bnb]` extra) logs "Failed to load CPU gemm_4bit_forward ... pip install
kernels" while diffusers probes it on import. It concerns 4-bit CPU matmuls this project never
runs. `emoeditor.config`, which every entry point imports before any model library, imports this.
"""

from __future__ import annotations

import argparse
import importlib.abc
import logging
import os
import re
import sys
import warnings
from types import ModuleType
from typing import Callable

LEVELS = ("quiet", "normal", "verbose")
OURS = ("emoeditor", "__main__")  # our package and a script run as a program
_HANDLER_NAME = "emoeditor"
# (logger, message regex) of import-time notices dropped at their source (see the module docstring)
_IMPORT_NOISE = (
    ("bitsandbytes.backends.cpu.ops", r"^Failed to load CPU gemm_4bit_forward from kernels-community"),
)
# (message regex, category): warnings about our own calls or the libraries' internals
_IGNORED = (
    (r".*local_dir_use_symlinks.*", UserWarning),
    (r"Image size \(\d+ pixels\) exceeds limit.*", Warning),  # we check image sizes ourselves (imageio)
)
_state = {"level": "normal", "progress": True}


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def _drop_import_noise() -> None:
    for name, pattern in _IMPORT_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMessages(pattern))


_drop_import_noise()


class _Formatter(logging.Formatter):
    """Our INFO lines read as plain sentences; the rest say what they are ("warning: ..."), and
    where they come from when that is not us."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno == logging.INFO and record.name.split(".")[0] in OURS:
            return text
        origin = "" if record.name.split(".")[0] in OURS else f" ({record.name})"
        return f"{record.levelname.lower()}{origin}: {text}"


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and tools swap it), like logging.lastResort."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def add_verbosity_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> argparse.ArgumentParser:
    """--quiet / --verbose (mutually exclusive) on an entry point's parser (or one of its groups)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress bars")
    group.add_argument("--verbose", action="store_true", help="debug messages, and the libraries' info messages")
    return parser


def level_of(args: argparse.Namespace) -> str:
    if getattr(args, "quiet", False):
        return "quiet"
    if getattr(args, "verbose", False):
        return "verbose"
    return "normal"


def verbosity_flags(level: str | argparse.Namespace) -> list[str]:
    """The flags that give `level` to another entry point run in-process (the demo runs train and test)."""
    level = level_of(level) if isinstance(level, argparse.Namespace) else level
    return {"quiet": ["--quiet"], "verbose": ["--verbose"]}.get(level, [])


def show_progress() -> bool:
    """Whether our own progress bars should show (off with --quiet)."""
    return _state["progress"]


def setup_logging(level: str | argparse.Namespace = "normal") -> str:
    """Configure our loggers, everyone else's, the libraries' progress bars and the warning filters.

    Safe to call again (the latest level wins): `run_cli` sets the default before an entry point
    parses its flags, and the entry point sets the level the user asked for right after.
    """
    if isinstance(level, argparse.Namespace):
        level = level_of(level)
    if level not in LEVELS:
        raise ValueError(f"unknown verbosity {level!r}; choose one of {LEVELS}")
    ours = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}[level]
    theirs = {"quiet": logging.ERROR, "normal": logging.ERROR, "verbose": logging.INFO}[level]
    _state.update(level=level, progress=level != "quiet")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)  # ours from an earlier call; handlers others added (pytest's) stay
    handler = _Stderr()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(theirs)  # every library that does not keep its own level
    for name in OURS:
        logging.getLogger(name).setLevel(ours)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    bars = {"diffusers": level == "verbose", "transformers": level == "verbose", "huggingface_hub": level != "quiet"}
    for package, configure in _LIBRARY_SETUP.items():
        _when_imported(package, lambda module, configure=configure, bar=bars[package]: configure(theirs, bar))
    for pattern, category in _IGNORED:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    return level


# ------------------------------------------------------------------ libraries with their own switches

def _diffusers(level: int, progress: bool) -> None:
    from diffusers.utils import logging as lib

    lib.set_verbosity(level)
    (lib.enable_progress_bar if progress else lib.disable_progress_bar)()


def _transformers(level: int, progress: bool) -> None:
    from transformers.utils import logging as lib

    lib.set_verbosity(level)
    (lib.enable_progress_bar if progress else lib.disable_progress_bar)()


def _huggingface_hub(level: int, progress: bool) -> None:
    from huggingface_hub import utils as lib
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity(level)
    (lib.enable_progress_bars if progress else lib.disable_progress_bars)()


_LIBRARY_SETUP: dict[str, Callable[[int, bool], None]] = {
    "diffusers": _diffusers, "transformers": _transformers, "huggingface_hub": _huggingface_hub}
_PENDING: dict[str, Callable[[ModuleType], None]] = {}


def _when_imported(package: str, configure: Callable[[ModuleType], None]) -> None:
    """Run `configure` now if `package` is imported, else right after its import finishes."""
    module = sys.modules.get(package)
    if module is not None:
        _PENDING.pop(package, None)
        configure(module)
        return
    _PENDING[package] = configure
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds a pending package with the other finders and wraps its loader to configure it once loaded."""

    def find_spec(self, name, path=None, target=None):
        if name not in _PENDING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ConfiguringLoader(spec.loader, name)  # find_spec is also called just to probe
        return spec


class _ConfiguringLoader(importlib.abc.Loader):
    def __init__(self, loader, name: str):
        self._loader, self._name = loader, name

    def __getattr__(self, name):  # resource readers, get_data, is_package ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        configure = _PENDING.pop(self._name, None)  # the latest setup's, once
        if configure is not None:
            configure(module)
