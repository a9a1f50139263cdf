"""Reading and writing images, robust to the odd files users have.

Everything inside the package works on float tensors (3, H, W) or (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import glob
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from emoeditor.errors import ImageLoadError

MIN_SIDE = 32
MAX_PIXELS = 8192 * 8192
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# what an edit may be saved as: formats that hold 8-bit RGB as it is (GIF would quantise to 256 colours)
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                  ".tiff": "TIFF"}


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


def _too_large(path: Path, size: str) -> ImageLoadError:
    return ImageLoadError(f"{path}: {size} is larger than {int(MAX_PIXELS ** 0.5)}^2 pixels; "
                          f"downscale it first")


def _open_checked(fh: BinaryIO, path: Path) -> Image.Image:
    """Image.open with PIL's decompression-bomb warning turned into our own size rule, so it never leaks."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(fh)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))  # PIL: "Image size (N pixels) exceeds limit ..."
            raise _too_large(path, f"{found.group(1)} pixels" if found else "the image") from None


def open_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, or raise ImageLoadError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image")
    try:
        with open(path, "rb") as fh, _open_checked(fh, path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise _too_large(path, f"{w}x{h}")
            img.load()
            rgb = to_rgb(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file PIL can read "
                             f"(supported: {', '.join(IMAGE_EXTENSIONS)})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({exc}); re-export or remove it") from None
    if min(rgb.size) < MIN_SIDE:
        raise ImageLoadError(f"{path}: {rgb.size[0]}x{rgb.size[1]} is too small; need at least {MIN_SIDE}px per side")
    return rgb


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def resize_square(img: Image.Image, size: Optional[int] = None) -> Image.Image:
    """`img` resized to size x size with bilinear (torchvision Resize) if given: model inputs, EmoPair files."""
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return img


def to_square(img: Image.Image, size: Optional[int] = None) -> torch.Tensor:
    """(3, H, W) float in [0, 1]; resized to size x size with bilinear (torchvision Resize) if given."""
    return pil_to_tensor(resize_square(img, size))


def load_image(path: str | Path, size: Optional[int] = None) -> torch.Tensor:
    """(3, H, W) float in [0, 1]; resized to size x size with bilinear (torchvision Resize) if given."""
    return to_square(open_image(path), size)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[0, 1] (3, H, W) or (B, 3, H, W) to uint8 HWC / BHWC, rounding like the official code (x*255 then truncate)."""
    arr = images.detach().float().mul(255).clamp(0, 255).to(torch.uint8).cpu()
    return arr.permute(1, 2, 0).numpy() if arr.ndim == 3 else arr.permute(0, 2, 3, 1).numpy()


def output_format(path: str | Path) -> Optional[str]:
    """The PIL format an edit saved at `path` gets (from its extension), or None if it cannot be one."""
    return OUTPUT_FORMATS.get(Path(path).suffix.lower())


def save_image(image: torch.Tensor, path: str | Path, size: Optional[tuple[int, int]] = None) -> Path:
    """Save a [0, 1] image; `size` (width, height) resizes it first with Lanczos (e.g. back to the source's size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(to_uint8(image))
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), Image.LANCZOS)
    img.save(path, format=output_format(path))  # None: PIL's own choice from the extension
    return path


@dataclass
class InputListing:
    """What an --input_path names: the files, the folder they were listed from, the subfolders left out."""
    files: list[Path]
    root: Optional[Path] = None  # the folder given (None for a file or a glob)
    skipped_folders: list[Path] = field(default_factory=list)  # subfolders not entered (not recursive)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def list_inputs(spec: str | Path, recursive: bool = False, exclude: Iterable[str | Path] = ()) -> InputListing:
    """A file, a folder (sorted; subfolders only if `recursive`) or a glob pattern to its files.

    `exclude`: folders never entered (e.g. the output folder inside the input folder, so a rerun
    does not edit the previous run's edits). Hidden files and folders are left out.
    """
    p = Path(spec)
    if p.is_dir():
        excluded = {Path(e).resolve() for e in exclude}
        files: list[Path] = []
        skipped: list[Path] = []
        for q in sorted(p.iterdir()):
            if not _visible(q) or q.resolve() in excluded:
                continue
            if q.is_file():
                files.append(q)
            elif q.is_dir() and recursive:
                files.extend(list_inputs(q, True, excluded).files)
            elif q.is_dir():
                skipped.append(q)
        return InputListing(files, p, skipped)
    if p.exists():
        return InputListing([p])
    return InputListing(sorted(Path(m) for m in glob.glob(str(spec), recursive=recursive) if Path(m).is_file()))
