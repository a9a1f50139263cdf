"""YAML presets that only set argparse defaults (the timm habit): every option stays a flag.

``--config configs/tiny.yaml`` is read first; its keys become the parser's defaults, and
flags given on the command line still win. Unknown keys are an error, so a typo in a preset
cannot silently do nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from emoeditor.errors import EmoEditorError
from emoeditor.logs import setup_logging


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` with the description's examples kept as written and each option's default shown once.

    A default is appended unless the help text already speaks of one, the option is a switch, or
    the default is None (the help then says what happens without it).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or "default" in text.lower()
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        value = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {str(value).replace('%', '%%')})".lstrip()


def load_preset(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        presets = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
        raise EmoEditorError(f"config {path} not found; presets in configs/: {', '.join(presets) or 'none'}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise EmoEditorError(f"config {path} must be a mapping of option: value, got {type(data).__name__}")
    return data


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse `argv`, taking defaults from the YAML named by ``--config`` (added here if absent)."""
    if not any("--config" in a.option_strings for a in parser._actions):
        parser.add_argument("--config", type=str, default=None,
                            help="YAML preset whose values become the defaults of these flags")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=str, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        preset = load_preset(known.config)
        valid = {a.dest for a in parser._actions}
        unknown = sorted(set(preset) - valid)
        if unknown:
            raise EmoEditorError(f"config {known.config}: unknown option(s) {', '.join(unknown)}; "
                                 f"see --help for the valid ones")
        parser.set_defaults(**preset)
    args = parser.parse_args(argv)
    if known.config:
        _check_preset_choices(parser, args, preset, known.config)
    return args


def _check_preset_choices(parser: argparse.ArgumentParser, args: argparse.Namespace, preset: dict, path: str) -> None:
    """argparse checks `choices` on the command line only, never on defaults: check the preset's here."""
    for action in parser._actions:
        if action.choices is None or action.dest not in preset:
            continue
        value = getattr(args, action.dest)
        if any(v not in action.choices for v in (value if isinstance(value, list) else [value])):
            hint = (" (YAML reads unquoted no/yes/on/off as booleans: quote the value)"
                    if isinstance(value, bool) else "")
            raise EmoEditorError(f"config {path}: {action.dest}: {value!r} is not one of "
                                 f"{', '.join(map(str, action.choices))}{hint}")


def run_cli(main: Callable[[], object]) -> None:
    """Run a CLI entry point; an EmoEditorError becomes one clear line on stderr and exit code 2.

    Logging gets its default setup first, so what happens before the entry point parses its
    --quiet/--verbose (imports, preset loading) is already routed through emoeditor.logs.
    """
    setup_logging()
    try:
        main()
    except EmoEditorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
