#!/usr/bin/env python
"""Pick the test split of the paper (Sec. 4): 63 EmoSet images per emotion not used in EmoPair.

    python scripts/make_test_split.py --emoset_root data/EmoSet-118K --emopair_json json/data_EmoPair.json \
        --out json/test_split.json

Each of the 504 sources is edited to the other 7 emotions (3,528 jobs, tagged cross-/within-valence);
the jobs are listed in the split file. EmoSet layouts: the EmoSet-118K release (train/val/test.json,
lists of [emotion, image path, annotation path]) or one folder per emotion.
"""

import argparse

from emoeditor.config import parse_args, run_cli
from emoeditor.constants import EMOPAIR_JSON, EMOSET_SPLIT_FILES, TEST_PER_CLASS, TEST_SPLIT_JSON, TEST_SPLIT_SEED
from emoeditor.evaluation.split import make_test_split, save_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emoset_root", required=True, help="EmoSet folder (EmoSet-118K release or one folder per emotion)")
    parser.add_argument("--emopair_json", default=EMOPAIR_JSON,
                        help="EmoPair annotations whose images are excluded ('none' to exclude nothing)")
    parser.add_argument("--out", default=TEST_SPLIT_JSON, help="split file to write")
    parser.add_argument("--per_class", type=int, default=TEST_PER_CLASS, help="source images per emotion")
    parser.add_argument("--seed", type=int, default=TEST_SPLIT_SEED, help="same seed => same split")
    parser.add_argument("--split_files", nargs="+", default=list(EMOSET_SPLIT_FILES),
                        help="EmoSet-118K split files to read (those present are used)")
    parser.add_argument("--allow_fewer", action="store_true",
                        help="take all unused images of a class that has fewer than --per_class (else: error)")
    args = parse_args(parser, argv)
    emopair = None if str(args.emopair_json).lower() == "none" else args.emopair_json
    split = make_test_split(args.emoset_root, emopair, args.per_class, args.seed, args.allow_fewer, args.split_files)
    path = save_split(split, args.out)
    short = f"; short classes: {', '.join(split['short_classes'])}" if split["short_classes"] else ""
    print(f"wrote {path}: {split['num_sources']} sources, {split['num_jobs']} jobs "
          f"({split['num_cross']} cross-valence, {split['num_within']} within-valence){short}")


if __name__ == "__main__":
    run_cli(main)
