"""One logging setup for every entry point: our messages at INFO, third-party chatter quiet.

`--quiet` shows warnings and errors only and hides progress bars (ours and the libraries');
`--verbose` shows our DEBUG messages and the libraries' INFO; the default shows our INFO lines
and progress bars, and the libraries' errors only. Library warnings that say nothing a user of
this project can act on (they concern our own calls or our random-weight test models) are
filtered here, once, by message, so anything new still shows.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

LEVELS = ("quiet", "normal", "verbose")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LIBRARIES = ("diffusers", "transformers", "accelerate", "huggingface_hub", "torch", "PIL", "matplotlib",
              "bitsandbytes", "pytorch_grad_cam")
# (message regex, category): warnings about our own calls or the libraries' internals
_IGNORED = (
    (r".*local_dir_use_symlinks.*", UserWarning),
    (r"Image size \(\d+ pixels\) exceeds limit.*", Warning),  # we check image sizes ourselves (imageio)
)


def add_verbosity_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--quiet / --verbose (mutually exclusive) on an entry point's parser."""
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


def setup_logging(level: str | argparse.Namespace = "normal") -> str:
    """Configure the root logger, the libraries' loggers, their progress bars and warning filters."""
    if isinstance(level, argparse.Namespace):
        level = level_of(level)
    if level not in LEVELS:
        raise ValueError(f"unknown verbosity {level!r}; choose one of {LEVELS}")
    ours = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}[level]
    theirs = {"quiet": logging.ERROR, "normal": logging.ERROR, "verbose": logging.INFO}[level]
    logging.basicConfig(level=ours, format=_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("emoeditor").setLevel(ours)
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(theirs)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    _library_verbosity(theirs, progress=level != "quiet")
    for pattern, category in _IGNORED:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    return level


def _library_verbosity(level: int, progress: bool) -> None:
    """diffusers, transformers and the hub keep their own logger levels and progress-bar switches."""
    from diffusers.utils import logging as dlog
    from huggingface_hub.utils import logging as hlog
    from transformers.utils import logging as tlog

    for lib in (dlog, tlog, hlog):
        lib.set_verbosity(level)
    for lib in (dlog, tlog):
        (lib.enable_progress_bar if progress else lib.disable_progress_bar)()
