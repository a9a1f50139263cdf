#!/usr/bin/env python
"""Fetch the official EmoEditor release and the base InstructPix2Pix (needs network).

examples:
    python scripts/download_weights.py                      # model/, emo_predictor/, model/instruct-pix2pix/
    python scripts/download_weights.py --parts models emo_predictor --base_config_only
    python scripts/download_weights.py --parts base --base_dir checkpoints/instruct-pix2pix

Official files come from the Google Drive links of the official README (via gdown:
`pip install gdown`), the base from the Hugging Face hub. Re-running resumes: verified files
are skipped, partial transfers continue. Every file is checked after download (size, zip CRCs
of .pt files, safetensors header size) and its sha256 recorded in SHA256SUMS next to it.
Then `python scripts/convert_official.py --base model/instruct-pix2pix` makes a pipeline folder.
"""

import argparse

from emoeditor.config import HelpFormatter, parse_args, run_cli
from emoeditor.constants import IP2P_LOCAL_DIR
from emoeditor.logs import add_verbosity_args, setup_logging

PARTS = ("models", "emo_predictor", "base")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("what and where")
    g.add_argument("--root", default=".", help="repository root: files go to <root>/model, <root>/emo_predictor")
    g.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                   help="what to fetch: official models (model_ip2p.pt, model_emoenc.pt), the emotion "
                        "predictor, the base InstructPix2Pix")
    g.add_argument("--base_dir", default=None, help=f"where the base goes (default: <root>/{IP2P_LOCAL_DIR})")
    g = parser.add_argument_group("how")
    g.add_argument("--base_config_only", action="store_true",
                   help="fetch only the base configs (enough to run the official weights; training needs all)")
    g.add_argument("--force", action="store_true", help="download again even if a verified file is present")
    add_verbosity_args(parser.add_argument_group("logging"))
    return parser


def main(argv=None):
    args = parse_args(build_parser(), argv)
    setup_logging(args)

    from emoeditor.models.release import download_release

    status = download_release(args.root, args.parts, base_dir=args.base_dir,
                              base_config_only=args.base_config_only, force=args.force)
    for path, state in status.items():
        print(f"{path}: {state}")


if __name__ == "__main__":
    run_cli(main)
