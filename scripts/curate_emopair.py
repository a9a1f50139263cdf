#!/usr/bin/env python
"""Rebuild EmoPair: `epas`, `epgs`, `merge`, `stats`.

Flags: emoeditor/cli/curate.py; the recipe: docs/rebuilding_emopair.md.
"""

from emoeditor.cli.curate import build_parser, main
from emoeditor.config import run_cli

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_cli(main)
