"""Reading and writing images, robust to the odd files users have.

Everything inside the package works on float tensors (3, H, W) or (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from emoeditor.errors import ImageLoadError

MIN_SIDE = 32
MAX_PIXELS = 8192 * 8192
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (CMYK, 16-bit, greyscale, palette, alpha) to 8-bit RGB; alpha over white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = (arr - arr.min()) / max(arr.max() - arr.min(), 1e-12)
        img = Image.fromarray((arr * 255 + 0.5).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, or raise ImageLoadError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageLoadError(
                    f"{path}: {w}x{h} is larger than {int(MAX_PIXELS ** 0.5)}^2 pixels; downscale it first")
            img.load()
            rgb = to_rgb(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file PIL can read "
                             f"(supported: {', '.join(IMAGE_EXTENSIONS)})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({exc}); re-export or remove it") from None
    if min(rgb.size) < MIN_SIDE:
        raise ImageLoadError(f"{path}: {rgb.size[0]}x{rgb.size[1]} is too small; need at least {MIN_SIDE}px per side")
    return rgb


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def load_image(path: str | Path, size: Optional[int] = None) -> torch.Tensor:
    """(3, H, W) float in [0, 1]; resized to size x size with bilinear (torchvision Resize) if given."""
    img = open_image(path)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return pil_to_tensor(img)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[0, 1] (3, H, W) or (B, 3, H, W) to uint8 HWC / BHWC, rounding like the official code (x*255 then truncate)."""
    arr = images.detach().float().mul(255).clamp(0, 255).to(torch.uint8).cpu()
    return arr.permute(1, 2, 0).numpy() if arr.ndim == 3 else arr.permute(0, 2, 3, 1).numpy()


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path


def list_images(spec: str | Path) -> list[Path]:
    """A file, a folder (non-recursive, sorted) or a glob pattern to a sorted list of paths."""
    p = Path(spec)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
    if p.exists():
        return [p]
    matches = sorted(Path(m) for m in glob.glob(str(spec)) if Path(m).is_file())
    if not matches:
        raise ImageLoadError(f"{spec}: no such file, folder or matching glob")
    return matches
