#!/usr/bin/env python
"""Analyse the 2AFC study (Fig. 5, S7, S8): `python scripts/analyze_study.py study.sqlite --out DIR`.

The same as `python -m apps.study analyze`; flags and the column mapping for other data: apps/study/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # apps/ is not installed: it is outside the package

from apps.study.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["analyze", *sys.argv[1:]]))
