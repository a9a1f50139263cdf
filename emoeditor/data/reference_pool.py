"""The style references of the reference-based baselines (Table 1's CT and NST): images of each emotion.

The paper gives CT and NST "an additional reference image from the target emotion category ...
randomly selected from the EmoSet dataset". A :class:`ReferencePool` lists the candidate images per
emotion and draws one uniformly with the job's own generator, so a job's reference does not depend
on what else is in its batch. A pool is read from

* an EmoSet folder, through :mod:`emoeditor.data.emoset` (release lists or class folders): by default
  only the ``train`` split, so the test split's sources (drawn from EmoSet's test list) are never
  references; an EmoSet without split information (class folders directly under the root) offers
  every image;
* a JSON file ``{"<emotion>": ["path", ...], ...}`` with paths absolute or relative to the JSON
  file's folder (emotions it leaves out have no references).

:func:`toy_reference_pool` makes a small seeded pool in memory (the ``weights=tiny`` default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from emoeditor.constants import EMOSET_SPLITS, EMOTIONS
from emoeditor.data.emoset import has_split_lists, list_images
from emoeditor.data.toy import TOY_PHOTOS, emotion_edit, load_toy_photo, random_crop
from emoeditor.errors import ImageLoadError, MethodError, SplitError
from emoeditor.fileio import missing_path
from emoeditor.imageio import open_image, pil_to_tensor, to_square

POOL_SPLITS = (*EMOSET_SPLITS, "all")
DEFAULT_SPLIT = "train"
Size = Union[int, tuple[int, int], None]


class ReferencePoolError(MethodError):
    """A reference pool that cannot be used (missing, malformed, or without images of an emotion)."""


def _resize(img: Image.Image, size: Size) -> torch.Tensor:
    """(3, H, W) in [0, 1]; `size` an int (square, as imageio's loader) or (height, width), bilinear."""
    if size is None or isinstance(size, int):
        return to_square(img, size)
    h, w = size
    return pil_to_tensor(img if img.size == (w, h) else img.resize((w, h), Image.BILINEAR))


def _emotion(name: str, where: str) -> str:
    emotion = str(name).strip().lower()
    if emotion not in EMOTIONS:
        raise ReferencePoolError(f"{where}: unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}")
    return emotion


class ReferencePool:
    """Image paths per emotion; `draw` picks one uniformly with a generator and loads it."""

    def __init__(self, paths: Mapping[str, Sequence[str]], source: str):
        self.paths = {e: [str(p) for p in paths.get(e, ())] for e in EMOTIONS}
        self.source = source  # what the pool was read from, for messages and traces
        unknown = sorted(set(paths) - set(EMOTIONS))
        if unknown:
            raise ReferencePoolError(f"reference pool {source}: unknown emotion(s) {', '.join(map(repr, unknown))}; "
                                     f"expected {', '.join(EMOTIONS)}")

    @classmethod
    def open(cls, path: str | Path, split: str = DEFAULT_SPLIT, what: str = "the reference pool") -> "ReferencePool":
        """An EmoSet folder (only `split`'s images; "all" for every image) or a JSON file; `what` names
        the pool in the error when `path` does not exist."""
        path = Path(path)
        if not path.exists():
            raise ReferencePoolError(f"{missing_path(path, what)}; pass an EmoSet folder or a JSON file "
                                     f"{{emotion: [image paths]}}")
        if path.is_dir():
            return cls.from_emoset(path, split)
        return cls.from_json(path)

    @classmethod
    def from_emoset(cls, root: str | Path, split: str = DEFAULT_SPLIT) -> "ReferencePool":
        if split not in POOL_SPLITS:
            raise ReferencePoolError(f"reference pool split {split!r}: choose one of {', '.join(POOL_SPLITS)}")
        root = Path(root)
        try:
            images = list_images(root)
        except SplitError as exc:
            raise ReferencePoolError(f"reference pool: {exc}") from None
        if split != "all" and has_split_lists(images):
            images = [img for img in images if img.split == split]
            source = f"{root} ({split} split)"
        else:
            source = f"{root} ({'all splits' if split == 'all' else 'no split lists: every image'})"
        paths: dict[str, list[str]] = {}
        for img in images:
            paths.setdefault(img.emotion, []).append(str(root / img.path))
        return cls(paths, source)

    @classmethod
    def from_json(cls, path: str | Path) -> "ReferencePool":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReferencePoolError(f"reference pool {path}: cannot read it as JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(p, str) for p in v)
                                                 for v in data.values()):
            raise ReferencePoolError(f"reference pool {path}: expected {{\"<emotion>\": [\"image path\", ...]}}")
        paths: dict[str, list[str]] = {}
        for name, files in data.items():
            paths.setdefault(_emotion(name, f"reference pool {path}"), []).extend(
                str(path.parent / f) for f in files)  # an absolute f stays as it is
        return cls(paths, str(path))

    def counts(self) -> dict[str, int]:
        return {e: len(p) for e, p in self.paths.items()}

    def _load(self, path: str, size: Size) -> torch.Tensor:
        try:
            return _resize(open_image(path), size)
        except ImageLoadError as exc:
            raise ImageLoadError(f"reference pool {self.source}: {exc}") from None

    def draw(self, emotion: str, generator: torch.Generator, size: Size = None) -> tuple[torch.Tensor, str]:
        """(image (3, H, W) in [0, 1] resized to `size`, its path): one of `emotion`'s images, uniformly."""
        emotion = _emotion(emotion, f"reference pool {self.source}")
        paths = self.paths[emotion]
        if not paths:
            have = ", ".join(e for e, p in self.paths.items() if p) or "none"
            raise ReferencePoolError(f"reference pool {self.source} has no images of {emotion} (emotions with "
                                     f"images: {have}); add some, or choose another pool or split")
        index = int(torch.randint(len(paths), (1,), generator=generator, device=generator.device))
        return self._load(paths[index], size), paths[index]

    def draw_for(self, target: torch.Tensor, generator: torch.Generator,
                 size: Size = None) -> tuple[torch.Tensor, str, str]:
        """`draw` for a target vector (8,): its largest weight names the emotion (mixtures too);
        returns (image, path, emotion)."""
        emotion = EMOTIONS[int(target.argmax())]
        image, path = self.draw(emotion, generator, size)
        return image, path, emotion


class InMemoryReferencePool(ReferencePool):
    """A pool of images held in memory under made-up names (no files)."""

    def __init__(self, images: Mapping[str, Mapping[str, np.ndarray]], source: str):
        super().__init__({e: list(named) for e, named in images.items()}, source)
        self.images = {name: img for named in images.values() for name, img in named.items()}

    def _load(self, path: str, size: Size) -> torch.Tensor:
        return _resize(Image.fromarray(self.images[path]), size)


def toy_reference_pool(per_class: int = 3, image_size: int = 128, seed: int = 0,
                       photos: Optional[Sequence[str]] = None) -> InMemoryReferencePool:
    """Seeded toy references: crops of scikit-image's bundled photos in each emotion's toy style
    (:func:`emoeditor.data.toy.emotion_edit`, as the toy EmoSet), named ``toy/<emotion>_<k>``."""
    rng = np.random.default_rng(seed)
    sources = [load_toy_photo(name) for name in (photos or TOY_PHOTOS[:8])]
    images: dict[str, dict[str, np.ndarray]] = {}
    for emotion in EMOTIONS:
        for k in range(per_class):
            photo = sources[int(rng.integers(len(sources)))]
            styled = emotion_edit(random_crop(photo, image_size, rng), emotion, rng.uniform(0.9, 1.3))
            images.setdefault(emotion, {})[f"toy/{emotion}_{k}"] = np.clip(styled * 255 + 0.5, 0, 255).astype(np.uint8)
    return InMemoryReferencePool(images, f"toy references (seed {seed})")


def method_pool(method: str, pool: Optional[str], split: str = DEFAULT_SPLIT, tiny: bool = False) -> ReferencePool:
    """A reference-based method's pool: its `pool` option, else the toy pool under ``weights=tiny``."""
    if pool:
        return ReferencePool.open(pool, split, what=f"the reference pool of {method} (option pool=)")
    if tiny:
        return toy_reference_pool()
    raise ReferencePoolError(f"{method} needs reference images of each target emotion: pass {method}:pool=PATH (an "
                             f"EmoSet folder, of which the {split} split is used, or a JSON file {{emotion: [image "
                             f"paths]}}), or {method}:weights=tiny for toy references")
