"""SSIM to the source exactly as the official ``utils.cal_ssim``, on the CPU and batched on the GPU.

The official critic compares uint8 RGB images (x*255, truncated), converts them to grey with
OpenCV's RGB2GRAY, and calls scikit-image's ``structural_similarity`` with ``win_size=51``
(uniform window, sample covariance, data range 255 from the uint8 dtype, mean over the
valid region). `ssim_reference` is that call; `ssim_torch` computes the same quantity for a
batch on any device (only the uint8 grey conversion runs on the CPU, with OpenCV itself).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from emoeditor.constants import SSIM_WIN_SIZE
from emoeditor.imageio import to_uint8

SSIM_BACKENDS = ("torch", "skimage")
_K1, _K2 = 0.01, 0.03
_DATA_RANGE = 255.0


def grey_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB to grey with OpenCV (the official conversion)."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def ssim_reference(a: np.ndarray, b: np.ndarray, win_size: int = SSIM_WIN_SIZE) -> float:
    """The official ``cal_ssim``: uint8 RGB (H, W, 3) or grey (H, W) arrays."""
    from skimage.metrics import structural_similarity

    if a.ndim == 3 and a.shape[2] == 3:
        a, b = grey_uint8(a), grey_uint8(b)
    return float(structural_similarity(a.astype(np.uint8), b.astype(np.uint8), win_size=win_size))


def ssim_reference_batch(sources: torch.Tensor, images: torch.Tensor, win_size: int = SSIM_WIN_SIZE) -> torch.Tensor:
    """Reference SSIM for [0, 1] batches (B, 3, H, W): the CPU fallback."""
    a, b = to_uint8(sources), to_uint8(images)
    return torch.tensor([ssim_reference(x, y, win_size) for x, y in zip(a, b)], dtype=torch.float64)


def grey_batch(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] (B, 3, H, W) to (B, 1, H, W) uint8 grey on the same device, exactly as the official code.

    Quantised like the official ``x*255`` (truncated), then converted by OpenCV itself on the
    CPU: its fixed-point RGB2GRAY rounding differs between versions and SIMD paths, so no
    formula on the device matches every build, and the uint8 round trip is small.
    """
    b, _, h, w = images.shape
    grey = grey_uint8(to_uint8(images).reshape(b * h, w, 3))  # one call for the whole batch
    return torch.from_numpy(grey.reshape(b, 1, h, w)).to(images.device)


def _box(x: torch.Tensor, win: int) -> torch.Tensor:
    # separable mean over win x win, valid region only (= skimage's filter cropped by (win-1)//2)
    x = F.avg_pool2d(x, (win, 1), stride=1)
    return F.avg_pool2d(x, (1, win), stride=1)


def ssim_torch(sources: torch.Tensor, images: torch.Tensor, win_size: int = SSIM_WIN_SIZE,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Batched official SSIM of [0, 1] images (B, 3, H, W) against their sources; returns (B,) float64.

    float64 by default because the local variances E[x^2] - E[x]^2 of 0..255 values cancel badly
    in float32; the maps are small (one grey channel), so this costs little even on a GPU.
    """
    if sources.shape != images.shape:
        raise ValueError(f"SSIM needs equal shapes, got {tuple(sources.shape)} and {tuple(images.shape)}")
    if min(sources.shape[-2:]) < win_size:
        raise ValueError(f"SSIM window {win_size} is larger than the {tuple(sources.shape[-2:])} images")
    x = grey_batch(sources).to(dtype)
    y = grey_batch(images.to(sources.device)).to(dtype)
    ux, uy = _box(x, win_size), _box(y, win_size)
    uxx, uyy, uxy = _box(x * x, win_size), _box(y * y, win_size), _box(x * y, win_size)
    n = win_size * win_size
    cov_norm = n / (n - 1)  # skimage: use_sample_covariance=True
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (_K1 * _DATA_RANGE) ** 2, (_K2 * _DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).to(torch.float64)


def batch_ssim(sources: torch.Tensor, images: torch.Tensor, backend: str = "torch",
               win_size: int = SSIM_WIN_SIZE) -> torch.Tensor:
    """(B,) SSIM on the chosen backend; 'skimage' is the reference and the CPU fallback."""
    if backend == "torch":
        return ssim_torch(sources, images, win_size).cpu()
    if backend == "skimage":
        return ssim_reference_batch(sources, images, win_size)
    raise ValueError(f"unknown SSIM backend {backend!r}; choose one of {SSIM_BACKENDS}")
