#!/usr/bin/env python
"""Encode EmoPair once with the frozen VAE + CLIP text encoder, so training reads tensors, not images.

Takes the training flags (same --config presets), so the cache matches the run that will use it:
    python scripts/cache_latents.py --config configs/paper.yaml --latent_cache cache/emopair_224
    python train.py --config configs/paper.yaml --latent_cache cache/emopair_224
Interrupted? Run it again: it resumes at the first missing shard.
"""

import logging

from emoeditor.config import parse_args, run_cli
from emoeditor.cli.train import build_parser
from emoeditor.training.trainer import cache_latents


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    parser.description = "Build the latent cache (VAE posteriors + CLIP text embeddings) for train.py --latent_cache."
    path = cache_latents(parse_args(parser, argv))
    print(f"latent cache ready: {path}")


if __name__ == "__main__":
    run_cli(main)
