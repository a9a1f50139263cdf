"""scripts/train_predictor.py's flags and entry point."""

from __future__ import annotations

import argparse

from emoeditor.config import HelpFormatter, parse_args
from emoeditor.constants import IMAGE_SIZE, PREDICTOR_NORMALIZATIONS, RESNET18_IMAGENET_FILE
from emoeditor.data.emoset import LAYOUTS
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.training.predictor import AUGMENTATIONS, OPTIMIZERS, PRECISIONS, SCHEDULES, STATE_FILE, train_predictor

EXAMPLES = f"""\
examples:
  python scripts/make_toy_emoset.py --root runs/toy_emoset                 # a toy EmoSet, then
  python scripts/train_predictor.py --config configs/predictor_tiny.yaml   # CPU, under a minute
  python scripts/train_predictor.py --config configs/predictor_paper.yaml --data_root data/EmoSet-118K \\
      --imagenet_weights ~/.cache/torch/hub/checkpoints/{RESNET18_IMAGENET_FILE} --output_dir emo_predictor
  python scripts/train_predictor.py --config configs/predictor_paper.yaml --data_root data/EmoSet-118K --resume

Writes emo_predictor.pt (official key layout) + model.safetensors + config.json (the best-on-val weights;
test.py --predictor_path OUTPUT_DIR), eval_<split>.json and confusion_<split>.png.
"""


# ----------------------------------------------------------------------------------- training
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_predictor.py", epilog=EXAMPLES, formatter_class=HelpFormatter,
                                description="Fine-tune the ResNet18 emotion predictor P on EmoSet (paper Sec. 3.1).")
    p.add_argument("--config", default=None,
                   help="YAML preset (configs/predictor_*.yaml) whose values become these flags' defaults")
    add_verbosity_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--data_root", default=None,
                   help="EmoSet root, release layout or class folders (required; a preset may set it)")
    g.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="EmoSet layout; auto: a release if train/val/test.json exists, else class folders")
    g.add_argument("--val_fraction", type=float, default=0.1, help="flat class folders only: share held out for val")
    g.add_argument("--test_fraction", type=float, default=0.1,
                   help="flat class folders only: share held out for test")
    g.add_argument("--image_size", type=int, default=IMAGE_SIZE, help="input side in pixels (official: 224)")
    g.add_argument("--augment", choices=AUGMENTATIONS, default="crop_flip", help="training augmentation")
    g.add_argument("--min_crop_scale", type=float, default=0.35, help="smallest random-resized-crop area")
    g.add_argument("--num_workers", type=int, default=4, help="DataLoader workers")
    g = p.add_argument_group("model")
    g.add_argument("--normalize", choices=PREDICTOR_NORMALIZATIONS, default="none",
                   help="input normalisation recorded in config.json (official: none, plain [0, 1])")
    g.add_argument("--init", choices=("imagenet", "random"), default="imagenet",
                   help="trunk initialisation; imagenet falls back to random with a warning if no file")
    g.add_argument("--imagenet_weights", default=None,
                   help=f"torchvision {RESNET18_IMAGENET_FILE} state dict (if not given: the torch hub cache)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=20, help="passes over the train split")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many optimizer steps (0: no limit)")
    g.add_argument("--batch_size", type=int, default=64, help="images per optimizer step")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="the optimizer")
    g.add_argument("--learning_rate", type=float, default=3e-4, help="peak learning rate")
    g.add_argument("--weight_decay", type=float, default=0.05, help="decoupled (AdamW) or L2 (SGD) weight decay")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD only")
    g.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="LR after warmup")
    g.add_argument("--warmup_steps", type=int, default=500, help="linear LR warmup steps")
    g.add_argument("--label_smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    g.add_argument("--precise_bn_batches", type=int, default=0,
                   help="before each evaluation, re-estimate BatchNorm statistics on this many train batches")
    g.add_argument("--mixed_precision", choices=PRECISIONS, default="bf16", help="autocast dtype on CUDA (CPU: fp32)")
    g.add_argument("--seed", type=int, default=0, help="initial fc weights, augmentation and shuffling")
    g.add_argument("--cpu", action="store_true", help="train on CPU even if CUDA is available")
    g = p.add_argument_group("outputs")
    g.add_argument("--output_dir", default="runs/predictor", help="where weights, metrics and logs go")
    g.add_argument("--eval_at_start", action="store_true", help="evaluate the initial model on val first")
    g.add_argument("--resume", action="store_true", help=f"continue from {STATE_FILE} in --output_dir")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="log to OUTPUT_DIR/tensorboard (on; --no-tensorboard turns it off)")
    return p


def main(argv=None, description: str | None = None) -> dict:
    """scripts/train_predictor.py: flags (and an optional --config preset) -> train_predictor, then where the
    weights went."""
    parser = build_parser()
    if description:
        parser.description = description
    args = parse_args(parser, argv)
    setup_logging(args)
    summary = train_predictor(args)
    print(f"predictor weights (best on val): {summary['weights']}\n"
          f"  with model.safetensors + config.json in {summary['output_dir']}; use it with "
          f"test.py --predictor_path {summary['output_dir']}\n"
          f"  metrics: {', '.join(summary['metrics']) or 'none (no val/test split)'}")
    return summary
