#!/usr/bin/env python
"""Encode EmoPair once with the frozen VAE + CLIP text encoder, so training reads tensors, not images.

Takes the training flags (same --config presets), so the cache matches the run that will use it:
    python scripts/cache_latents.py --config configs/paper.yaml --latent_cache cache/emopair_224
    python train.py --config configs/paper.yaml --latent_cache cache/emopair_224
Interrupted? Run it again: it resumes at the first missing shard. `--help` lists the flags that matter.
"""

from emoeditor.cli.train import cache_latents_main as main
from emoeditor.config import run_cli

if __name__ == "__main__":
    run_cli(main)
