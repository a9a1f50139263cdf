"""Reading EmoSet: the release's split JSONs or class folders -> (path, label) samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoeditor.constants import (EMOSET_SPLITS, EMOTIONS)
from emoeditor.errors import EmoEditorError
from emoeditor.imageio import IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def _label(emotion: str, where: str) -> int:
    name = str(emotion).strip().lower()
    if name not in EMOTIONS:
        raise EmoEditorError(f"{where}: unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    return EMOTIONS.index(name)


def read_release_split(root: Path, split: str) -> list[Sample]:
    """EmoSet-118K ``<split>.json``: a list of [emotion, image path, annotation path] (paths relative to root)."""
    path = root / f"{split}.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EmoEditorError(f"{path}: cannot read the EmoSet split file ({exc})") from None
    if not isinstance(entries, list):
        raise EmoEditorError(f"{path}: expected a list of [emotion, image, annotation] entries")
    samples = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) < 2:
            raise EmoEditorError(f"{path}: entry {i} is {entry!r}, expected [emotion, image path, annotation path]")
        samples.append(Sample(root / entry[1], _label(entry[0], f"{path} entry {i}")))
    return samples


def _class_folder_samples(folder: Path) -> list[Sample]:
    samples = []
    for emotion in EMOTIONS:
        sub = folder / emotion
        if sub.is_dir():
            samples += [Sample(p, EMOTIONS.index(emotion)) for p in sorted(sub.iterdir())
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return samples


def detect_layout(root: Path) -> str:
    if (root / "train.json").exists():
        return "release"
    if any((root / s).is_dir() for s in EMOSET_SPLITS) or any((root / e).is_dir() for e in EMOTIONS):
        return "folders"
    raise EmoEditorError(f"{root}: neither an EmoSet release (train.json, val.json, test.json) nor class "
                         f"folders ({'/'.join(EMOTIONS[:2])}/... or train/{EMOTIONS[0]}/...)")


def load_split(root: str | Path, split: str, layout: str = "auto", val_fraction: float = 0.1,
               test_fraction: float = 0.1, seed: int = 0) -> list[Sample]:
    """The samples of one split ("train", "val" or "test") of an EmoSet in either layout."""
    root = Path(root)
    if not root.is_dir():
        raise EmoEditorError(f"{root}: EmoSet root folder not found; pass --data_root")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "release":
        return read_release_split(root, split) if (root / f"{split}.json").exists() else []
    if any((root / s).is_dir() for s in EMOSET_SPLITS):
        return _class_folder_samples(root / split)
    # Flat class folders: a seeded split, the same for every call with the same seed.
    samples = _class_folder_samples(root)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val, n_test = int(round(val_fraction * len(samples))), int(round(test_fraction * len(samples)))
    idx = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}[split]
    return [samples[i] for i in sorted(idx)]


