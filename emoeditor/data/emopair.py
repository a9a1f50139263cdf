"""EmoPair: reading, validating and serving the (source, target, emotion, instruction) pairs.

The annotation file is the official ``json/data_EmoPair.json``: a JSON list of entries with
``img_src_path``, ``img_tgt_path`` (relative to the EmoPair root), ``class_source``,
``class_target``, ``source_softmax`` (P's 8-way softmax on the source) and ``prompt`` (the
edit instruction). Every entry is checked before training starts, so a bad entry among 340k
is reported by index up front rather than crashing a DataLoader worker hours later.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Real
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence, Union

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from emoeditor.constants import (
    EMOPAIR_FIELDS,
    EMOPAIR_IMAGE_CHECKS,
    EMOPAIR_JSON,
    EMOPAIR_REPORT_LINES,
    EMOPAIR_ROOT,
    EMOPAIR_SUBSETS,
    EMOTIONS,
    IMAGE_SIZE,
    NUM_EMOTIONS,
    OFFICIAL_DOWNLOADS,
    SOFTMAX_SUM_TOL,
)
from emoeditor.emotions import onehot
from emoeditor.errors import AnnotationError, ImageLoadError
from emoeditor.imageio import MIN_SIDE, load_image

logger = logging.getLogger(__name__)

CheckImages = Union[bool, str]


def read_annotations(json_path: Union[str, Path]) -> list[dict]:
    """The raw entries of an EmoPair annotation file, which must be a JSON list."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise AnnotationError(
            f"annotation file {json_path} not found; download data_EmoPair.json from "
            f"{OFFICIAL_DOWNLOADS['annotations']} into json/, or write a toy set with "
            f"`python scripts/make_toy_emopair.py`")
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"annotation file {json_path} is not valid JSON "
                              f"(line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"annotation file {json_path} is not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, list):
        raise AnnotationError(f"annotation file {json_path} must hold a JSON list of entries, "
                              f"got a JSON {type(data).__name__}")
    return data


def subset_of(entry: dict) -> Optional[str]:
    """'EPGS' or 'EPAS' by the official rule ("EPGS" in img_src_path); None if undecidable."""
    src = entry.get("img_src_path") if isinstance(entry, dict) else None
    if not isinstance(src, str):
        return None
    return "EPGS" if "EPGS" in src else "EPAS"


def select_subset(entries: Sequence, subset: str = "all") -> list[tuple[int, object]]:
    """(index, entry) pairs in `subset`; entries whose subset cannot be told are kept so they get reported."""
    if subset not in EMOPAIR_SUBSETS:
        raise AnnotationError(f"unknown EmoPair subset {subset!r}; choose one of {', '.join(EMOPAIR_SUBSETS)}")
    return [(i, e) for i, e in enumerate(entries)
            if subset == "all" or subset_of(e) in (None, subset)]


def _entry_problems(entry: object) -> list[str]:
    """What is wrong with one entry's fields (no file access)."""
    if not isinstance(entry, dict):
        return [f"is a JSON {type(entry).__name__}, not an object with fields {', '.join(EMOPAIR_FIELDS)}"]
    problems = []
    missing = [k for k in EMOPAIR_FIELDS if k not in entry]
    if missing:
        problems.append(f"missing field(s) {', '.join(missing)}")
    for key in ("img_src_path", "img_tgt_path"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            problems.append(f"{key} must be a non-empty path string, got {entry[key]!r}")
        elif key in entry and (where := _outside_root(entry[key])):
            problems.append(f"{key} {entry[key]!r} {where}; paths must be relative to --data_root and stay inside it")
    for key in ("class_source", "class_target"):
        if key in entry and entry[key] not in EMOTIONS:
            name = entry[key]
            hint = f" (names are lowercase: {name.strip().lower()!r})" if (
                isinstance(name, str) and name.strip().lower() in EMOTIONS) else ""
            problems.append(f"{key} {name!r} is not one of {', '.join(EMOTIONS)}{hint}")
    if "source_softmax" in entry:
        problems.extend(_softmax_problems(entry["source_softmax"]))
    if "prompt" in entry and (not isinstance(entry["prompt"], str) or not entry["prompt"].strip()):
        problems.append(f"prompt must be a non-empty string, got {entry['prompt']!r}")
    return problems


def _outside_root(rel: str) -> Optional[str]:
    """Why `rel` would read a file outside the data root (absolute, or climbing out with ..), else None.
    Lexical on purpose: a symlink inside the root is the user's own choice."""
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (rel[:1].isalpha() and rel[1:3] in (":/", ":\\")):
        return "is absolute"
    norm = os.path.normpath(rel.replace("\\", "/"))
    if norm == os.pardir or norm.startswith(os.pardir + os.sep):
        return "resolves outside the data root"
    return None


def _softmax_problems(probs: object) -> list[str]:
    if not isinstance(probs, (list, tuple)):
        return [f"source_softmax must be a list of {NUM_EMOTIONS} floats, got {type(probs).__name__}"]
    if len(probs) != NUM_EMOTIONS:
        return [f"source_softmax has {len(probs)} values, expected {NUM_EMOTIONS} "
                f"(one per emotion: {', '.join(EMOTIONS)})"]
    if not all(type(p) in (float, int) or (isinstance(p, Real) and not isinstance(p, bool)) for p in probs):
        return [f"source_softmax must hold numbers only, got {probs!r}"]
    if not all(math.isfinite(p) for p in probs):
        return [f"source_softmax contains NaN or infinite values: {probs!r}"]
    if any(p < 0 for p in probs):
        return [f"source_softmax has negative values: {probs!r}"]
    total = math.fsum(probs)
    if abs(total - 1.0) > SOFTMAX_SUM_TOL:
        return [f"source_softmax sums to {total:.6g}, not 1 (tolerance {SOFTMAX_SUM_TOL:g})"]
    return []


def _check_file(path: str, mode: str) -> Optional[str]:
    """None if the image at `path` passes the `mode` check, else what is wrong with it."""
    try:
        if not os.path.isfile(path):
            return "not found" if not os.path.exists(path) else "is not a file"
        if mode == "exists":
            return None
        if mode == "decode":
            load_image(path)
            return None
        with Image.open(path) as img:
            w, h, fmt = *img.size, img.format
            img.verify()  # cheap integrity check; no pixel decoding for most formats (PNG: chunk CRCs)
        if min(w, h) < MIN_SIDE:
            return f"is {w}x{h}, smaller than {MIN_SIDE}px per side"
        if fmt == "JPEG" and not _ends_like_jpeg(path):
            load_image(path)  # no end marker: usually cut short, but some cameras append data; decode to tell
        return None
    except ImageLoadError as exc:
        return str(exc).split(": ", 1)[-1]
    except UnidentifiedImageError:
        return "is not an image file PIL can read"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"is unreadable ({exc})"


def _ends_like_jpeg(path: str) -> bool:
    """Whether the file ends with JPEG's end-of-image marker (FF D9): a file cut short in its pixel data
    does not, and verify() reads only its header, so this is the header check's one extra read."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 2))
        return f.read(2) == b"\xff\xd9"


def _normalise_check(check_images: CheckImages) -> str:
    if check_images is True:
        return "header"
    if check_images is False or check_images is None:
        return "none"
    if check_images not in EMOPAIR_IMAGE_CHECKS:
        raise AnnotationError(f"unknown image check {check_images!r}; choose one of {', '.join(EMOPAIR_IMAGE_CHECKS)}")
    return check_images


def check_image_files(paths: Iterable[str], mode: str = "header", num_workers: Optional[int] = None,
                      progress: bool = True) -> dict[str, str]:
    """{path: problem} for the unique paths that fail the check; threads hide file-system latency."""
    paths = sorted(set(map(str, paths)))
    if mode == "none" or not paths:
        return {}
    workers = num_workers or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: _check_file(p, mode), paths)
        results = list(tqdm(results, total=len(paths), desc=f"checking images ({mode})",
                            unit="img", disable=not progress, leave=False))
    return {p: r for p, r in zip(paths, results) if r is not None}


def _describe(index: int, entry: object) -> str:
    if isinstance(entry, dict):
        return f"entry {index} (src={entry.get('img_src_path')!r}, tgt={entry.get('img_tgt_path')!r})"
    return f"entry {index}"


def _validate_indexed(indexed: Sequence[tuple[int, object]], root: Path, check_images: CheckImages,
                      num_workers: Optional[int] = None, progress: bool = True) -> tuple[list[dict], list[str]]:
    mode = _normalise_check(check_images)
    field_problems = [_entry_problems(e) for _, e in indexed]
    # Plain strings, not Paths: pathlib costs seconds on 680k paths. Files shared by several
    # entries (an EPGS source edited toward several targets) are checked once.
    root_str = str(root)
    bad_files: dict[str, str] = {}
    if mode != "none":
        wanted = {e[k] for _, e in indexed if isinstance(e, dict) for k in ("img_src_path", "img_tgt_path")
                  if isinstance(e.get(k), str) and e[k].strip() and not _outside_root(e[k])}
        bad = check_image_files([os.path.join(root_str, rel) for rel in wanted], mode, num_workers, progress)
        bad_files = {rel: bad[full] for rel in wanted if (full := os.path.join(root_str, rel)) in bad}

    good, problems = [], []
    for (i, e), probs in zip(indexed, field_problems):
        if bad_files and isinstance(e, dict):
            for key in ("img_src_path", "img_tgt_path"):
                if e.get(key) in bad_files:
                    probs.append(f"{key} {os.path.join(root_str, e[key])} {bad_files[e[key]]}")
        if probs:
            problems.append(f"{_describe(i, e)}: {'; '.join(probs)}")
        else:
            good.append(e)
    return good, problems


def add_emopair_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The EmoPair flags, so every entry point that reads EmoPair spells them the same way."""
    group = parser.add_argument_group("EmoPair data")
    group.add_argument("--json_path", default=EMOPAIR_JSON,
                       help="EmoPair annotation file (official data_EmoPair.json)")
    group.add_argument("--data_root", default=EMOPAIR_ROOT, help="folder the annotation image paths are relative to")
    group.add_argument("--subset", default="all", choices=EMOPAIR_SUBSETS,
                       help="EPGS: entries whose img_src_path contains 'EPGS' (official rule); EPAS: the rest")
    group.add_argument("--skip_bad", action="store_true",
                       help="drop and count malformed entries, and pairs that fail to load mid-run, instead of "
                            "stopping with a report")
    group.add_argument("--check_images", default="header", choices=EMOPAIR_IMAGE_CHECKS,
                       help="image check before training: exists (stat only); header (open each header, and "
                            "decode JPEGs cut short); decode (every pixel: slow, finds any corrupt file)")
    return parser


def validate_entries(entries: Sequence, root: Union[str, Path], check_images: CheckImages = True,
                     num_workers: Optional[int] = None, progress: bool = True) -> tuple[list[dict], list[str]]:
    """(good entries, one line per bad entry naming its index, its paths and every problem).

    `check_images`: True/"header" opens each file's header, "exists" only stats it, "decode"
    decodes every pixel (slow, catches truncated files), False/"none" skips files.
    """
    return _validate_indexed(list(enumerate(entries)), Path(root), check_images, num_workers, progress)


def format_report(problems: Sequence[str], total: int, source: str, max_lines: int = EMOPAIR_REPORT_LINES) -> str:
    lines = [f"{source}: {len(problems)} of {total} entries are malformed:"]
    lines += [f"  {p}" for p in problems[:max_lines]]
    if len(problems) > max_lines:
        lines.append(f"  ... and {len(problems) - max_lines} more bad entries")
    lines.append("Fix or remove them, or pass --skip_bad to drop them and train on the rest.")
    return "\n".join(lines)


class EmoPairData(NamedTuple):
    """The validated entries of one subset, and what validation dropped (with --skip_bad)."""

    entries: list[dict]
    dropped: list[str]  # one line per dropped entry, as in the report
    total: int  # entries in the subset before validation


def read_emopair(json_path: Union[str, Path], root: Union[str, Path], subset: str = "all",
                 skip_bad: bool = False, check_images: CheckImages = True,
                 num_workers: Optional[int] = None, progress: bool = True) -> EmoPairData:
    """Validate one subset: bad entries stop here with one report, or are dropped and counted with skip_bad."""
    root = Path(root)
    entries = read_annotations(json_path)
    indexed = select_subset(entries, subset)
    if _normalise_check(check_images) != "none" and not root.is_dir():
        raise AnnotationError(
            f"EmoPair image root {root} not found; put EPGS images ({OFFICIAL_DOWNLOADS['epgs']}) in "
            f"{root / 'EPGS'} and Ip2p images ({OFFICIAL_DOWNLOADS['epas_images']}) in {root / 'EPAS' / 'ip2p_clip'}")
    good, problems = _validate_indexed(indexed, root, check_images, num_workers, progress)
    source = f"{json_path} (subset {subset}, images under {root})"
    if problems and not skip_bad:
        raise AnnotationError(format_report(problems, len(indexed), source))
    if problems:
        logger.warning("%s: skipped %d of %d bad entries (--skip_bad); first: %s",
                       source, len(problems), len(indexed), problems[0])
    if not good:
        counts = {name: sum(subset_of(e) == name for e in entries) for name in ("EPAS", "EPGS")}
        raise AnnotationError(f"{source}: no usable entries left (file has {len(entries)} entries: "
                              f"EPAS {counts['EPAS']}, EPGS {counts['EPGS']}, {len(problems)} bad in this subset)")
    return EmoPairData(good, problems, len(indexed))


def load_emopair(json_path: Union[str, Path], root: Union[str, Path], subset: str = "all",
                 skip_bad: bool = False, check_images: CheckImages = True,
                 num_workers: Optional[int] = None, progress: bool = True) -> list[dict]:
    """The validated entries of one subset (read_emopair without the count of dropped ones)."""
    return read_emopair(json_path, root, subset, skip_bad, check_images, num_workers, progress).entries


def bad_pair_error(problems: Sequence[str], check_images: str = "header") -> ImageLoadError:
    """The error for pairs that pass the image check before training but fail to load when read."""
    return ImageLoadError(
        f"{'; '.join(problems)}. The image check before training (--check_images {check_images}) did not catch "
        f"this. Re-export or remove the file, pass --skip_bad to skip pairs that fail to load (they are counted in "
        f"training_summary.json), or use --check_images decode to find every such file before training.")


class SkipBadItems(torch.utils.data.Dataset):
    """Pairs that fail to load mid-run (validation does not decode every pixel by default) are replaced by
    the next good one, so batches keep their shape, and reported in the item: "bad" names them (one per
    line) and "skipped" counts them. The loop reading the batches then stops with `bad_pair_error` or, with
    --skip_bad, warns and counts. Raising here instead would reach the user as a DataLoader worker's traceback,
    and the count must travel with the batch anyway: workers are separate processes."""

    MAX_TRIES = 16

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        bad = []
        for k in range(self.MAX_TRIES):
            try:
                item = self.dataset[(i + k) % len(self.dataset)]
            except ImageLoadError as exc:
                bad.append(str(exc))
                continue
            return {**item, "skipped": k, "bad": "\n".join(bad)}
        raise bad_pair_error(bad[:3] + [f"... {self.MAX_TRIES} consecutive pairs from index {i} failed to load"])


def bad_pairs_in(batch: dict) -> list[str]:
    """The pairs SkipBadItems replaced in a collated batch, one line each."""
    return [line for text in batch.get("bad", ()) for line in text.splitlines() if line]


class EmoPairDataset(torch.utils.data.Dataset):
    """Validated EmoPair entries as tensors, with the official transform (Resize((S, S)) + ToTensor).

    `source_softmax` is returned as stored, so the training loop chooses the encoder input
    (direction = target_vec - source_softmax, or the one-hot target) with emotions.emotion_input.
    """

    def __init__(self, entries: Sequence[dict], root: Union[str, Path], image_size: Optional[int] = IMAGE_SIZE):
        self.entries = list(entries)
        self.root = Path(root)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        e = self.entries[i]
        try:
            source = load_image(self.root / e["img_src_path"], self.image_size)
            target = load_image(self.root / e["img_tgt_path"], self.image_size)
        except ImageLoadError as exc:
            raise ImageLoadError(f"EmoPair entry {i}: {exc}") from None
        return {
            "source": source,
            "target": target,
            "target_vec": onehot(e["class_target"]),
            "source_softmax": torch.tensor(e["source_softmax"], dtype=torch.float32),
            "prompt": e["prompt"],
            "index": i,
            "transition": f"{e['class_source']} to {e['class_target']}",
        }
