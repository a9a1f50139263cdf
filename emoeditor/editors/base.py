"""The one interface every editing method implements (EmoEditor and every baseline).

The evaluation harness knows nothing else: a batch of [0, 1] images (B, 3, H, W), a batch of
8-d target vectors (B, 8), and one torch.Generator per image (so a job's result does not
depend on what else is in its batch) go in; a batch of [0, 1] images comes out.

A method implements `edit` (one edit of a batch). The iterative critic loop
(`emoeditor.editing.loop.CriticLoop`) wraps any method and repeats its edit through
`edit_step`, which also hands over what a repeated edit may need: the untouched sources (the
condition, when the input is an earlier output), P's probabilities the critic wants the emotion
direction taken from, and per-source state computed once by `prepare` (EmoEditor: the source's
condition latents). A method that needs none of it keeps the default `edit_step`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass
class EditResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    # Per image, a JSON-safe record of how it was made (the critic loop: every iteration, what was returned and why).
    traces: Optional[list[dict]] = None
    # Per image, every iteration's image (the critic loop with return_candidates=True).
    candidates: Optional[list[list[torch.Tensor]]] = None
    # Per image, the diffusion start timestep of the edit (diffusion methods; recorded in critic traces).
    start_timesteps: Optional[torch.Tensor] = None


@dataclass
class EditRequest:
    """One edit of a batch, as the critic loop asks for it (rows padded to the loop's batch size)."""
    inputs: torch.Tensor  # (B, 3, H, W) in [0, 1]: the images to edit (the source, or an earlier output)
    targets: torch.Tensor  # (B, 8)
    generators: Sequence[torch.Generator]  # one per row
    sources: Optional[torch.Tensor] = None  # the untouched sources; None: `inputs` are the sources
    reference_probs: Optional[torch.Tensor] = None  # (B, 8) P's probabilities a direction input subtracts
    prepared: Optional[torch.Tensor] = None  # rows of `prepare(sources)`

    @property
    def source_images(self) -> torch.Tensor:
        return self.inputs if self.sources is None else self.sources


class Editor(ABC):
    """Base class of all methods. Subclasses set `name` and implement `edit`."""

    name: str = "editor"

    @abstractmethod
    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        """Edit `images` toward `targets`, drawing randomness only from `generators` (one per image)."""

    def prepare(self, sources: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-source state a repeated edit reuses (computed once per job by the critic loop); None if none."""
        return None

    def describe(self, sources: torch.Tensor, targets: torch.Tensor) -> Optional[list[dict]]:
        """Per row, a JSON-safe record of what the edit uses (e.g. an instruction), which the critic loop
        adds to its traces; None if nothing beyond the loop's own record."""
        return None

    def edit_step(self, request: EditRequest) -> EditResult:
        """One edit inside the critic loop; by default the plain `edit` of the inputs."""
        return self.edit(request.inputs, request.targets, request.generators)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generators: Sequence[torch.Generator] | torch.Generator) -> EditResult:
        if isinstance(generators, torch.Generator):
            if images.shape[0] != 1:
                raise ValueError("pass one torch.Generator per image so results do not depend on batching")
            generators = [generators]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: images must be (B, 3, H, W), got {tuple(images.shape)}")
        if targets.shape != (images.shape[0], 8):
            raise ValueError(f"{self.name}: targets must be (B, 8), got {tuple(targets.shape)}")
        if len(generators) != images.shape[0]:
            raise ValueError(f"{self.name}: {len(generators)} generators for {images.shape[0]} images")
        return self.edit(images, targets, generators)
