"""The one interface every editing method implements (EmoEditor and every baseline).

The evaluation harness knows nothing else: a batch of [0, 1] images (B, 3, H, W), a batch of
8-d target vectors (B, 8), and one torch.Generator per image (so a job's result does not
depend on what else is in its batch) go in; a batch of [0, 1] images comes out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch


@dataclass
class EditResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    # Per image, optional method-specific record (EmoEditor: the critic loop's iterations).
    traces: Optional[list[dict]] = None
    extras: dict = field(default_factory=dict)


class Editor(ABC):
    """Base class of all methods. Subclasses set `name` and implement `edit`."""

    name: str = "editor"

    @abstractmethod
    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        """Edit `images` toward `targets`, drawing randomness only from `generators` (one per image)."""

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generators: Sequence[torch.Generator] | torch.Generator) -> EditResult:
        if isinstance(generators, torch.Generator):
            generators = [generators] * images.shape[0] if images.shape[0] == 1 else None
            if generators is None:
                raise ValueError("pass one torch.Generator per image so results do not depend on batching")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: images must be (B, 3, H, W), got {tuple(images.shape)}")
        if targets.shape != (images.shape[0], 8):
            raise ValueError(f"{self.name}: targets must be (B, 8), got {tuple(targets.shape)}")
        if len(generators) != images.shape[0]:
            raise ValueError(f"{self.name}: {len(generators)} generators for {images.shape[0]} images")
        return self.edit(images, targets, generators)
