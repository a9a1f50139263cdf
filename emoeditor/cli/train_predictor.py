"""scripts/train_predictor.py's flags."""

from __future__ import annotations

import argparse

from emoeditor.config import parse_args
from emoeditor.constants import IMAGE_SIZE, PREDICTOR_NORMALIZATIONS, RESNET18_IMAGENET_FILE
from emoeditor.data.emoset import LAYOUTS
from emoeditor.training.predictor import AUGMENTATIONS, OPTIMIZERS, PRECISIONS, SCHEDULES, STATE_FILE, train_predictor

# ----------------------------------------------------------------------------------- training

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Fine-tune the ResNet18 emotion predictor on EmoSet.",
                                formatter_class=_HelpFormatter)
    p.add_argument("--data_root", required=False, default=None, help="EmoSet root (release layout or class folders)")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="EmoSet layout; auto: a release if train/val/test.json exists, else class folders")
    p.add_argument("--val_fraction", type=float, default=0.1, help="flat class folders only: share held out for val")
    p.add_argument("--test_fraction", type=float, default=0.1, help="flat class folders only: share held out for test")
    p.add_argument("--output_dir", default="runs/predictor", help="where weights, metrics and logs go")
    p.add_argument("--image_size", type=int, default=IMAGE_SIZE, help="input side (official: 224)")
    p.add_argument("--normalize", choices=PREDICTOR_NORMALIZATIONS, default="none",
                   help="input normalisation recorded in config.json (official: none, plain [0, 1])")
    p.add_argument("--init", choices=("imagenet", "random"), default="imagenet",
                   help="trunk initialisation; imagenet falls back to random with a warning if no file")
    p.add_argument("--imagenet_weights", default=None,
                   help=f"torchvision {RESNET18_IMAGENET_FILE} state dict (default: the torch hub cache)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="crop_flip", help="training augmentation")
    p.add_argument("--min_crop_scale", type=float, default=0.35, help="smallest random-resized-crop area")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max_steps", type=int, default=0, help="stop after this many optimizer steps (0: no limit)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--learning_rate", type=float, default=3e-4)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9, help="SGD only")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="LR after warmup")
    p.add_argument("--warmup_steps", type=int, default=500)
    p.add_argument("--label_smoothing", type=float, default=0.0)
    p.add_argument("--precise_bn_batches", type=int, default=0,
                   help="before each evaluation, re-estimate BatchNorm statistics on this many train batches")
    p.add_argument("--mixed_precision", choices=PRECISIONS, default="bf16", help="autocast dtype on CUDA (CPU: fp32)")
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_at_start", action="store_true", help="evaluate the initial model on val first")
    p.add_argument("--resume", action="store_true", help=f"continue from {STATE_FILE} in --output_dir")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="log to <output_dir>/tensorboard")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if CUDA is available")
    return p




def main(argv=None, description: str | None = None) -> dict:
    """scripts/train_predictor.py: flags (and an optional --config preset) -> train_predictor."""
    parser = build_parser()
    if description:
        parser.description = description
    return train_predictor(parse_args(parser, argv))
