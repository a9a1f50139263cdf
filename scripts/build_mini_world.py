#!/usr/bin/env python
"""Rebuild mini_world/ (tiny VAE, P and EmoEditor trained on synthetic emotion styles); see --help."""

from emoeditor.cli.build_mini_world import main
from emoeditor.config import run_cli

if __name__ == "__main__":
    run_cli(main)
