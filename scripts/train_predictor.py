#!/usr/bin/env python
"""Fine-tune the ResNet18 emotion predictor P on EmoSet (release layout or class folders).

    python scripts/make_toy_emoset.py --root runs/toy_emoset                 # a toy EmoSet, then
    python scripts/train_predictor.py --config configs/predictor_tiny.yaml   # CPU, under a minute
    python scripts/train_predictor.py --config configs/predictor_paper.yaml --data_root data/EmoSet-118K \
        --imagenet_weights ~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth --output_dir emo_predictor

Writes emo_predictor.pt (official key layout) + model.safetensors + config.json, per-split
top-1 / per-class accuracy (eval_<split>.json) and confusion matrices (confusion_<split>.png).
`--help` lists every flag.
"""

from emoeditor.cli.train_predictor import main
from emoeditor.config import run_cli

if __name__ == "__main__":
    run_cli(main)
