"""The emotion predictor P: torchvision ResNet18 with an 8-way head (paper Sec. 3.3).

On disk a predictor is either the official ``emo_predictor.pt`` (a plain torchvision
state dict, loaded with ``weights_only=True``) or a folder holding ``model.safetensors`` and
``config.json``. The config records the input normalisation: the official predictor takes
plain [0, 1] RGB at 224x224 with no mean/std normalisation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from emoeditor.constants import IMAGE_SIZE, NUM_EMOTIONS, OFFICIAL_DOWNLOADS
from emoeditor.errors import CheckpointMismatchError, MissingWeightsError
from emoeditor.fileio import atomic_write, atomic_write_text, missing_path
from emoeditor.models.weights import load_state_dict

logger = logging.getLogger(__name__)

PREDICTOR_CONFIG = "config.json"
PREDICTOR_WEIGHTS = "model.safetensors"
PREDICTOR_PT = "emo_predictor.pt"


def build_resnet18(num_classes: int = NUM_EMOTIONS) -> nn.Module:
    """A torchvision resnet18 whose fc is 512 -> num_classes (official utils.load_emo_predictor)."""
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.fc = nn.Linear(512, num_classes)
    return model


class EmotionPredictor(nn.Module):
    """Wraps the ResNet18 with its input convention so callers always pass [0, 1] images.

    Input (B, 3, H, W) in [0, 1]; images are resized to ``image_size`` when they differ, then
    normalised with ``mean``/``std`` if the config names them (official: none).
    """

    def __init__(self, net: nn.Module, image_size: int = IMAGE_SIZE,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None):
        super().__init__()
        self.net = net
        self.image_size = image_size
        self.normalize = mean is not None
        mean, std = [0.0] * 3 if mean is None else mean, [1.0] * 3 if std is None else std
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def config(self) -> dict:
        return {
            "architecture": "resnet18",
            "num_classes": self.net.fc.out_features,
            "image_size": self.image_size,
            "mean": self.mean.flatten().tolist() if self.normalize else None,
            "std": self.std.flatten().tolist() if self.normalize else None,
        }

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(dtype=self.mean.dtype)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        if self.normalize:
            images = (images - self.mean) / self.std
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for [0, 1] images."""
        return self.net(self.preprocess(images))

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(images).float(), dim=-1)


def save_predictor(predictor: EmotionPredictor, folder: str | Path, official_pt: bool = True,
                   extra: Optional[dict] = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ an official-layout ``emo_predictor.pt``).

    ``extra`` keys (e.g. the label order and training settings) are added to config.json for
    readers; loading only uses the input-convention keys. Each file is written atomically: a save
    that dies midway leaves complete files (the previous ones where it did not get to them).
    """
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in predictor.net.state_dict().items()}
    atomic_write(folder / PREDICTOR_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(folder / PREDICTOR_CONFIG, json.dumps({**(extra or {}), **predictor.config}, indent=2))
    if official_pt:
        atomic_write(folder / PREDICTOR_PT, lambda tmp: torch.save(state, tmp))
    return folder


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointMismatchError(f"{path}: not valid JSON ({exc}); it records the predictor's input "
                                      f"convention, re-save the predictor or delete the file for the official "
                                      f"one") from None
    if not isinstance(config, dict):
        raise CheckpointMismatchError(f"{path}: expected a JSON object with image_size/mean/std")
    return config


def load_predictor(path: str | Path, device: str | torch.device = "cpu") -> EmotionPredictor:
    """Load from a predictor folder, a ``.safetensors`` file or the official ``.pt`` state dict."""
    path = Path(path)
    config: dict = {}
    if not path.exists():
        raise MissingWeightsError(
            f"{missing_path(path, 'emotion predictor')}. Pass a predictor folder (model.safetensors + "
            f"config.json; `make demo` writes a tiny one to runs/demo/emo_predictor) or the official "
            f"emo_predictor.pt (download: {OFFICIAL_DOWNLOADS['emo_predictor']}, or "
            f"`python scripts/download_weights.py`), or train one with scripts/train_predictor.py")
    if path.is_dir():
        if (path / PREDICTOR_CONFIG).exists():
            config = _read_config(path / PREDICTOR_CONFIG)
        weights = path / PREDICTOR_WEIGHTS
        if not weights.exists():
            weights = path / PREDICTOR_PT
    else:
        weights = path
        if (path.parent / PREDICTOR_CONFIG).exists():
            config = _read_config(path.parent / PREDICTOR_CONFIG)
    if not weights.exists():
        raise MissingWeightsError(
            f"{path}/ holds no emotion predictor ({PREDICTOR_WEIGHTS} or {PREDICTOR_PT}). Put the official "
            f"emo_predictor.pt in "
            f"emo_predictor/ (download: {OFFICIAL_DOWNLOADS['emo_predictor']}), or train one with "
            f"scripts/train_predictor.py")
    if weights.suffix == ".safetensors":
        try:
            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error type on a truncated/foreign file
            raise CheckpointMismatchError(f"{weights} is not a readable safetensors file ({exc}); re-save or "
                                          f"retrain it with scripts/train_predictor.py") from exc
    else:
        state = load_state_dict(weights, "emotion predictor", "emo_predictor")
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else NUM_EMOTIONS
    net = build_resnet18(num_classes)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:  # missing/unexpected keys or shapes: not a torchvision ResNet18
        raise CheckpointMismatchError(f"{weights} is not a ResNet18 emotion predictor state dict in the official "
                                      f"key layout (conv1.*, layer1-4.*, fc.*): {exc}") from None
    predictor = EmotionPredictor(net, image_size=config.get("image_size", IMAGE_SIZE),
                                 mean=config.get("mean"), std=config.get("std"))
    if not config and weights.suffix != ".pt":
        logger.warning("%s: no %s; assuming the official input convention ([0, 1] RGB, no normalisation, %dpx)",
                       path, PREDICTOR_CONFIG, IMAGE_SIZE)
    return predictor.to(device).eval().requires_grad_(False)
