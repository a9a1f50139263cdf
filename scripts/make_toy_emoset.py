#!/usr/bin/env python
"""Write a toy EmoSet (scikit-image photos with per-emotion colour edits) for the predictor trainer and the test split.

    python scripts/make_toy_emoset.py --root runs/toy_emoset               # EmoSet-118K release layout
    python scripts/make_toy_emoset.py --root runs/toy_folders --layout folders
    python scripts/make_toy_emoset.py --root runs/tiny/emoset --per_class 0 0 2   # test sources only

The test split draws its sources from EmoSet's test list by default (make_test_split.py --source_splits).
"""

import argparse

from emoeditor.config import parse_args, run_cli
from emoeditor.data.toy_emoset import LAYOUTS, write_toy_emoset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/toy_emoset", help="folder to write the toy EmoSet into")
    parser.add_argument("--layout", choices=LAYOUTS, default="release",
                        help="release: train/val/test.json + image/ + annotation/; folders: <split>/<emotion>/")
    parser.add_argument("--per_class", type=int, nargs=3, default=[12, 4, 4], metavar=("TRAIN", "VAL", "TEST"),
                        help="images per emotion in each split")
    parser.add_argument("--image_size", type=int, default=64, help="side of the square toy images in pixels")
    parser.add_argument("--num_corrupt", type=int, default=0, help="extra truncated files in the train split")
    parser.add_argument("--seed", type=int, default=0, help="same seed => byte-identical files")
    return parser


def main(argv=None):
    args = parse_args(build_parser(), argv)
    root = write_toy_emoset(args.root, args.layout, args.per_class, args.image_size, args.seed, args.num_corrupt)
    print(f"wrote a toy EmoSet ({args.layout} layout, {args.per_class} per class) under {root}/")


if __name__ == "__main__":
    run_cli(main)
