#!/usr/bin/env python
"""Write a toy EmoPair (scikit-image photos + emotion-plausible colour edits) in the official layout.

    python scripts/make_toy_emopair.py --root EmoPair --json json/data_EmoPair.json --num_pairs 48
"""

import argparse

from emoeditor.config import parse_args, run_cli
from emoeditor.constants import EMOPAIR_JSON, EMOPAIR_ROOT
from emoeditor.data.toy import write_toy_emopair


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=EMOPAIR_ROOT, help="EmoPair image root to write into")
    parser.add_argument("--json", default=EMOPAIR_JSON, help="annotation file to write")
    parser.add_argument("--num_pairs", type=int, default=48, help="number of (source, target) pairs")
    parser.add_argument("--image_size", type=int, default=64, help="side of the square toy images in pixels")
    parser.add_argument("--seed", type=int, default=0, help="same seed => byte-identical files")
    return parser


def main(argv=None):
    args = parse_args(build_parser(), argv)
    path = write_toy_emopair(args.root, args.json, args.num_pairs, args.image_size, args.seed)
    print(f"wrote {args.num_pairs} toy pairs: annotations {path}, images under {args.root}/")


if __name__ == "__main__":
    run_cli(main)
