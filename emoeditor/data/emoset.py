"""The one EmoSet reader: the release's split lists or class folders -> images with emotion and split.

The predictor trainer (:func:`load_split`, the samples of one split) and the test split
(:func:`list_images`, every image with the split list naming it) both read EmoSet here.

Layouts:

* ``release`` -- EmoSet-118K as distributed: ``train.json``/``val.json``/``test.json``, each a list
  of ``[emotion, image path, annotation path]`` with paths relative to the root (any one present
  makes a release; a missing list is an empty split);
* ``folders`` -- one folder per emotion, under split folders (``train/<emotion>/*``, ``val/...``,
  ``test/...``) or directly under the root (``<emotion>/*``: no split information). Other
  subfolders and hidden files (``._x.jpg``) are ignored.

Labels are matched by emotion name, so EmoSet's own label order (amusement, awe, contentment,
excitement, anger, ...) never leaks into ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from emoeditor.constants import EMOSET_SPLITS, EMOTIONS
from emoeditor.errors import SplitError
from emoeditor.imageio import IMAGE_EXTENSIONS

LAYOUTS = ("auto", "release", "folders")


@dataclass(frozen=True)
class Sample:
    """A training/evaluation sample of the predictor: an image file and its index in EMOTIONS."""

    path: Path
    label: int


@dataclass(frozen=True)
class EmoSetImage:
    """One listed image: emotion name, path relative to the root (as listed), and the split list
    naming it (None for class folders directly under the root)."""

    emotion: str
    path: str
    split: Optional[str]


def _emotion(name, where: str) -> str:
    emotion = str(name).strip().lower()
    if emotion not in EMOTIONS:
        raise SplitError(f"{where}: unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}")
    return emotion


def read_release_list(root: str | Path, split: str) -> list[EmoSetImage]:
    """``<root>/<split>.json`` of the release, in file order; a missing file is an empty split."""
    path = Path(root) / f"{split}.json"
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitError(f"{path}: cannot read the EmoSet split list ({exc})") from None
    if not isinstance(entries, list):
        raise SplitError(f"{path}: expected a list of [emotion, image path, annotation path] entries")
    images = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not isinstance(entry[1], str):
            raise SplitError(f"{path}: entry {i} is {entry!r}, expected [emotion, image path, annotation path]")
        images.append(EmoSetImage(_emotion(entry[0], f"{path} entry {i}"), entry[1], split))
    return images


def _folder_images(root: Path, folder: Path, split: Optional[str]) -> list[EmoSetImage]:
    images = []
    for emotion in EMOTIONS:
        sub = folder / emotion
        if sub.is_dir():
            images += [EmoSetImage(emotion, p.relative_to(root).as_posix(), split) for p in sorted(sub.iterdir())
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return images


def detect_layout(root: str | Path) -> str:
    root = Path(root)
    if any((root / f"{s}.json").is_file() for s in EMOSET_SPLITS):
        return "release"
    if any((root / s).is_dir() for s in EMOSET_SPLITS) or any((root / e).is_dir() for e in EMOTIONS):
        return "folders"
    raise SplitError(f"{root}: neither an EmoSet release ({', '.join(f'{s}.json' for s in EMOSET_SPLITS)}) "
                     f"nor per-emotion folders ({EMOTIONS[0]}/, {EMOTIONS[1]}/, ... or "
                     f"{EMOSET_SPLITS[0]}/{EMOTIONS[0]}/, ...)")


def list_images(root: str | Path, layout: str = "auto") -> list[EmoSetImage]:
    """Every image of an EmoSet with its split: the release lists in train, val, test order, or the
    split folders then the root's class folders (each emotion in EMOTIONS order, files sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise SplitError(f"EmoSet root {root} is not a folder: expected EmoSet-118K/ (with "
                         f"{', '.join(f'{s}.json' for s in EMOSET_SPLITS)}) or a folder with one subfolder "
                         f"per emotion")
    if layout not in LAYOUTS:
        raise SplitError(f"EmoSet layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "release":
        return [img for split in EMOSET_SPLITS for img in read_release_list(root, split)]
    images = [img for split in EMOSET_SPLITS for img in _folder_images(root, root / split, split)]
    return images + _folder_images(root, root, None)


def has_split_lists(images: list[EmoSetImage]) -> bool:
    """Whether the images come with EmoSet's split information (release lists or split folders)."""
    return any(img.split is not None for img in images)


def load_split(root: str | Path, split: str, layout: str = "auto", val_fraction: float = 0.1,
               test_fraction: float = 0.1, seed: int = 0) -> list[Sample]:
    """The samples of one split ("train", "val" or "test") of an EmoSet in either layout.

    Class folders without split information are split here, seeded: the same for every call
    with the same seed and fractions."""
    root = Path(root)
    images = list_images(root, layout)
    if has_split_lists(images):
        return [Sample(root / img.path, EMOTIONS.index(img.emotion)) for img in images if img.split == split]
    order = np.random.default_rng(seed).permutation(len(images))
    n_val, n_test = int(round(val_fraction * len(images))), int(round(test_fraction * len(images)))
    idx = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}[split]
    return [Sample(root / images[i].path, EMOTIONS.index(images[i].emotion)) for i in sorted(idx)]
