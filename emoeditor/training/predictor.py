"""Fine-tune the emotion predictor P (ResNet18, fc 512 -> 8) on EmoSet (paper Sec. 3.1).

The paper only says "ResNet18 on EmoSet, 73% top-1 on its test set"; the recipe here
(AdamW + warmup/cosine, random-resized-crop + flip) is ours and every part of it is a flag.
The input convention is the official one unless ``--normalize imagenet``: RGB in [0, 1],
resized to ``image_size``, no mean/std. Outputs (in ``--output_dir``):

* ``model.safetensors`` + ``config.json`` + ``emo_predictor.pt`` -- the best-on-val weights in
  the official key layout (a plain torchvision resnet18 state dict, ``weights_only=True``);
* ``training_state.pt`` -- what ``--resume`` needs (tensors and primitives only), written atomically;
* ``eval_<split>.json`` + ``confusion_<split>.png`` -- top-1, per-class accuracy, confusion;
* ``skipped_images.txt`` -- unreadable images, counted and skipped instead of ending the run.

Data layouts (read by :mod:`emoeditor.data.emoset`, the reader the test split uses too): the
EmoSet-118K release (``train.json``/``val.json``/``test.json`` listing ``[emotion, image path,
annotation path]``) or one folder per class, either under split folders (``train/<emotion>/*``) or
directly under the root (then split by ``--val_fraction`` / ``--test_fraction`` with ``--seed``).
Labels are matched by emotion name, so EmoSet's own label order never leaks into ours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from emoeditor.constants import (
    EMOSET_SPLITS,
    EMOTIONS,
    IMAGE_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NUM_EMOTIONS,
    PREDICTOR_NORMALIZATIONS,
    RESNET18_IMAGENET_FILE,
)
from emoeditor.data.emoset import Sample, load_split
from emoeditor.errors import EmoEditorError, ImageLoadError, MissingWeightsError
from emoeditor.fileio import atomic_write, atomic_write_text, check_writable, missing_path
from emoeditor.imageio import open_image
from emoeditor.logs import show_progress
from emoeditor.models.components import seeded_init
from emoeditor.models.predictor import PREDICTOR_PT, EmotionPredictor, build_resnet18, save_predictor
from emoeditor.seeding import mix_seed

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
SKIPPED_FILE = "skipped_images.txt"
AUGMENTATIONS = ("none", "flip", "crop_flip")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("no", "fp16", "bf16")


class EmotionImageDataset(Dataset):
    """(image in [0, 1], label, index); an unreadable image gives label -1 so the loop can skip and count it.

    Augmentation draws come from a generator seeded by ``mix_seed(seed, "augment", epoch, index)``,
    so a run is reproducible whatever the number of workers.
    """

    def __init__(self, samples: list[Sample], image_size: int, augment: str = "none",
                 min_crop_scale: float = 0.35, seed: int = 0):
        self.samples, self.image_size, self.augment = samples, image_size, augment
        self.min_crop_scale, self.seed, self.epoch = min_crop_scale, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _crop_params(self, w: int, h: int, g: torch.Generator) -> tuple[int, int, int, int]:
        """RandomResizedCrop's box (scale in [min_crop_scale, 1], aspect 3/4..4/3), from `g`."""
        for _ in range(10):
            area = w * h * (self.min_crop_scale + (1 - self.min_crop_scale) * torch.rand((), generator=g).item())
            log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand((), generator=g).item()
            cw, ch = int(round(math.sqrt(area * math.exp(log_r)))), int(round(math.sqrt(area / math.exp(log_r))))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (), generator=g))
                left = int(torch.randint(0, w - cw + 1, (), generator=g))
                return top, left, ch, cw
        side = min(w, h)
        return (h - side) // 2, (w - side) // 2, side, side

    def __getitem__(self, index: int):
        sample = self.samples[index]
        size = [self.image_size, self.image_size]
        try:
            img = open_image(sample.path)
        except ImageLoadError:
            return torch.zeros(3, *size), -1, index
        g = torch.Generator().manual_seed(mix_seed(self.seed, "augment", self.epoch, index))
        if self.augment == "crop_flip":
            img = TF.resized_crop(img, *self._crop_params(*img.size, g), size, antialias=True)
        else:  # the official evaluation transform: Resize((224, 224)) + ToTensor
            img = TF.resize(img, size, antialias=True)
        if self.augment in ("flip", "crop_flip") and torch.rand((), generator=g).item() < 0.5:
            img = TF.hflip(img)
        return TF.to_tensor(img), sample.label, index


# -------------------------------------------------------------------------------------- model

def default_imagenet_weights() -> Path:
    """Where torchvision caches ResNet18's ImageNet weights (we look, never download)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_IMAGENET_FILE


def build_predictor(image_size: int = IMAGE_SIZE, normalize: str = "none", init: str = "imagenet",
                    imagenet_weights: Optional[str | Path] = None, seed: int = 0) -> EmotionPredictor:
    """ResNet18 with a fresh 8-way fc; the trunk from a local ImageNet state dict when there is one."""
    if normalize not in PREDICTOR_NORMALIZATIONS:
        raise EmoEditorError(f"--normalize must be one of {PREDICTOR_NORMALIZATIONS}, got {normalize!r}")
    with seeded_init(seed):
        net = build_resnet18()
    if init == "imagenet":
        path = Path(imagenet_weights) if imagenet_weights else default_imagenet_weights()
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
                raise MissingWeightsError(f"{path}: not a torchvision resnet18 state dict (missing {missing[:4]}, "
                                          f"unexpected {unexpected[:4]})")
        elif imagenet_weights:
            raise MissingWeightsError(f"--imagenet_weights {path}: file not found; pass the torchvision "
                                      f"{RESNET18_IMAGENET_FILE} state dict, or --init random")
        else:
            warnings.warn(f"no ImageNet ResNet18 weights at {path}; starting from random weights (expect lower "
                          f"accuracy). Pass --imagenet_weights PATH to {RESNET18_IMAGENET_FILE}, or --init random "
                          f"to silence this.", stacklevel=2)
    elif init != "random":
        raise EmoEditorError(f"--init must be imagenet or random, got {init!r}")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize == "imagenet" else (None, None)
    return EmotionPredictor(net, image_size=image_size, mean=mean, std=std)


# --------------------------------------------------------------------------------- evaluation

def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def evaluate(predictor: EmotionPredictor, loader: DataLoader, device: torch.device,
             autocast_dtype: Optional[torch.dtype] = None, bad: Optional[set] = None) -> dict:
    """Top-1, per-class accuracy and the confusion matrix (rows = true, columns = predicted)."""
    predictor.eval()
    confusion = torch.zeros(NUM_EMOTIONS, NUM_EMOTIONS, dtype=torch.long)
    loss_sum, n = 0.0, 0
    for images, labels, index in loader:
        ok = labels >= 0
        if bad is not None:
            bad.update(index[~ok].tolist())
        if not ok.any():
            continue
        images, labels = images[ok].to(device), labels[ok].to(device)
        with _autocast(device, autocast_dtype):
            logits = predictor(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        n += len(labels)
        confusion += torch.bincount(labels.cpu() * NUM_EMOTIONS + logits.argmax(-1).cpu(),
                                    minlength=NUM_EMOTIONS ** 2).view(NUM_EMOTIONS, NUM_EMOTIONS)
    per_class_n = confusion.sum(1)
    return {
        "top1": float(confusion.diag().sum() / max(n, 1)),
        "loss": loss_sum / max(n, 1),
        "num_images": n,
        "per_class": {e: (float(confusion[i, i] / per_class_n[i]) if per_class_n[i] else None)
                      for i, e in enumerate(EMOTIONS)},
        "confusion": confusion.tolist(),
    }


@torch.no_grad()
def recalibrate_batchnorm(predictor: EmotionPredictor, loader: DataLoader, device: torch.device,
                          num_batches: int) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over training batches ("precise BN").

    After few steps (the tiny preset) the momentum-averaged statistics still lag the weights and
    eval-mode accuracy is far below train-mode accuracy; an exact pass with frozen weights fixes it.
    """
    bns = [m for m in predictor.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = the exact mean over the batches seen
    predictor.train()
    for i, (images, labels, _) in enumerate(loader):
        if i >= num_batches:
            break
        if (labels >= 0).any():
            predictor(images[labels >= 0].to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    predictor.eval()


def save_confusion_png(confusion, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    from emoeditor.evaluation.reporting import pyplot, save_figure

    plt = pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(NUM_EMOTIONS), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(NUM_EMOTIONS), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(NUM_EMOTIONS):
        for j in range(NUM_EMOTIONS):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: save_figure(fig, tmp))


def make_optimizer(params, args: argparse.Namespace) -> torch.optim.Optimizer:
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate, momentum=args.momentum,
                               weight_decay=args.weight_decay, nesterov=args.momentum > 0)
    raise EmoEditorError(f"--optimizer must be one of {OPTIMIZERS}, got {args.optimizer!r}")


def lr_multiplier(warmup: int, total: int, schedule: str):
    """LambdaLR factor: linear warmup over `warmup` steps, then constant or cosine to 0 at `total`."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))
    return f


def _loader(samples, args, train: bool) -> tuple[EmotionImageDataset, DataLoader]:
    ds = EmotionImageDataset(samples, args.image_size, args.augment if train else "none",
                             args.min_crop_scale, args.seed)
    g = torch.Generator()  # reseeded every epoch (train_predictor)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=train, generator=g if train else None,
                        num_workers=args.num_workers, drop_last=train and len(ds) >= args.batch_size,
                        pin_memory=torch.cuda.is_available())
    return ds, loader


def save_training_state(path: str | Path, state: dict) -> Path:
    """What ``--resume`` needs, written atomically: a run killed mid-save keeps the previous epoch's state."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def check_inputs(args: argparse.Namespace) -> None:
    """The EmoSet root and the ImageNet weights named by the flags exist, before any work."""
    if not args.data_root:
        raise EmoEditorError("--data_root is required: the EmoSet folder (release layout or class folders), or a "
                             "toy one written by `python scripts/make_toy_emoset.py --root runs/toy_emoset`")
    root = Path(args.data_root)
    if not root.is_dir():
        raise EmoEditorError(
            f"{f'--data_root {root}: not a folder' if root.exists() else missing_path(root, '--data_root')}; "
            f"download EmoSet-118K "
            f"there, or write a toy EmoSet with `python scripts/make_toy_emoset.py --root {root}` (what "
            f"configs/predictor_tiny.yaml expects)")
    if args.init == "imagenet" and args.imagenet_weights and not Path(args.imagenet_weights).is_file():
        raise MissingWeightsError(f"--imagenet_weights {args.imagenet_weights}: file not found; pass the "
                                  f"torchvision {RESNET18_IMAGENET_FILE} state dict, or --init random")


def train_predictor(args: argparse.Namespace) -> dict:
    """Train, keep the best-on-val weights, evaluate them on val and test; returns a summary dict."""
    check_inputs(args)
    check_writable({"--output_dir": args.output_dir})
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision) \
        if device.type == "cuda" else None

    splits = {s: load_split(args.data_root, s, args.layout, args.val_fraction, args.test_fraction, args.seed)
              for s in EMOSET_SPLITS}
    if not splits["train"]:
        raise EmoEditorError(f"{args.data_root}: the train split is empty")
    logger.info("EmoSet %s: %s", args.data_root, ", ".join(f"{s} {len(v)}" for s, v in splits.items()))
    train_ds, train_loader = _loader(splits["train"], args, train=True)
    eval_loaders = {s: _loader(v, args, train=False)[1] for s, v in splits.items() if s != "train" and v}

    predictor = build_predictor(args.image_size, args.normalize, args.init, args.imagenet_weights, args.seed)
    predictor.to(device)
    optimizer = make_optimizer([p for p in predictor.parameters() if p.requires_grad], args)
    steps_per_epoch = max(len(train_loader), 1)
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lr_multiplier(args.warmup_steps, total_steps, args.schedule))
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    start_epoch, step, best_top1, history = 0, 0, -1.0, []
    state_path = out / STATE_FILE
    if args.resume:
        if not state_path.exists():
            raise MissingWeightsError(f"--resume: no {state_path}; start without --resume")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        predictor.net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, best_top1, history = state["epoch"], state["step"], state["best_top1"], state["history"]
        logger.info("resumed from %s: epoch %d, step %d, best val top-1 %.4f", state_path, start_epoch, step,
                    best_top1)

    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))
    bad: dict[str, set[int]] = {s: set() for s in EMOSET_SPLITS}  # unreadable images, by split
    initial = None
    if args.eval_at_start and "val" in eval_loaders and not args.resume:
        initial = evaluate(predictor, eval_loaders["val"], device, autocast_dtype)
        logger.info("initial val top-1 %.4f", initial["top1"])
    extra = {"emotions": list(EMOTIONS), "input": "RGB in [0, 1], resized to image_size, then mean/std if given",
             "training": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}}

    for epoch in range(start_epoch, args.epochs):
        if args.max_steps and step >= args.max_steps:
            break
        predictor.train()
        train_ds.set_epoch(epoch)
        train_loader.generator.manual_seed(mix_seed(args.seed, "shuffle", epoch))  # resumable shuffle order
        loss_sum, n_seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=not show_progress())
        for images, labels, index in bar:
            ok = labels >= 0
            bad["train"].update(index[~ok].tolist())
            if not ok.any():
                continue
            images, labels = images[ok].to(device, non_blocking=True), labels[ok].to(device, non_blocking=True)
            with _autocast(device, autocast_dtype):
                loss = F.cross_entropy(predictor(images).float(), labels, label_smoothing=args.label_smoothing)
            if not torch.isfinite(loss):
                raise EmoEditorError(f"non-finite loss at step {step} (lr {scheduler.get_last_lr()[0]:.2e}); "
                                     f"lower --learning_rate or use --mixed_precision bf16/no")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            loss_value, lr = loss.item(), scheduler.get_last_lr()[0]
            loss_sum += loss_value * len(labels)
            n_seen += len(labels)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            if writer:
                writer.add_scalar("train/loss", loss_value, step)
                writer.add_scalar("train/lr", lr, step)
            if args.max_steps and step >= args.max_steps:
                break
        record = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(n_seen, 1)}
        if args.precise_bn_batches:
            recalibrate_batchnorm(predictor, train_loader, device, args.precise_bn_batches)
        if "val" in eval_loaders:
            val = evaluate(predictor, eval_loaders["val"], device, autocast_dtype, bad["val"])
            record.update(val_top1=val["top1"], val_loss=val["loss"])
            if writer:
                writer.add_scalar("val/top1", val["top1"], step)
                writer.add_scalar("val/loss", val["loss"], step)
        history.append(record)
        logger.info(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        score = record.get("val_top1", -record["train_loss"])  # no val split: keep the latest
        if score >= best_top1 or "val_top1" not in record:
            best_top1 = score
            save_predictor(predictor, out, extra=extra)
        save_training_state(state_path, {
            "model": predictor.net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
            "step": step, "best_top1": best_top1, "history": history})
    if writer:
        writer.close()

    # Final report with the kept (best) weights, as a user would load them.
    from emoeditor.models.predictor import load_predictor
    best = load_predictor(out, device=device)
    results = {}
    for split, loader in eval_loaders.items():
        res = evaluate(best, loader, device, autocast_dtype, bad[split])
        atomic_write_text(out / f"eval_{split}.json", json.dumps(res, indent=2))
        save_confusion_png(res["confusion"], out / f"confusion_{split}.png",
                           f"{split}: top-1 {100 * res['top1']:.1f}% ({res['num_images']} images)")
        results[split] = res
        per_class = ", ".join(f"{e} {100 * a:.1f}" for e, a in res["per_class"].items() if a is not None)
        logger.info("%s: top-1 %.2f%% on %d images; per class: %s", split, 100 * res["top1"], res["num_images"],
                    per_class)
    skipped = _report_skipped(bad, splits, out)
    return {"history": history, "initial": initial, "results": results, "skipped": skipped,
            "output_dir": str(out.resolve()), "weights": str((out / PREDICTOR_PT).resolve()), "steps": step,
            "metrics": [str((out / f"eval_{split}.json").resolve()) for split in results]}


def _report_skipped(bad: dict[str, set[int]], splits: dict[str, list[Sample]], out: Path) -> int:
    """Unreadable images were skipped, not fatal: say how many and list them in skipped_images.txt."""
    lines = sorted(f"{split}\t{splits[split][i].path}" for split, idx in bad.items() for i in idx)
    if lines:
        atomic_write_text(out / SKIPPED_FILE, "\n".join(lines) + "\n")
        logger.warning("skipped %d unreadable image(s) (listed in %s); re-export or remove them", len(lines),
                       out / SKIPPED_FILE)
    return len(lines)
