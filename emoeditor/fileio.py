"""Crash-safe writes and file digests, shared by checkpoints, the latent cache, downloads and evaluation.

A long job that is killed mid-write must never leave a file that looks finished: everything is
written to a temporary name beside its destination and renamed into place (atomic on one filesystem).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[Path], object], tag: str = "") -> Path:
    """Call ``write(tmp)`` and rename `tmp` to `path`; the temporary keeps the suffix (writers may
    infer the format from it), and `tag` keeps concurrent writers (e.g. ranks) apart. If `write`
    raises, `path` keeps its previous content and the partial temporary is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{tag}{path.suffix}")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def plain(value: Any) -> Any:
    """JSON- and weights_only-safe primitives: tensors, arrays and numpy scalars become lists and
    numbers, anything else that is not a primitive (a Path) its string."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "tolist"):  # torch.Tensor, np.ndarray, np.generic
        return plain(value.tolist())
    return str(value)


def sha256sum(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in blocks (weights and annotation files can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
