"""A toy EmoSet made offline from scikit-image's bundled photos, in both layouts that
:mod:`emoeditor.data.emoset` reads.

Each image is a random crop of a bundled photo in its emotion's style
(:func:`emoeditor.data.toy.emotion_edit`, the styles of the toy EmoPair) at a random strength, so
the label is learnable from colour alone: a ResNet18 picks it up within a few dozen steps at 64 px,
which is what the predictor-training tests, ``configs/predictor_tiny.yaml`` and the miniature
world's predictor need. The test split reads it too (its sources come from the ``test`` list by default, so give that
split images).

Layouts:

* ``"release"`` -- EmoSet-118K as distributed: ``image/<emotion>/<emotion>_00001.jpg``,
  ``annotation/<emotion>/<emotion>_00001.json``, ``train.json``/``val.json``/``test.json``
  (lists of ``[emotion, image path, annotation path]`` relative to the root) and ``info.json``.
* ``"folders"`` -- one folder per class under each split: ``<split>/<emotion>/*.jpg``.

Same seed => byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from emoeditor.constants import EMOTIONS
from emoeditor.data.toy import TOY_PHOTOS, _save_jpeg, emotion_edit, load_toy_photo, random_crop

SPLITS = ("train", "val", "test")
LAYOUTS = ("release", "folders")
# EmoSet's own label order (its info.json), which differs from EmoEditor's: loaders map by name.
EMOSET_LABEL2IDX = {"amusement": 0, "awe": 1, "contentment": 2, "excitement": 3,
                    "anger": 4, "disgust": 5, "fear": 6, "sadness": 7}
TOY_STRENGTH_RANGE = (0.7, 1.5)  # style strength per image, uniform: the toy EmoPair's targets are 0.8-1.2


def write_toy_emoset(root: Union[str, Path], layout: str = "release",
                     per_class: Sequence[int] = (12, 4, 4), image_size: int = 64, seed: int = 0,
                     num_corrupt: int = 0, photos: Sequence[str] = TOY_PHOTOS) -> Path:
    """Write a toy EmoSet under ``root``; returns ``root``.

    ``per_class`` gives the images per emotion in train/val/test. ``num_corrupt`` extra files in
    the train split are truncated JPEGs (listed like any other image) to exercise the trainer's
    skip-and-count path. ``photos`` names the scikit-image photos to crop from.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = [load_toy_photo(name) for name in photos]
    counter = {e: 0 for e in EMOTIONS}
    splits: dict[str, list] = {s: [] for s in SPLITS}

    def paths(split: str, emotion: str) -> tuple[Path, Path | None]:
        counter[emotion] += 1
        name = f"{emotion}_{counter[emotion]:05d}"
        if layout == "release":
            return Path("image") / emotion / f"{name}.jpg", Path("annotation") / emotion / f"{name}.json"
        return Path(split) / emotion / f"{name}.jpg", None

    for split, n in zip(SPLITS, per_class):
        for emotion in EMOTIONS:
            for _ in range(n):
                photo = photos[int(rng.integers(len(photos)))]
                image = emotion_edit(random_crop(photo, image_size, rng), emotion, rng.uniform(*TOY_STRENGTH_RANGE))
                img_rel, ann_rel = paths(split, emotion)
                _save_jpeg(image, root / img_rel)
                if ann_rel is not None:
                    (root / ann_rel).parent.mkdir(parents=True, exist_ok=True)
                    (root / ann_rel).write_text(json.dumps({"image_id": img_rel.stem, "emotion": emotion}))
                splits[split].append([emotion, img_rel.as_posix(), ann_rel.as_posix() if ann_rel else None])

    for i in range(num_corrupt):
        emotion = EMOTIONS[i % len(EMOTIONS)]
        img_rel, ann_rel = paths("train", emotion)
        (root / img_rel).parent.mkdir(parents=True, exist_ok=True)
        (root / img_rel).write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
        if ann_rel is not None:
            (root / ann_rel).parent.mkdir(parents=True, exist_ok=True)
            (root / ann_rel).write_text(json.dumps({"image_id": img_rel.stem, "emotion": emotion}))
        splits["train"].append([emotion, img_rel.as_posix(), ann_rel.as_posix() if ann_rel else None])

    if layout == "release":
        for split, items in splits.items():
            (root / f"{split}.json").write_text(json.dumps(items, indent=1))
        (root / "info.json").write_text(json.dumps({"label2idx": EMOSET_LABEL2IDX}, indent=1))
    return root
