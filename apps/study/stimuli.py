"""The stimulus folder of the 2AFC study, built from one `scripts/evaluate.py` run (Supp. S2.4).

A real trial shows EmoEditor's edit of a source beside one baseline's edit of the same source to the
same target; the baseline is drawn at random per (source, target) job, once, so the paper's 2,016
cross-valence jobs give 2,016 pairs. Dummy trials come from a pool (:mod:`apps.study.dummies` draws
one). Images are copied under names that do not reveal the method (participants can read URLs).
The folder is self-contained: ``stimuli.json`` + ``images/``; the server needs nothing else.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from apps.study import StudyError
from apps.study.plan import MANIFEST, MANIFEST_FORMAT, OURS, PAPER_RELATIONS
from emoeditor.constants import EMOTIONS
from emoeditor.editors.registry import BASELINES
from emoeditor.errors import ImageLoadError
from emoeditor.evaluation.runner import MethodStore
from emoeditor.fileio import atomic_write_text
from emoeditor.imageio import open_image
from emoeditor.seeding import mix_seed

RESULTS_CSV = "results.csv"  # the run's per-job rows (emoeditor/evaluation/runner.py)


@dataclass
class BuildReport:
    pairs: int = 0
    dummies: int = 0
    baselines: list = field(default_factory=list)
    jobs_without_ours: int = 0  # EmoEditor's output missing or unreadable
    jobs_without_baseline: int = 0  # no baseline output for the job
    unreadable_images: list = field(default_factory=list)  # what each skipped image's loader said


def read_jobs(eval_out: Path) -> list[dict]:
    """The run's jobs (job_id, source_id, source_emotion, target_name, relation), one per job_id."""
    path = eval_out / RESULTS_CSV
    if not path.is_file():
        raise StudyError(f"{path} not found: --eval_out must be the --out folder of a finished "
                         f"`python scripts/evaluate.py` run (it writes {RESULTS_CSV} at the end)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    needed = {"job_id", "source_id", "source_emotion", "target_name", "relation"}
    if not needed <= set(reader.fieldnames or ()):
        raise StudyError(f"{path}: columns {sorted(needed - set(reader.fieldnames or ()))} missing; "
                         f"rerun scripts/evaluate.py")
    jobs = {}
    for r in rows:
        jobs.setdefault(r["job_id"], {k: r[k] for k in needed})
    return list(jobs.values())


def find_baselines(eval_out: Path, ours: str, baselines: Optional[Sequence[str]]) -> list[str]:
    """The requested baselines, or the paper's five (CT, NST, CLIPstyler, Ip2p, LMS) that the run has."""
    present = {p.name for p in eval_out.iterdir() if MethodStore(eval_out, p.name).images.is_dir()}
    if ours not in present:
        raise StudyError(f"{eval_out}/{ours}/images not found: the run has no EmoEditor outputs "
                         f"(methods found: {sorted(present) or 'none'}); pass --ours <its label>")
    if baselines:
        missing = [b for b in baselines if b not in present]
        if missing:
            raise StudyError(f"--baselines {missing} have no images/ folder in {eval_out} "
                             f"(methods found: {sorted(present)})")
        return list(baselines)
    found = [b for b in BASELINES if b in present]
    if not found:
        raise StudyError(f"{eval_out} has none of the baselines {list(BASELINES)} "
                         f"(methods found: {sorted(present)}); pass --baselines")
    return found


def opaque_name(seed: int, *parts: str) -> str:
    """A file name that says nothing about the method, stable for a given seed."""
    return hashlib.sha256("/".join(["stimulus", str(seed), *parts]).encode()).hexdigest()[:20] + ".png"


def _copy_image(src: Path, dst: Path, report: BuildReport) -> bool:
    """Copy a PNG-readable image; count and skip one that does not open."""
    try:
        img = open_image(src)
    except ImageLoadError as exc:
        report.unreadable_images.append(str(exc))
        return False
    if src.suffix.lower() == ".png":
        shutil.copyfile(src, dst)
    else:
        img.convert("RGB").save(dst, format="PNG")
    return True


def load_dummy_pool(path: str | Path) -> tuple[Path, list[dict]]:
    """A dummy pool: a folder with dummies.json (or the JSON itself) listing {id, target, correct, wrong}."""
    path = Path(path)
    json_path = path / "dummies.json" if path.is_dir() else path
    if not json_path.is_file():
        raise StudyError(f"dummy pool {json_path} not found; draw one with "
                         f"`python -m apps.study make-dummies --out DIR` or write dummies.json (see README)")
    try:
        entries = json.loads(json_path.read_text())["dummies"]
        for e in entries:
            e["id"], e["target"], e["correct"], e["wrong"]  # noqa: B018  (what every entry needs)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StudyError(f"{json_path}: expected {{\"dummies\": [{{\"id\", \"target\", \"correct\", \"wrong\"}}]}} "
                         f"({type(exc).__name__}: {exc})") from exc
    for e in entries:
        if e["target"] not in EMOTIONS:
            raise StudyError(f"{json_path}: dummy {e['id']!r} has target {e['target']!r}; use one of {EMOTIONS}")
    return json_path.parent, entries


def build_stimuli(eval_out: str | Path, dummy_pool: str | Path, out: str | Path, seed: int = 0,
                  ours: str = OURS, baselines: Optional[Sequence[str]] = None,
                  relations: Sequence[str] = PAPER_RELATIONS) -> BuildReport:
    """Write `out`/stimuli.json and `out`/images/: one pair per job of `relations`, plus the dummy pool."""
    eval_out, out = Path(eval_out), Path(out)
    if not eval_out.is_dir():
        raise StudyError(f"--eval_out {eval_out} is not a folder: pass the --out of a scripts/evaluate.py run")
    baselines = find_baselines(eval_out, ours, baselines)
    jobs = [j for j in read_jobs(eval_out) if j["relation"] in relations]
    pool_root, pool = load_dummy_pool(dummy_pool)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    report = BuildReport(baselines=baselines)
    pairs = []
    for job in jobs:
        job_id = job["job_id"]
        ours_file = opaque_name(seed, job_id, ours)
        ours_image = MethodStore(eval_out, ours).image(job_id)
        if not ours_image.exists() or not _copy_image(ours_image, images / ours_file, report):
            report.jobs_without_ours += 1
            continue
        have = [b for b in baselines if MethodStore(eval_out, b).image(job_id).exists()]
        rng = np.random.default_rng(mix_seed(seed, "study-pair", job_id))
        chosen = None
        for b in rng.permutation(have):  # the first readable of a random order: a uniform draw among readable
            if _copy_image(MethodStore(eval_out, b).image(job_id), images / opaque_name(seed, job_id, b), report):
                chosen = str(b)
                break
        if chosen is None:
            (images / ours_file).unlink()
            report.jobs_without_baseline += 1
            continue
        pairs.append({"id": job_id, "source_id": job["source_id"], "source_emotion": job["source_emotion"],
                      "target": job["target_name"], "relation": job["relation"], "baseline": chosen,
                      "ours_file": ours_file, "baseline_file": opaque_name(seed, job_id, chosen)})
    dummies = []
    for d in pool:
        files = {}
        for role in ("correct", "wrong"):
            files[f"{role}_file"] = opaque_name(seed, "dummy", d["id"], role)
            if not _copy_image(pool_root / d[role], images / files[f"{role}_file"], report):
                raise StudyError(f"dummy {d['id']!r}: {report.unreadable_images[-1]}; fix the dummy pool")
        dummies.append({"id": d["id"], "target": d["target"], **files})
    if not pairs:
        raise StudyError(f"no usable pairs in {eval_out} for relations {list(relations)}: "
                         f"{report.jobs_without_ours} jobs lack EmoEditor's output, "
                         f"{report.jobs_without_baseline} lack every baseline's")
    report.pairs, report.dummies = len(pairs), len(dummies)
    manifest = {"format": MANIFEST_FORMAT, "seed": seed, "eval_out": str(eval_out), "ours": ours,
                "baselines": baselines, "relations": list(relations), "pairs": pairs, "dummies": dummies,
                "report": report.__dict__}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return report
