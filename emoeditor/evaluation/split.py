"""The test split (paper Sec. 4) and the editing jobs derived from it.

The split holds 63 EmoSet images per source emotion that no EmoPair annotation refers to,
drawn from the EmoSet split lists in ``source_splits`` (default: test, which the predictor P
never trained on; the split records how many sources P's training list names); each source is
edited to the other 7 emotions, giving 504 x 7 = 3,528 jobs, each tagged cross-valence or
within-valence. The same job builder serves the generalisation runs
(same-valence only, neutral folders with no source label, multi-emotion targets).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from emoeditor.constants import (
    EMOSET_SPLITS,
    EMOTIONS,
    P_TRAIN_SPLIT,
    TEST_PER_CLASS,
    TEST_SOURCE_SPLITS,
    TEST_SPLIT_SEED,
)
from emoeditor.data.emopair import read_annotations
from emoeditor.data.emoset import has_split_lists, list_images
from emoeditor.emotions import emotion_index, parse_target, target_label, target_valence, valence
from emoeditor.errors import SplitError
from emoeditor.fileio import atomic_write_text
from emoeditor.imageio import IMAGE_EXTENSIONS
from emoeditor.seeding import mix_seed

SPLIT_FORMAT_VERSION = 1
NEUTRAL = "neutral"  # source emotion of images with no label (e.g. MSCOCO)


@dataclass(frozen=True)
class Job:
    """One edit: a source image and a target emotion (vector)."""

    job_id: str
    source_id: str
    source_path: str  # relative to the split's image root, or absolute
    source_emotion: str  # an EMOTIONS name or "neutral"
    target: tuple[float, ...]  # 8 weights summing to 1
    target_name: str  # emotion name or mixture label (file-name safe)
    relation: str  # "cross", "within", "mixed" (balanced mixture target) or "neutral"

    def target_tensor(self) -> torch.Tensor:
        return torch.tensor(self.target, dtype=torch.float32)

    def seed(self, base_seed: int) -> int:
        """A per-job seed: results do not depend on batch composition, order or sharding."""
        return mix_seed(base_seed, "eval", self.job_id)


# ---------------------------------------------------------------- EmoPair exclusion

def _path_keys(path: str) -> set[str]:
    """Names under which an image path can match another: its file name, its stem, and every
    trailing run of path components (so ``image/awe/awe_00001.jpg`` matches ``EPGS/awe/awe_00001.jpg``)."""
    parts = [p for p in Path(str(path).replace("\\", "/")).parts if p not in ("", ".", "/")]
    if not parts:
        return set()
    keys = {Path(parts[-1]).stem.lower()}
    for i in range(len(parts)):
        keys.add("/".join(parts[i:]).lower())
    return keys


def emopair_used(annotation_json: str | Path | None) -> set[str]:
    """Match keys of every image an EmoPair annotation refers to (source or target)."""
    if annotation_json is None:
        return set()
    path = Path(annotation_json)
    if not path.is_file():
        raise SplitError(f"EmoPair annotation {path} not found; pass --emopair_json json/data_EmoPair.json "
                         f"(or --emopair_json none to skip the exclusion, e.g. for a toy set)")
    entries = read_annotations(path)  # the EmoPair reader: same checks and messages as training
    used: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for field in ("img_src_path", "img_tgt_path"):
            if isinstance(entry.get(field), str):
                used |= _path_keys(entry[field])
    return used


def _is_used(image: str, used: set[str]) -> bool:
    parts = Path(image).parts
    # An EmoSet image is used when its stem or any trailing path (>= the file name) is referenced.
    candidates = {Path(image).stem.lower()} | {"/".join(parts[i:]).lower() for i in range(len(parts))}
    return bool(candidates & used)


# ---------------------------------------------------------------- the split

def make_test_split(emoset_root: str | Path, emopair_json: str | Path | None, per_class: int = TEST_PER_CLASS,
                    seed: int = TEST_SPLIT_SEED, allow_fewer: bool = False,
                    source_splits: Sequence[str] = TEST_SOURCE_SPLITS) -> dict:
    """Pick `per_class` unused EmoSet images per emotion (seeded) and list their 7 edits each.

    Sources come from the EmoSet split lists in `source_splits` (default: the test list, which the
    emotion predictor P never trained on); an EmoSet without split information (class folders
    directly under the root) offers every image. The split records how many sources P's training
    list (EmoSet train) names: 0 under the default, ``None`` when unknown.
    """
    if per_class < 1:
        raise SplitError(f"--per_class must be >= 1, got {per_class}")
    if not source_splits or set(source_splits) - set(EMOSET_SPLITS):
        raise SplitError(f"--source_splits must name one or more of {', '.join(EMOSET_SPLITS)}, "
                         f"got {list(source_splits)}")
    source_splits = [s for s in EMOSET_SPLITS if s in source_splits]
    listed = list_images(emoset_root)
    known = has_split_lists(listed)
    lists: dict[tuple[str, str], set[str]] = {}  # (emotion, path) -> the split lists naming it
    for img in listed:
        lists.setdefault((img.emotion, img.path), set()).update([img.split] if img.split else [])
    images = sorted(key for key, named in lists.items() if not known or named & set(source_splits))
    used = emopair_used(emopair_json)
    rng = random.Random(seed)
    sources, short = [], []
    for emotion in EMOTIONS:
        pool = [img for emo, img in images if emo == emotion and not _is_used(img, used)]
        if len(pool) < per_class:
            short.append(f"{emotion}: {len(pool)} of {per_class}")
            if not allow_fewer:
                continue
        for img in sorted(rng.sample(pool, min(per_class, len(pool)))):
            sources.append({"id": Path(img).stem, "emotion": emotion, "path": img,
                            "emoset_splits": [s for s in EMOSET_SPLITS if s in lists[(emotion, img)]]})
    if short and not allow_fewer:
        pool = _pool_name(source_splits) if known else "EmoSet (no split lists)"
        raise SplitError(f"{emoset_root}: too few images in {pool} unused by EmoPair ({'; '.join(short)}); "
                         f"lower --per_class, widen --source_splits (e.g. train val test) or pass --allow_fewer "
                         f"to take what there is")
    sources = _unique_ids(sources)
    jobs = build_jobs(sources)
    per_list = {s: sum(s in src["emoset_splits"] for src in sources) for s in EMOSET_SPLITS} if known else None
    return {
        "format_version": SPLIT_FORMAT_VERSION,
        "emoset_root": str(emoset_root),
        "emopair_json": None if emopair_json is None else str(emopair_json),
        "seed": seed,
        "per_class": per_class,
        "source_splits": source_splits if known else None,  # None: the EmoSet had no split lists
        "num_sources": len(sources),
        "sources_per_list": per_list,  # sources each EmoSet list names
        "num_from_p_train": per_list[P_TRAIN_SPLIT] if known else None,  # in P's training list (EmoSet train)
        "num_jobs": len(jobs),
        "num_cross": sum(j.relation == "cross" for j in jobs),
        "num_within": sum(j.relation == "within" for j in jobs),
        "short_classes": short,
        "sources": sources,
        "jobs": [{"job_id": j.job_id, "source_id": j.source_id, "target": j.target_name, "relation": j.relation}
                 for j in jobs],
    }


def _pool_name(source_splits: Sequence[str]) -> str:
    names = list(source_splits)
    return f"EmoSet's {names[0]} list" if len(names) == 1 else \
        f"EmoSet's {', '.join(names[:-1])} and {names[-1]} lists"


def describe_split(split: dict) -> str:
    """The split's one-line summary: counts, the source pool and its overlap with P's training list."""
    short = f"; short classes: {', '.join(split['short_classes'])}" if split.get("short_classes") else ""
    if split.get("source_splits") is None:
        pool = (f"drawn from all images (no EmoSet split lists, so how many P trained on is unknown; "
                f"the release's {'/'.join(EMOSET_SPLITS)}.json or split folders would tell)")
    else:
        n = split["num_from_p_train"]
        pool = (f"from {_pool_name(split['source_splits'])}: {n} of {split['num_sources']} "
                f"in EmoSet {P_TRAIN_SPLIT} (P's training list)")
        if n:
            pool += " -- P may be over-confident on those sources (pass --source_splits test to exclude them)"
    return (f"{split['num_sources']} sources {pool}; {split['num_jobs']} jobs "
            f"({split['num_cross']} cross-valence, {split['num_within']} within-valence){short}")


def _unique_ids(sources: list[dict]) -> list[dict]:
    seen: dict[str, int] = {}
    out = []
    for s in sources:
        base = s["id"]
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append({**s, "id": base if n == 0 else f"{base}-{n}"})
    return out


def save_split(split: dict, path: str | Path) -> Path:
    """Write the split crash-safely: a killed run leaves the previous file or none, never half of one."""
    return atomic_write_text(path, json.dumps(split, indent=1))


def load_split(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        if "demo" in path.parts:  # configs/eval_tiny.yaml's toy split, next to what `make demo` writes
            raise SplitError(f"test split {path} not found: run `make demo` first, then make the toy split as "
                             f"configs/eval_tiny.yaml's comment says (scripts/make_toy_emoset.py --root "
                             f"{path.parent}/emoset --per_class 0 0 2, then scripts/make_test_split.py --emoset_root "
                             f"{path.parent}/emoset --emopair_json none --per_class 2 --out {path})")
        raise SplitError(f"test split {path} not found; make it with scripts/make_test_split.py "
                         f"--emoset_root <EmoSet-118K> --out {path}")
    try:
        split = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SplitError(f"{path}: not valid JSON ({exc}); regenerate it with scripts/make_test_split.py") from None
    if not isinstance(split, dict) or not isinstance(split.get("sources"), list):
        raise SplitError(f"{path}: not a test split file (no 'sources' list)")
    return split


def folder_sources(folder: str | Path, emotion: str = NEUTRAL) -> list[dict]:
    """Every image in a folder as a source of unknown (neutral) emotion, e.g. MSCOCO images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitError(f"--source_folder {folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise SplitError(f"--source_folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return _unique_ids([{"id": p.stem, "emotion": emotion, "path": str(p.resolve())} for p in paths])


# ---------------------------------------------------------------- jobs

def relation(source_emotion: str, target: torch.Tensor) -> str:
    if source_emotion == NEUTRAL:
        return NEUTRAL
    tv = target_valence(target)
    if tv == "mixed":
        return "mixed"
    return "within" if tv == valence(source_emotion) else "cross"


def build_jobs(sources: Iterable[dict], targets: Optional[Sequence[str]] = None,
               relations: Optional[Sequence[str]] = None) -> list[Job]:
    """The edits of every source: by default to the 7 emotions other than its own (all 8 for
    neutral sources); with `targets`, to each given target spec (a name or a mixture such as
    ``awe:0.5,excitement:0.5``), skipping a one-hot target equal to the source's emotion.
    `relations` keeps only jobs with those tags (e.g. ``["within"]`` for the same-valence run)."""
    parsed = [parse_target(t) for t in targets] if targets else None
    jobs = []
    for s in sources:
        src_emotion = s["emotion"]
        if parsed is None:
            tlist = [torch.nn.functional.one_hot(torch.tensor(i), len(EMOTIONS)).float()
                     for i, e in enumerate(EMOTIONS) if e != src_emotion]
        else:
            tlist = [t for t in parsed
                     if not (src_emotion in EMOTIONS and float(t[emotion_index(src_emotion)]) == 1.0)]
        for t in tlist:
            rel = relation(src_emotion, t)
            if relations and rel not in relations:
                continue
            name = target_label(t)
            jobs.append(Job(job_id=f"{s['id']}__{name}", source_id=s["id"], source_path=s["path"],
                            source_emotion=src_emotion, target=tuple(float(x) for x in t), target_name=name,
                            relation=rel))
    return jobs


def subset_sources(sources: list[dict], per_class: Optional[int]) -> list[dict]:
    """The first `per_class` sources of each emotion (a quick subset of the split)."""
    if per_class is None:
        return sources
    counts: dict[str, int] = {}
    out = []
    for s in sources:
        if counts.get(s["emotion"], 0) < per_class:
            counts[s["emotion"]] = counts.get(s["emotion"], 0) + 1
            out.append(s)
    return out


def job_to_dict(job: Job) -> dict:
    return asdict(job)
