#!/usr/bin/env python
"""Convert the official EmoEditor release (.pt files) into our safetensors pipeline folder.

examples:
    python scripts/convert_official.py --model_dir model --base model/instruct-pix2pix --out model/emoeditor
    python scripts/convert_official.py --base model/instruct-pix2pix \\
        --predictor emo_predictor/emo_predictor.pt        # also write emo_predictor/model.safetensors
    python scripts/convert_official.py --base timbrooks/instruct-pix2pix   # the base from the hub (network)

The result loads with ``EmoEditorPipeline.from_pretrained(out)`` (or `test.py --model_dir out`) and
gives the same edits as the .pt files. `--base` only supplies the UNet/VAE architecture (a local
InstructPix2Pix folder, e.g. from `python scripts/download_weights.py --base_config_only`, or, with
network, the hub id); every weight comes from the official files.
"""

import argparse

from emoeditor.config import HelpFormatter, parse_args, run_cli
from emoeditor.constants import IP2P_HUB_ID
from emoeditor.logs import add_verbosity_args, setup_logging

DTYPES = ("float32", "float16", "bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = parser.add_argument_group("inputs")
    g.add_argument("--model_dir", default="model", help="folder holding model_ip2p.pt and model_emoenc.pt")
    g.add_argument("--base", default=IP2P_HUB_ID, help="InstructPix2Pix folder (diffusers layout) or hub id")
    g.add_argument("--predictor", default=None,
                   help="official emo_predictor.pt to convert too (written as model.safetensors + config.json)")
    g = parser.add_argument_group("outputs")
    g.add_argument("--out", default="model/emoeditor", help="pipeline folder to write")
    g.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="weight dtype to store (the official .pt is float16; float32 upcasts losslessly)")
    g.add_argument("--with_text_encoder", action="store_true",
                   help="also copy the base CLIP text encoder/tokenizer (needed only to fine-tune with L_emb)")
    g.add_argument("--predictor_out", default=None, help="predictor folder to write (default: next to --predictor)")
    add_verbosity_args(parser.add_argument_group("logging"))
    return parser


def main(argv=None):
    args = parse_args(build_parser(), argv)
    setup_logging(args)

    import torch

    from emoeditor.editing.loading import convert_official

    out = convert_official(args.model_dir, args.base, args.out, torch_dtype=getattr(torch, args.dtype),
                           text=args.with_text_encoder, predictor=args.predictor, predictor_out=args.predictor_out)
    print(f"wrote {out}/ (load with EmoEditorPipeline.from_pretrained({str(out)!r}))")


if __name__ == "__main__":
    run_cli(main)
