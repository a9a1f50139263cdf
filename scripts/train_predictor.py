#!/usr/bin/env python
"""Fine-tune the ResNet18 emotion predictor P on EmoSet (release layout or class folders).

    python scripts/train_predictor.py --config configs/predictor_paper.yaml --data_root EmoSet-118K \
        --imagenet_weights ~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth --output_dir emo_predictor
    python scripts/train_predictor.py --config configs/predictor_tiny.yaml   # toy EmoSet, CPU, < 1 min

Writes emo_predictor.pt (official key layout) + model.safetensors + config.json, per-split
top-1 / per-class accuracy (eval_<split>.json) and confusion matrices (confusion_<split>.png).
"""

from emoeditor.cli.train_predictor import main as train_predictor_main
from emoeditor.config import run_cli


def main(argv=None):
    return train_predictor_main(argv, description=__doc__)


if __name__ == "__main__":
    run_cli(main)
