"""Files and folders: crash-safe writes, digests, and the checks every entry point runs before any work
(a missing input named with how much of its path exists; output folders that cannot be written).

A long job that is killed mid-write must never leave a file that looks finished: everything is
written to a temporary name beside its destination and renamed into place (atomic on one filesystem).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from emoeditor.constants import DEMO_DIR
from emoeditor.errors import EmoEditorError


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


def written_by_demo(path: str | Path) -> bool:
    """Whether `path` lies in a `make demo` output folder (runs/demo/...), so its absence means "run make demo"."""
    parts, demo = Path(path).parts, Path(DEMO_DIR).parts
    return any(parts[i:i + len(demo)] == demo for i in range(len(parts)))


def missing_path(path: str | Path, what: str) -> str:
    """'<what> <path> does not exist', then how much of it does: a typo is then easy to spot."""
    path = Path(path)
    text = f"{what} {path} does not exist"
    parent = path.parent
    if parent.is_dir():
        names = sorted(p.name for p in parent.iterdir())
        close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)
        hint = f"; did you mean {parent / close[0]}?" if close else ""
        return f"{text} (its folder {parent}/ does{hint})"
    ancestor = next((p for p in parent.parents if p.is_dir()), None)
    return f"{text}, nor does its folder {parent}/" + (f" (the nearest existing folder is {ancestor.resolve()}/)"
                                                        if ancestor is not None else "")


def unwritable(outputs: Mapping[str, Optional[str | Path]]) -> list[str]:
    """One line per output folder (flag -> path) that cannot be written. Checked before any work: a
    read-only folder would otherwise end a run at its first checkpoint, hours in. Nothing is created:
    the folder, or its nearest existing parent, gets a probe file that is removed at once (a permission
    check would pass for root on a read-only or immutable folder)."""
    problems = []
    for flag, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            what = path if existing == path else f"{path} (its parent {existing})"
            problems.append(f"{flag} {what} is a file, not a folder")
            continue
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".write_probe"):
                pass
        except OSError as exc:
            where = "" if existing == path else f" (it does not exist yet, and its parent {existing} is not writable)"
            problems.append(f"{flag} {path}: cannot write there{where}: {exc.strerror or exc}; choose a writable "
                            f"folder with {flag} or fix its permissions")
    return problems


def check_writable(outputs: Mapping[str, Optional[str | Path]]) -> None:
    """`unwritable` as one error naming every folder."""
    problems = unwritable(outputs)
    if problems:
        raise EmoEditorError("output folder(s) not writable; nothing was done:\n  " + "\n  ".join(problems))
