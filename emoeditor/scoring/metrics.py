"""The paper's five evaluation metrics (Sec. 4 and the official metric_ESMI.py), batched on tensors.

Per-sample functions take what each metric needs (probabilities, uint8 images, masks) so each
can be checked by hand; :func:`compute_all` is the one place that runs P and Grad-CAM once per
source and derives all five. Conventions shared by every image metric:

* Pixel scale: uint8 values 0..255 (the official ``cal_L1`` casts uint8 arrays to float64).
  [0, 1] tensors are turned into uint8 by rounding, the exact inverse of ToTensor's /255.
* Resolution: :func:`compute_all` resizes sources and outputs to 224x224 with PIL's default
  filter before anything else, as metric_ESMI.py does (paper: silent). ``size=None`` keeps the
  input resolution (sources and outputs must then match).
* Layout: images are (B, 3, H, W), masks (B, H, W).

Paper Table 1 reports EMR/ESR in %, ENRD/ESS as mean L1 on this 0..255 scale; the official
script prints ESMI x 100. :func:`summarize` gives those numbers.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from emoeditor.constants import (
    CAM_TARGETS,
    CAM_THRESHOLD,
    CANNY_THRESHOLDS,
    ENRD_REDUCTIONS,
    ESMI_ALPHA,
    IMAGE_SIZE,
    KL_EPS,
    NUM_EMOTIONS,
)
from emoeditor.scoring.gradcam import emotion_cam, emotion_region

# ---------------------------------------------------------------------------------------- inputs


def target_vectors(targets: torch.Tensor | Sequence[int], num_classes: int = NUM_EMOTIONS) -> torch.Tensor:
    """(B,) class indices or (B, 8) target vectors (one-hot or multi-emotion) to (B, 8) float64."""
    t = torch.as_tensor(targets)
    if t.ndim == 1:
        return torch.nn.functional.one_hot(t.long(), num_classes).double()
    if t.ndim != 2 or t.shape[1] != num_classes:
        raise ValueError(f"targets must be (B,) indices or (B, {num_classes}) vectors, got {tuple(t.shape)}")
    return t.double()


def images_to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] to uint8 by rounding, so uint8/255 -> here is lossless."""
    return images01.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def resize_uint8(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (B, 3, H, W) to size x size with ``PIL.Image.resize``'s default filter
    (bicubic), the call metric_ESMI.py makes; a same-size resize is the identity, as in PIL."""
    if images_u8.shape[-2:] == (size, size):
        return images_u8
    out = [np.array(Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).resize((size, size)))
           for img in images_u8]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images_u8.device)


# --------------------------------------------------------------------------- emotion metrics


def kl_divergence(targets: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """KL(target || probs) per sample in float64, with ``scipy.stats.entropy`` semantics (what the
    official code calls): both vectors are renormalised to sum 1, zero-target terms contribute 0,
    and a target class with zero probability gives inf."""
    t = target_vectors(targets, probs.shape[-1]).to(probs.device)
    p = probs.double()
    t = t / t.sum(-1, keepdim=True)
    p = p / p.sum(-1, keepdim=True)
    return (torch.xlogy(t, t) - torch.xlogy(t, p)).sum(-1)


def emr(probs_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Emotion Matching: is P's top class on the output a target emotion? (B,) bool.

    For a one-hot target that is "top class == target" (paper); for a multi-emotion target any
    emotion with non-zero target weight counts (the paper is silent on multi-emotion targets).
    Pixels: none here; compute_all feeds P the output resized to 224 (PIL default filter) as
    uint8/255 RGB, the official predictor input.
    """
    t = target_vectors(targets, probs_out.shape[-1]).to(probs_out.device)
    top = probs_out.argmax(-1)
    return t.gather(1, top[:, None]).squeeze(1) > 0


def esr(probs_src: torch.Tensor, probs_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Emotion Shift: is the output closer to the target than the source is? (B,) bool,
    ``KL(target || P(output)) < KL(target || P(source))`` (paper Sec. 4; strict). KL as
    :func:`kl_divergence`; P's inputs as in :func:`emr`."""
    return kl_divergence(targets, probs_out) < kl_divergence(targets, probs_src)


# ----------------------------------------------------------------------------- image metrics


def _l1(a_u8: torch.Tensor, b_u8: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean |a - b| over channels and pixels in float64, optionally after multiplying by a mask."""
    diff = (a_u8.double() - b_u8.double()).abs()
    if mask is not None:
        diff = diff * mask.to(diff.device, diff.dtype).unsqueeze(1)
    return diff.flatten(1).mean(1)


def enrd(src_u8: torch.Tensor, out_u8: torch.Tensor, neutral_mask: torch.Tensor,
         reduction: str = "image") -> torch.Tensor:
    """Emotion-Neutral Region Deviation: L1 between source and output on the neutral region. (B,) float64.

    Pixel scale 0..255, no resizing here (compute_all resizes to 224). ``neutral_mask`` is (B, H, W)
    bool, True where the source's binarised Grad-CAM is 0 (paper Sec. 4). The paper does not say
    how the L1 is averaged; ``reduction="image"`` (default) follows the official ``cal_L1`` on
    masked images as metric_ESMI.py uses it: mean of |src*m - out*m| over all pixels and channels.
    ``"region"`` averages over the neutral pixels only (0 when the region is empty).
    """
    if reduction not in ENRD_REDUCTIONS:
        raise ValueError(f"reduction must be one of {ENRD_REDUCTIONS}, got {reduction!r}")
    l1 = _l1(src_u8, out_u8, neutral_mask)
    if reduction == "region":
        area = neutral_mask.flatten(1).double().mean(1).to(l1.device)
        l1 = torch.where(area > 0, l1 / area.clamp_min(1e-12), torch.zeros_like(l1))
    return l1


def canny_edges(images_u8: torch.Tensor, thresholds: Sequence[float] = CANNY_THRESHOLDS,
                grayscale: bool = True) -> torch.Tensor:
    """OpenCV Canny edge maps (B, H, W) uint8 with values 0 / 255.

    ``grayscale=True`` converts RGB to grey first (cv2.COLOR_RGB2GRAY, as the official SSIM does);
    ``False`` hands the RGB image to cv2.Canny, which then uses the strongest channel gradient.
    """
    low, high = thresholds
    maps = []
    for img in images_u8.cpu():
        arr = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        if grayscale:
            arr = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
        maps.append(cv2.Canny(arr, low, high))
    return torch.from_numpy(np.stack(maps)).to(images_u8.device)


def ess(src_u8: torch.Tensor, out_u8: torch.Tensor, thresholds: Sequence[float] = CANNY_THRESHOLDS,
        grayscale: bool = True) -> torch.Tensor:
    """Edge Structure Similarity: mean L1 between Canny(200, 500) edge maps. (B,) float64.

    Edge maps are 0/255, so ESS = 255 x the fraction of pixels whose edge state differs (the
    paper's values, e.g. 16.27, are on this scale). No resizing here (compute_all resizes to
    224). The paper does not say whether Canny sees grey or colour; grey is the default.
    """
    a = canny_edges(src_u8, thresholds, grayscale)
    b = canny_edges(out_u8, thresholds, grayscale)
    return (a.double() - b.double()).abs().flatten(1).mean(1)


def esmi(kl_src: torch.Tensor, kl_out: torch.Tensor, src_u8: torch.Tensor, out_u8: torch.Tensor,
         emotion_mask: torch.Tensor, alpha: float = ESMI_ALPHA, eps: float = KL_EPS) -> dict[str, torch.Tensor]:
    """Emotion-Structure Match Index of the official metric_ESMI.py (not in the paper). (B,) float64 each.

    ``S_emo = max(0, KL_src - KL_out) / (KL_src + eps)``: how much of the source's distance to the
    target the edit removed. ``S_str = L1 inside the emotion region / L1 over the full image``
    (both as ``cal_L1``: mean over all pixels and channels, 0..255): high when the edit
    concentrates on the region P finds emotional. ``esmi = alpha*S_str + (1-alpha)*S_emo`` in
    [0, 1]; the script prints it x 100. ``emotion_mask`` is (B, H, W) bool, ``cam > 0.5``.
    Images are compared at their given size (compute_all resizes to 224 as the script does).
    """
    kl_src, kl_out = kl_src.double(), kl_out.double()
    s_emo = (kl_src - kl_out).clamp_min(0) / (kl_src + eps)
    l_emo = _l1(src_u8, out_u8, emotion_mask).to(s_emo.device)
    l_full = _l1(src_u8, out_u8).to(s_emo.device)
    s_str = l_emo / (l_full + eps)
    return {"esmi": alpha * s_str + (1 - alpha) * s_emo, "s_str": s_str, "s_emo": s_emo}


# ------------------------------------------------------------------------------- all at once


@torch.no_grad()
def _probs(predictor, images01: torch.Tensor) -> torch.Tensor:
    param = next(predictor.parameters())
    logits = predictor(images01.to(param.device, param.dtype))
    return torch.softmax(logits.float(), dim=-1)


def compute_all(predictor, sources01: torch.Tensor, outputs01: torch.Tensor, targets: torch.Tensor,
                size: Optional[int] = IMAGE_SIZE, cam_target: str = "predicted",
                cam_threshold: float = CAM_THRESHOLD, enrd_reduction: str = "image",
                canny_thresholds: Sequence[float] = CANNY_THRESHOLDS, canny_grayscale: bool = True,
                alpha: float = ESMI_ALPHA) -> dict[str, torch.Tensor]:
    """All five metrics for a batch of (source, output, target) triples; per-sample tensors on CPU.

    Sources and outputs are (B, 3, H, W) in [0, 1]; targets are (B,) indices or (B, 8) vectors.
    Both images go to uint8 and are resized to ``size`` (PIL default filter, metric_ESMI.py);
    P sees those uint8/255 images (no normalisation beyond the predictor's own config) and
    Grad-CAM runs once on the sources. ``cam_target="predicted"`` explains P's top class on the
    source (official); ``"target"`` explains the target emotion (its largest entry).

    Returns emr/esr (bool), enrd/ess/esmi/s_str/s_emo/kl_src/kl_out (float64), the probabilities
    probs_src/probs_out and the source CAMs (B, size, size).
    """
    if cam_target not in CAM_TARGETS:
        raise ValueError(f"cam_target must be one of {CAM_TARGETS}, got {cam_target!r}")
    if sources01.shape[0] != outputs01.shape[0]:
        raise ValueError(f"{sources01.shape[0]} sources but {outputs01.shape[0]} outputs")
    src_u8, out_u8 = images_to_uint8(sources01).cpu(), images_to_uint8(outputs01).cpu()
    if size is not None:
        src_u8, out_u8 = resize_uint8(src_u8, size), resize_uint8(out_u8, size)
    elif src_u8.shape != out_u8.shape:
        raise ValueError(f"sources {tuple(src_u8.shape)} and outputs {tuple(out_u8.shape)} differ; pass size=")
    t = target_vectors(targets)
    src01, out01 = src_u8.float() / 255, out_u8.float() / 255
    probs_src, probs_out = _probs(predictor, src01).cpu(), _probs(predictor, out01).cpu()
    cam_classes = None if cam_target == "predicted" else t.argmax(-1)
    cams = emotion_cam(predictor, src01.to(next(predictor.parameters()).device), cam_classes).cpu()
    region = emotion_region(cams, cam_threshold)
    kl_src, kl_out = kl_divergence(t, probs_src), kl_divergence(t, probs_out)
    result = {
        "emr": emr(probs_out, t),
        "esr": kl_out < kl_src,
        "enrd": enrd(src_u8, out_u8, ~region, enrd_reduction),
        "ess": ess(src_u8, out_u8, canny_thresholds, canny_grayscale),
        **esmi(kl_src, kl_out, src_u8, out_u8, region, alpha),
        "kl_src": kl_src, "kl_out": kl_out, "probs_src": probs_src, "probs_out": probs_out, "cams": cams,
    }
    return result


def summarize(per_sample: dict[str, torch.Tensor]) -> dict[str, float]:
    """Table-1 numbers from per-sample results: EMR/ESR in %, ENRD/ESS mean L1 (0..255), ESMI x 100."""
    out = {}
    for key, scale in (("emr", 100.0), ("esr", 100.0), ("enrd", 1.0), ("ess", 1.0), ("esmi", 100.0)):
        if key in per_sample and len(per_sample[key]):
            out[key] = float(per_sample[key].double().mean()) * scale
    return out
