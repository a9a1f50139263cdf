#!/usr/bin/env python
"""Evaluate editing methods on the test split (Table 1, plots, Fig. S11); flags: emoeditor/cli/evaluate.py."""

from emoeditor.cli.evaluate import build_parser, main
from emoeditor.config import run_cli

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_cli(main)
