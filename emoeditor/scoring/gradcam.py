"""Grad-CAM of the emotion predictor P: where P finds the emotion in an image (paper Sec. 4).

ENRD and ESMI split an image into an emotion region (CAM > 0.5) and an emotion-neutral region
from these maps. We use pytorch-grad-cam in its context-manager form so its forward hooks on
``layer4[-1]`` are removed after every call, however often the metrics run.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emoeditor.constants import CAM_THRESHOLD
from emoeditor.models.predictor import EmotionPredictor


def target_layer(predictor: EmotionPredictor | torch.nn.Module) -> torch.nn.Module:
    """The last block of ResNet18's layer4, the layer the official metric_ESMI.py explains."""
    net = predictor.net if isinstance(predictor, EmotionPredictor) else predictor
    return net.layer4[-1]


def emotion_cam(predictor: EmotionPredictor | torch.nn.Module, images01: torch.Tensor,
                target_classes: Optional[Sequence[int] | torch.Tensor] = None) -> torch.Tensor:
    """Grad-CAM maps (B, H, W) in [0, 1] at the input's resolution, each min-max scaled per image.

    ``images01`` is (B, 3, H, W) in [0, 1]; the predictor resizes/normalises internally, and
    pytorch-grad-cam upsamples the layer4 map back to (H, W) with cv2 bilinear. With
    ``target_classes=None`` each map explains P's top class (official metric_ESMI.py, whose
    call without ``targets`` meant exactly that in the grad-cam release it used); otherwise
    the given class per image (ClassifierOutputTarget).
    """
    if images01.ndim != 4 or images01.shape[1] != 3:
        raise ValueError(f"emotion_cam expects (B, 3, H, W) images, got {tuple(images01.shape)}")
    targets = None
    if target_classes is not None:
        classes = torch.as_tensor(target_classes).flatten().tolist()
        if len(classes) != images01.shape[0]:
            raise ValueError(f"{len(classes)} target classes for {images01.shape[0]} images")
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
    param = next(predictor.parameters())
    was_training = predictor.training
    cams: Optional[np.ndarray] = None
    # Callers often evaluate under no_grad / inference_mode; Grad-CAM needs autograd regardless.
    with torch.inference_mode(False), torch.enable_grad():
        # P is usually frozen (requires_grad False); a grad-requiring input makes layer4's output
        # carry a gradient so the CAM can be computed without unfreezing the weights.
        x = images01.detach().to(device=param.device, dtype=param.dtype).clone().requires_grad_(True)
        with GradCAM(model=predictor, target_layers=[target_layer(predictor)]) as cam:
            cams = cam(input_tensor=x, targets=targets)
    predictor.train(was_training)
    if cams is None:  # GradCAM.__exit__ swallows IndexError; do not let it pass silently
        raise RuntimeError("Grad-CAM failed (pytorch-grad-cam suppressed an IndexError); check the predictor")
    return torch.from_numpy(np.ascontiguousarray(cams)).to(images01.device)


def emotion_region(cams: torch.Tensor, threshold: float = CAM_THRESHOLD) -> torch.Tensor:
    """Binary emotion region, ``cam > threshold`` (official metric_ESMI.py); its complement is
    the emotion-neutral region that ENRD measures (paper: "binarise at 0.5 ... valued at 0")."""
    return cams > threshold
