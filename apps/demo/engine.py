"""The demo's edits on the library's APIs, with no web framework: weights loaded once, one critic-loop
edit per request.

Every user-facing check is the library's own (`parse_target`, `open_image`, test.py's path checks),
so the page shows the messages test.py prints. Each request builds its own light `EmoEditorEditor`
around the shared pipeline and P (the pipeline never mutates its scheduler), so concurrent requests
never see each other's settings.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from emoeditor.cli.edit import (
    check_device,
    check_model_paths,
    model_image_size,
    resolve_device,
    resolve_dtype,
    strip_labels,
)
from emoeditor.config import load_preset
from emoeditor.constants import EMOTIONS, IMAGE_SIZE, NUM_LOOP
from emoeditor.data.toy import load_toy_photo
from emoeditor.editing.critic import CRITICS, SOURCE_INDEX, CriticConfig
from emoeditor.editing.intensity import INTENSITIES, apply_intensity
from emoeditor.editing.loop import CriticLoop
from emoeditor.editors.emoeditor import EmoEditorEditor
from emoeditor.emotions import parse_target, target_label
from emoeditor.errors import EmoEditorError
from emoeditor.imageio import open_image, to_square, to_uint8
from emoeditor.models.tiny import TINY_IMAGE_SIZE
from emoeditor.valence_arousal import parse_va, va_path_figure, va_to_mixture

logger = logging.getLogger("apps.demo")

REPO = Path(__file__).resolve().parents[2]
MINIATURE_MODEL = REPO / "mini_world" / "model"
MINIATURE_PREDICTOR = REPO / "mini_world" / "emo_predictor"
MINIATURE_PRESET = REPO / "configs" / "infer_tiny.yaml"  # the miniature's inference settings (steps, loop)
BUNDLED_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")  # colour photos inside scikit-image's wheel
TARGET_MODES = ("emotion", "mixture", "valence-arousal")
NO_INTENSITY = "off"  # no preset: guidance 1 and the critic policy's own thresholds (test.py without --intensity)
INTENSITY_CHOICES = (*INTENSITIES, NO_INTENSITY)


@dataclass(frozen=True)
class Weights:
    """Which model and predictor the demo edits with, and whether they are the shipped miniature."""
    model_dir: Path
    predictor_path: Path

    @property
    def miniature(self) -> bool:
        return (self.model_dir.resolve() == MINIATURE_MODEL.resolve()
                and self.predictor_path.resolve() == MINIATURE_PREDICTOR.resolve())

    def describe(self) -> str:
        """The page's banner (Markdown): a miniature must never pass for the paper's model."""
        if self.miniature:
            return ("**Miniature model, not the paper's.** This demo runs on the shipped miniature world "
                    "(`mini_world/model` + `mini_world/emo_predictor`): tiny models trained on eight synthetic "
                    "emotion *styles* (dark cold blue for fear, golden light for contentment, ...) at 64 px. "
                    "Its edits move a photo toward the target style, not the paper's results. Start the demo with "
                    "`--model_dir` and `--predictor_path` to use real weights.")
        lines = [f"**Weights**: model `{self.model_dir}`, emotion predictor P `{self.predictor_path}`."]
        for path, root in ((self.model_dir, MINIATURE_MODEL), (self.predictor_path, MINIATURE_PREDICTOR)):
            if path.resolve() == root.resolve():
                lines.append(f"`{path}` is the shipped miniature (trained on synthetic styles), not a real model.")
        return " ".join(lines)


def resolve_weights(model_dir: Optional[str | Path] = None, predictor_path: Optional[str | Path] = None) -> Weights:
    """The miniature where nothing is given; test.py's checks (and messages) for given paths."""
    weights = Weights(Path(model_dir or MINIATURE_MODEL), Path(predictor_path or MINIATURE_PREDICTOR))
    check_model_paths(SimpleNamespace(model_dir=weights.model_dir, predictor_path=weights.predictor_path))
    return weights


@dataclass
class DemoEdit:
    """One request's outcome: the source as the model saw it, the returned image, every iteration, the trace."""
    source: torch.Tensor  # (3, S, S) in [0, 1]
    image: torch.Tensor  # the returned image
    candidates: list[torch.Tensor]  # every iteration's image
    trace: dict

    @property
    def source_probs(self) -> list[float]:
        return self.trace["source_probs"]

    @property
    def returned_probs(self) -> list[float]:
        returned = self.trace["returned"]
        return self.source_probs if returned == SOURCE_INDEX else self.trace["iterations"][returned]["probs"]

    def result_image(self) -> np.ndarray:
        return to_uint8(self.image)

    def strip(self) -> list[tuple[np.ndarray, str]]:
        """Source, every critic iteration and the returned image, captioned as test.py's strips are."""
        tiles = [self.source, *self.candidates, self.image]
        return [(to_uint8(tile), " · ".join(lines)) for tile, lines in zip(tiles, strip_labels(self.trace))]

    def va_figure(self):
        """The critic's path in the valence-arousal plane (the library's plot, from the trace)."""
        return va_path_figure(self.trace)

    def summary(self) -> str:
        """What the critic decided, and with which controls, in Markdown."""
        tr = self.trace
        returned = "the source" if tr["returned"] == SOURCE_INDEX else f"iteration {tr['returned'] + 1}"
        probs, th = self.returned_probs, tr["thresholds"]
        top = int(np.argmax(probs))
        return (f"**Target** {tr['target_label']} · **returned** {returned} of {len(tr['iterations'])} "
                f"({'accepted' if tr['accepted'] else 'not accepted'}) · **SSIM to the source** "
                f"{tr['returned_ssim']:.3f} · **P's confidence in the target** "
                f"{tr['returned_target_confidence']:.3f} (top class {EMOTIONS[top]}, {probs[top]:.3f})\n\n"
                f"Critic `{tr['critic']}`: {tr['reason']}\n\n"
                f"Intensity {tr['intensity']}: emotion guidance {tr['edit']['emotion_guidance']:g}, "
                f"{th['ssim_low']:g} < SSIM < {th['ssim_high']:g}, confidence > {th['confidence']:g}")


def build_target(mode: str, emotion: Optional[str] = None, weights: Sequence[float] = (),
                 va: Optional[str] = None) -> tuple[torch.Tensor, Optional[tuple[float, float]]]:
    """The 8-d target of the page's controls, parsed (and rejected) by the library: `parse_target`, or
    `parse_va` + `va_to_mixture` for a point of the valence-arousal plane ("V,A"); and that point."""
    if mode == "emotion":
        return parse_target(emotion or ""), None
    if mode == "mixture":
        return parse_target([float(w) for w in weights]), None
    if mode == "valence-arousal":
        point = parse_va(va or "")
        return va_to_mixture(*point), point
    raise EmoEditorError(f"unknown target mode {mode!r}; choose one of {', '.join(TARGET_MODES)}")


def bundled_photo(name: str) -> Image.Image:
    if name not in BUNDLED_PHOTOS:
        raise EmoEditorError(f"unknown bundled photo {name!r}; choose one of {', '.join(BUNDLED_PHOTOS)}")
    return Image.fromarray(load_toy_photo(name))


def load_photo(upload: Optional[str | Path], bundled: Optional[str]) -> Image.Image:
    """The uploaded file (read by the library's `open_image`, with its messages), else the bundled photo."""
    if upload:
        return open_image(upload)
    if bundled:
        return bundled_photo(bundled)
    raise EmoEditorError("no photo: upload one or pick a bundled photo")


class DemoEngine:
    """The loaded weights and the edit settings every request shares."""

    def __init__(self, editor: EmoEditorEditor, weights: Weights, image_size: int, num_loop: int = NUM_LOOP):
        self.editor = editor
        self.weights = weights
        self.image_size = image_size
        self.num_loop = num_loop

    @classmethod
    def load(cls, weights: Weights, device: str = "auto", image_size: Optional[int] = None) -> "DemoEngine":
        """Load once; the miniature edits with configs/infer_tiny.yaml's steps and loop at its 64 px."""
        check_device(device)
        torch_device = resolve_device(device)
        kwargs, num_loop = {}, NUM_LOOP
        if weights.miniature:
            preset = load_preset(MINIATURE_PRESET)
            kwargs["num_inference_steps"] = int(preset["num_inference_steps"])
            num_loop = int(preset["num_loop"])
        trained, _ = model_image_size(weights.model_dir)
        size = image_size or trained or (TINY_IMAGE_SIZE if weights.miniature else IMAGE_SIZE)
        editor = EmoEditorEditor.from_pretrained(weights.model_dir, weights.predictor_path, device=torch_device,
                                                 torch_dtype=resolve_dtype("auto", torch_device), **kwargs)
        logger.info("demo weights: %s, %s on %s at %d px", weights.model_dir, weights.predictor_path, torch_device,
                    size)
        return cls(editor, weights, size, num_loop)

    def edit(self, photo: Image.Image, target: torch.Tensor, seed: int = 0, critic: str = "paper",
             num_loop: Optional[int] = None, intensity: str = "medium", target_va: Optional[Sequence[float]] = None,
             on_step: Optional[Callable[[int], None]] = None) -> DemoEdit:
        """One job of the critic loop; `on_step(k)` after each of its iterations (progress).

        `intensity` sets the emotion guidance and the critic's thresholds as test.py's --intensity does
        (NO_INTENSITY: guidance 1 and the policy's own thresholds); `target_va` is only recorded.
        """
        if critic not in CRITICS:
            raise EmoEditorError(f"unknown critic {critic!r}; choose one of {', '.join(CRITICS)}")
        num_loop = int(num_loop or self.num_loop)
        if num_loop < 1:
            raise EmoEditorError(f"the number of critic iterations must be at least 1, got {num_loop}")
        settings = apply_intensity(None if intensity == NO_INTENSITY else intensity, {})
        guidance = settings.pop("emotion_guidance", 1.0)
        editor = copy.copy(self.editor)  # shares the pipeline and P; this request's guidance is its own
        editor.emotion_guidance = guidance
        done = iter(range(1, num_loop + 1))  # one job: every batched step is its next iteration
        loop = CriticLoop(editor, editor.predictor.probs, CriticConfig(critic, num_loop=num_loop, **settings),
                          batch_size=1, return_candidates=True,
                          on_step=None if on_step is None else lambda n: on_step(next(done)))
        source = to_square(photo, self.image_size)
        generator = torch.Generator(editor.device).manual_seed(int(seed))
        result = loop.edit(source[None], target[None].float(), [generator])
        trace = result.traces[0]
        trace.update(target_label=target_label(target), seed=int(seed), intensity=intensity)
        if target_va is not None:
            trace["target_va"] = [float(v) for v in target_va]
        return DemoEdit(source, result.images[0].cpu(), result.candidates[0], trace)
