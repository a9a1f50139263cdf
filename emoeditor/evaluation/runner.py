"""One-command evaluation: methods x test jobs -> outputs on disk -> metrics -> Table 1, plots, Fig. S11.

Every stage is resumable. An edit is done when ``<out>/<method>/images/<job_id>.png`` exists and
opens (it is written last, atomically, after its trace and candidates); a rerun edits only what
is missing or corrupt. Metrics are cached per job in ``metrics.jsonl`` keyed by the output's hash
and the metric settings, so a rerun with nothing new computes nothing. Jobs are sharded over
accelerate processes by index; rank 0 scores and writes the tables.

Bad input never stops the run: a source that is missing or unreadable, an output that is
corrupt, or a method that raises on a job is counted, listed in ``report.json`` and left out of
the tables, which are computed from everything else.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from emoeditor.constants import (
    BOOTSTRAP_RESAMPLES,
    CANNY_THRESHOLDS,
    CI_LEVEL,
    EMOTIONS,
    IMAGE_SIZE,
    RELATIONS,
    TEST_SPLIT_JSON,
)
from emoeditor.editing.critic import SOURCE_INDEX, CriticResult, replay
from emoeditor.editors.discovery import parse_methods
from emoeditor.editors.registry import MethodContext, MethodSpec, expand_all
from emoeditor.errors import EmoEditorError, ImageLoadError, SplitError
from emoeditor.evaluation.reporting import (
    METRICS,
    example_grid,
    per_emotion,
    plot_bars,
    plot_iteration_curves,
    table_rows,
    write_csv,
    write_table,
)
from emoeditor.evaluation.split import Job, build_jobs, folder_sources, load_split, subset_sources
from emoeditor.fileio import atomic_write, atomic_write_text, check_writable, plain, sha256sum
from emoeditor.imageio import load_image, open_image, pil_to_tensor, save_image
from emoeditor.logs import show_progress
from emoeditor.models.predictor import load_predictor
from emoeditor.scoring.metrics import compute_all


@dataclass
class EvalSettings:
    out: str
    methods: Sequence[str] = ("ours",)
    split: Optional[str] = TEST_SPLIT_JSON
    image_root: Optional[str] = None  # root of the split's relative paths (default: the split's emoset_root)
    source_folder: Optional[str] = None  # generalisation: every image of a folder, no source label
    targets: Optional[Sequence[str]] = None  # generalisation: these targets (names or mixtures) for every source
    relations: Optional[Sequence[str]] = None  # keep only these job tags (e.g. within = same-valence run)
    per_class: Optional[int] = None  # quick subset: the first N sources of each class
    image_size: int = IMAGE_SIZE
    seed: int = 0
    chunk_size: int = 32  # jobs per Editor call (EmoEditor batches them continuously inside)
    device: Optional[str] = None
    # EmoEditor defaults (a method spec's options override them)
    model: Optional[str] = None
    predictor: Optional[str] = None
    critic: str = "paper"
    num_loop: Optional[int] = None
    num_inference_steps: Optional[int] = None
    batch_size: int = 8
    return_candidates: bool = True
    dtype: Optional[str] = None  # EmoEditor weights: float32 (default), float16, bfloat16
    # what `--methods all` gives the rows that need it
    wo_lemb_model: Optional[str] = None  # "w/o L_emb": a model trained with --lambda_emb 0
    reference_pool: Optional[str] = None  # CT and NST: EmoSet (or a JSON list) to draw style references from
    baseline_weights: str = "pretrained"  # "tiny": the baselines' random-weight tiny components
    # metrics
    metric_size: Optional[int] = IMAGE_SIZE
    metric_batch_size: int = 32
    cam_target: str = "predicted"
    enrd_reduction: str = "image"
    canny_grayscale: bool = True
    # reporting
    bootstrap: int = BOOTSTRAP_RESAMPLES
    ci_level: float = CI_LEVEL
    fig_s11: bool = True
    max_k: Optional[int] = None
    grid: bool = True
    skip_generation: bool = False  # score what is on disk only


@dataclass
class MethodStats:
    jobs: int = 0
    cached: int = 0
    generated: int = 0
    regenerated_corrupt: int = 0  # jobs re-edited because their output, trace or a candidate was damaged
    failed: int = 0
    bad_source: int = 0
    corrupt_output: int = 0
    missing_output: int = 0  # jobs with a readable source but no output at scoring time
    bad_trace: int = 0  # unreadable critic traces, left out of Fig. S11
    bad_candidate: int = 0  # jobs with an unreadable candidate at scoring (--skip_generation), left out of Fig. S11
    scored: int = 0
    scored_cached: int = 0
    candidates_scored: int = 0
    candidates_cached: int = 0
    generation_s: float = 0.0
    scoring_s: float = 0.0
    errors: list = field(default_factory=list)  # first few, for the report
    re_edited: list = field(default_factory=list)  # every job re-edited, with what was damaged


MAX_LISTED_ERRORS = 20
SHOWN_REEDITED = 5  # re-edited jobs named in the printed summary (report.json names all)


# ------------------------------------------------------------------------------------------ jobs

def load_jobs(settings: EvalSettings) -> tuple[list[Job], Path]:
    """The jobs of this run and the folder their relative source paths are under."""
    if settings.source_folder:
        sources = folder_sources(settings.source_folder)
        root = Path(settings.source_folder)
    else:
        if not settings.split:
            raise SplitError("no jobs: pass --split json/test_split.json (scripts/make_test_split.py) "
                             "or --source_folder <images>")
        split = load_split(settings.split)
        root = Path(settings.image_root or split.get("emoset_root") or ".")
        sources = split["sources"]
    sources = subset_sources(sources, settings.per_class)
    jobs = build_jobs(sources, settings.targets, settings.relations)
    if not jobs:
        raise SplitError("no jobs to run: check --relations/--targets against the sources' emotions")
    return jobs, root


def _source_path(job: Job, root: Path) -> Path:
    p = Path(job.source_path)
    return p if p.is_absolute() else root / p


def load_sources(jobs: Sequence[Job], root: Path, size: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every distinct source as uint8 (3, size, size), and the reason each unusable one failed."""
    images, bad = {}, {}
    for job in jobs:
        if job.source_id in images or job.source_id in bad:
            continue
        try:
            images[job.source_id] = load_image(_source_path(job, root), size).mul(255).round().to(torch.uint8)
        except ImageLoadError as exc:
            bad[job.source_id] = str(exc)
    return images, bad


def load_metric_image(path: Path, size: int) -> torch.Tensor:
    """An image as metric_ESMI.py sees it: the file opened and resized to size x size with PIL's
    default filter (bicubic), uint8 (3, size, size). The editors' inputs are resized bilinearly
    (test.py's Resize); the metrics must not reuse those, nor resample an output twice."""
    img = open_image(path)
    if img.size != (size, size):
        img = img.resize((size, size))
    return pil_to_tensor(img).mul(255).round().to(torch.uint8)


def load_metric_sources(jobs: Sequence[Job], root: Path, readable: dict, size: int) -> dict[str, torch.Tensor]:
    """The readable sources as the metrics see them (:func:`load_metric_image`)."""
    paths = {job.source_id: _source_path(job, root) for job in jobs if job.source_id in readable}
    return {sid: load_metric_image(path, size) for sid, path in paths.items()}


def _to01(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 255.0


# ---------------------------------------------------------------------------------- method store

class MethodStore:
    """The on-disk layout of one method's outputs."""

    def __init__(self, out: Path, label: str):
        self.root = Path(out) / label
        self.images, self.traces = self.root / "images", self.root / "traces"
        self.candidates, self.errors = self.root / "candidates", self.root / "errors"
        self.metrics = self.root / "metrics.jsonl"
        self.candidate_metrics = self.root / "candidate_metrics.jsonl"

    def image(self, job_id: str) -> Path:
        return self.images / f"{job_id}.png"

    def trace(self, job_id: str) -> Path:
        return self.traces / f"{job_id}.json"

    def candidate(self, job_id: str, index: int) -> Path:
        return self.candidates / job_id / f"{index:03d}.png"

    def error(self, job_id: str) -> Path:
        return self.errors / f"{job_id}.json"


def _valid_image(path: Path) -> bool:
    try:
        open_image(path)
        return True
    except ImageLoadError:
        return False


def _intact(path: Path) -> bool:
    """A cheap check of a candidate PNG (structure and chunk CRCs, no decoding): there can be 30 per job."""
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001 - PIL reports a damaged file with many exception types
        return False


def damage(store: MethodStore, job: Job, check_candidates: bool) -> Optional[str]:
    """What makes a finished job's files unusable, or None: its output, and (for Fig. S11) its trace
    and every candidate the trace lists. A damaged job is re-edited like a missing one."""
    path = store.image(job.job_id)
    if not _valid_image(path):
        return f"corrupt output {path}"
    trace_path = store.trace(job.job_id)
    if not check_candidates or not trace_path.exists():
        return None
    try:
        files = json.loads(trace_path.read_text()).get("candidate_files") or []
        candidates = [store.root / rel for rel in files]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        return f"unreadable trace {trace_path} ({type(exc).__name__})"
    bad = next((c for c in candidates if not c.is_file() or not _intact(c)), None)
    return None if bad is None else f"{'corrupt' if bad.is_file() else 'missing'} candidate {bad}"


def _atomic_save(image: torch.Tensor, path: Path) -> None:
    atomic_write(path, lambda tmp: save_image(image, tmp))


# ------------------------------------------------------------------------------------ generation

def _check_output(image: torch.Tensor, label: str) -> None:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{label} returned an image of shape {tuple(image.shape)}; expected (3, H, W)")
    if not torch.isfinite(image).all():
        raise ValueError(f"{label} returned an image with NaN or infinite values")


def _save_job(store: MethodStore, job: Job, image: torch.Tensor, trace: Optional[dict],
              candidates: Optional[list[torch.Tensor]]) -> None:
    if candidates is not None:
        for k, cand in enumerate(candidates):
            _atomic_save(cand.detach().float().cpu().clamp(0, 1), store.candidate(job.job_id, k))
    if trace is not None or candidates is not None:
        record = dict(trace or {})
        if candidates is not None:
            record["candidate_files"] = [store.candidate(job.job_id, k).relative_to(store.root).as_posix()
                                         for k in range(len(candidates))]
        record["job"] = asdict(job)
        atomic_write_text(store.trace(job.job_id), json.dumps(plain(record)))
    store.images.mkdir(parents=True, exist_ok=True)
    _atomic_save(image.detach().float().cpu().clamp(0, 1), store.image(job.job_id))  # last: marks the job done
    if store.error(job.job_id).exists():
        store.error(job.job_id).unlink()


def _record_error(store: MethodStore, stats: MethodStats, job: Job, stage: str, message: str) -> None:
    entry = {"job_id": job.job_id, "stage": stage, "error": message}
    atomic_write_text(store.error(job.job_id), json.dumps(entry))
    if len(stats.errors) < MAX_LISTED_ERRORS:
        stats.errors.append(entry)


def _run_chunk(editor, store: MethodStore, stats: MethodStats, chunk: list[Job], sources: dict,
               settings: EvalSettings) -> None:
    images = torch.stack([_to01(sources[j.source_id]) for j in chunk])
    targets = torch.stack([j.target_tensor() for j in chunk])
    gens = [torch.Generator().manual_seed(j.seed(settings.seed)) for j in chunk]
    try:
        result = editor(images, targets, gens)
        if result.images.shape[0] != len(chunk):
            raise ValueError(f"returned {result.images.shape[0]} images for {len(chunk)} inputs")
    except Exception:  # noqa: BLE001 - isolate the job that fails, keep the others
        if len(chunk) > 1:
            for job in chunk:
                _run_chunk(editor, store, stats, [job], sources, settings)
            return
        _record_error(store, stats, chunk[0], "edit", traceback.format_exc(limit=3).strip().splitlines()[-1])
        stats.failed += 1
        return
    for i, job in enumerate(chunk):
        try:
            _check_output(result.images[i], editor.name)
            trace = result.traces[i] if result.traces else None
            _save_job(store, job, result.images[i], trace, result.candidates[i] if result.candidates else None)
            stats.generated += 1
        except Exception as exc:  # noqa: BLE001
            _record_error(store, stats, job, "save", f"{type(exc).__name__}: {exc}")
            stats.failed += 1


def generate(spec: MethodSpec, jobs: Sequence[Job], sources: dict, bad_sources: dict, store: MethodStore,
             settings: EvalSettings, context: MethodContext, rank: int = 0, world: int = 1) -> MethodStats:
    """Edit every job of this process's shard whose output is missing or corrupt."""
    # Shard the full job list, not the missing ones: ranks list the disk at different moments,
    # so only a split fixed in advance gives every job to exactly one process.
    shard = list(jobs[rank::world])
    stats = MethodStats(jobs=len(shard))
    todo = []
    for job in shard:
        path = store.image(job.job_id)
        if job.source_id in bad_sources:
            stats.bad_source += 1
            continue
        problem = damage(store, job, settings.fig_s11) if path.exists() else "missing"
        if problem is None:
            stats.cached += 1
        elif settings.skip_generation:
            continue  # scoring counts and names what is damaged; nothing is deleted or re-edited
        else:
            if path.exists():
                stats.regenerated_corrupt += 1
                stats.re_edited.append({"job_id": job.job_id, "reason": problem})
                path.unlink()
            todo.append(job)
    if not todo or settings.skip_generation:
        return stats
    start = time.perf_counter()
    editor = spec.build(context)  # only built when there is something to do
    chunks = [todo[i:i + settings.chunk_size] for i in range(0, len(todo), settings.chunk_size)]
    with tqdm(total=len(todo), desc=f"edit {spec.label}", disable=rank != 0 or not show_progress()) as bar:
        for chunk in chunks:
            _run_chunk(editor, store, stats, chunk, sources, settings)
            bar.update(len(chunk))
    stats.generation_s = time.perf_counter() - start
    return stats


# --------------------------------------------------------------------------------------- scoring

def metric_key(settings: EvalSettings) -> str:
    return json.dumps({"size": _metric_size(settings), "resize": "pil_default", "cam": settings.cam_target,
                       "enrd": settings.enrd_reduction, "canny": list(CANNY_THRESHOLDS),
                       "grey": settings.canny_grayscale}, sort_keys=True)


def _metric_size(settings: EvalSettings) -> int:
    """Metrics compare images at --metric_size, or at the editors' --image_size when it is None."""
    return settings.metric_size or settings.image_size


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run: that row is recomputed
    return rows


def _score_batch(predictor, items: list[tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]],
                 settings: EvalSettings) -> list[dict]:

    base = [it[0] for it in items]
    src = torch.stack([it[1] for it in items])
    out = torch.stack([it[2] for it in items])
    tgt = torch.stack([it[3] for it in items])
    m = compute_all(predictor, src, out, tgt, size=settings.metric_size, cam_target=settings.cam_target,
                    enrd_reduction=settings.enrd_reduction, canny_grayscale=settings.canny_grayscale)
    rows = []
    for i, row in enumerate(base):
        probs = m["probs_out"][i]
        support = tgt[i] > 0
        rows.append({**row, "emr": bool(m["emr"][i]), "esr": bool(m["esr"][i]), "enrd": float(m["enrd"][i]),
                     "ess": float(m["ess"][i]), "esmi": float(m["esmi"][i]), "s_str": float(m["s_str"][i]),
                     "s_emo": float(m["s_emo"][i]), "kl_src": float(m["kl_src"][i]), "kl_out": float(m["kl_out"][i]),
                     "pred_src": EMOTIONS[int(m["probs_src"][i].argmax())], "pred_out": EMOTIONS[int(probs.argmax())],
                     "target_conf_out": float(probs[support].sum()),
                     # P's full distributions, for analyses beyond the five metrics
                     "probs_src": [round(float(x), 6) for x in m["probs_src"][i]],
                     "probs_out": [round(float(x), 6) for x in probs]})
    return rows


def _score_items(predictor, items, settings: EvalSettings, cache_path: Path, desc: str) -> list[dict]:
    """Score (row, src, out, target) items in batches, appending each batch to the cache as it is done."""
    rows = []
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with cache_path.open("a") as cache, tqdm(total=len(items), desc=desc, leave=False,
                                             disable=not show_progress()) as bar:
        for i in range(0, len(items), settings.metric_batch_size):
            batch = _score_batch(predictor, items[i:i + settings.metric_batch_size], settings)
            for r in batch:
                cache.write(json.dumps(r) + "\n")
            cache.flush()
            rows += batch
            bar.update(len(batch))
    return rows


def _job_fields(job: Job, method: str) -> dict:
    return {"method": method, "job_id": job.job_id, "source_id": job.source_id,
            "source_emotion": job.source_emotion, "target_name": job.target_name, "relation": job.relation}


def score(spec: MethodSpec, jobs: Sequence[Job], sources: dict, store: MethodStore, predictor,
          settings: EvalSettings, stats: MethodStats) -> list[dict]:
    """Per-job metric rows for every job with a readable output (cached by output hash).

    ``sources`` are uint8 at the metric size (:func:`load_metric_sources`); each output file is
    read the same way, so the metrics see what metric_ESMI.py sees."""
    start = time.perf_counter()
    key = metric_key(settings)
    cached = {r["job_id"]: r for r in _read_jsonl(store.metrics) if r.get("metric_key") == key}
    rows, todo = [], []
    for job in jobs:
        path = store.image(job.job_id)
        if job.source_id not in sources:
            continue
        if not path.exists():
            stats.missing_output += 1  # the method failed on it (now or in an earlier run) or was skipped
            continue
        sha = sha256sum(path)
        hit = cached.get(job.job_id)
        if hit is not None and hit.get("output_sha256") == sha:
            rows.append(hit)
            stats.scored_cached += 1
            continue
        try:
            out = _to01(load_metric_image(path, _metric_size(settings)))
        except ImageLoadError as exc:
            stats.corrupt_output += 1
            if len(stats.errors) < MAX_LISTED_ERRORS:
                stats.errors.append({"job_id": job.job_id, "stage": "score", "error": str(exc)})
            continue
        base = {**_job_fields(job, spec.label), **_trace_summary(store, job), "output_sha256": sha, "metric_key": key}
        todo.append((base, _to01(sources[job.source_id]), out, job.target_tensor()))
    if todo:
        new = _score_items(predictor, todo, settings, store.metrics, f"metrics {spec.label}")
        rows += new
        stats.scored += len(new)
    # compact the cache to one row per job
    order = {j.job_id: i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[r["job_id"]])
    if todo or len(cached) != len(rows):
        atomic_write_text(store.metrics, "".join(json.dumps(r) + "\n" for r in rows))
    stats.scoring_s += time.perf_counter() - start
    return rows


def _trace_summary(store: MethodStore, job: Job) -> dict:
    path = store.trace(job.job_id)
    if not path.exists():
        return {"iterations": "", "accepted": ""}
    try:
        trace = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"iterations": "", "accepted": ""}
    return {"iterations": len(trace.get("iterations", [])), "accepted": trace.get("accepted", "")}


# ---------------------------------------------------------------------- iteration ablation (S11)

def returned_at(trace: dict, k: int) -> CriticResult:
    """What the critic would have returned with at most `k` iterations (its `index` is SOURCE_INDEX
    for the source). Exact: the first k iterations of a longer run are the same edits."""
    return replay(trace, min(k, trace["thresholds"]["num_loop"])).result()


def iteration_curves(spec: MethodSpec, jobs: Sequence[Job], sources: dict, store: MethodStore, predictor,
                     settings: EvalSettings, stats: MethodStats) -> list[dict]:
    """Fig. S11 rows (method, relation, k, metrics) from the kept candidates of one run."""

    traces = {}
    for job in jobs:
        path = store.trace(job.job_id)
        if job.source_id not in sources or not path.exists() or not store.image(job.job_id).exists():
            continue
        try:
            trace = json.loads(path.read_text())
            if trace.get("critic") in (None, "none") or not trace.get("candidate_files"):
                continue
            int(trace["thresholds"]["num_loop"]), len(trace["iterations"])  # what the replay needs
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            stats.bad_trace += 1  # left out of Fig. S11 only; the job's final output is still scored
            if len(stats.errors) < MAX_LISTED_ERRORS:
                stats.errors.append({"job_id": job.job_id, "stage": "fig_s11",
                                     "error": f"unreadable trace {path}: {type(exc).__name__}: {exc}"})
            continue
        traces[job.job_id] = (job, trace)
    if not traces:
        return []
    start = time.perf_counter()
    max_k = settings.max_k or max(t["thresholds"]["num_loop"] for _, t in traces.values())
    picks: dict[str, list[CriticResult]] = {}
    mismatches = 0
    for job_id, (_job, trace) in traces.items():
        picks[job_id] = [returned_at(trace, k) for k in range(1, max_k + 1)]
        if max_k >= trace["thresholds"]["num_loop"] and picks[job_id][-1].index != trace["returned"]:
            mismatches += 1
    if mismatches:
        stats.errors.append({"stage": "fig_s11", "error": f"{mismatches} traces replay to a different final pick"})

    key = metric_key(settings)
    cache = {(r["job_id"], r["candidate"]): r for r in _read_jsonl(store.candidate_metrics)
             if r.get("metric_key") == key}
    scored: dict[tuple[str, int], dict] = {}
    todo = []
    broken: set[str] = set()  # jobs with an unreadable candidate: out of every k, so each point has the same jobs
    for job_id, (job, trace) in traces.items():
        for idx in sorted({pick.index for pick in picks[job_id]}):
            path = store.root / trace["candidate_files"][idx] if idx != SOURCE_INDEX else None
            if path is not None and not path.is_file():
                broken.add(job_id)
                _name_bad_candidate(stats, job_id, f"missing candidate {path}")
                break
            sha = sha256sum(path) if path is not None else "source"
            hit = cache.get((job_id, idx))
            if hit is not None and hit.get("output_sha256") == sha:
                scored[(job_id, idx)] = hit
                stats.candidates_cached += 1
                continue
            if path is None:
                out = _to01(sources[job.source_id])
            else:
                try:
                    out = _to01(load_metric_image(path, _metric_size(settings)))
                except ImageLoadError as exc:
                    broken.add(job_id)
                    _name_bad_candidate(stats, job_id, f"corrupt candidate {path}: {exc}")
                    break
            base = {**_job_fields(job, spec.label), "candidate": idx, "output_sha256": sha, "metric_key": key}
            todo.append((base, _to01(sources[job.source_id]), out, job.target_tensor()))
    todo = [item for item in todo if item[0]["job_id"] not in broken]
    traces = {job_id: entry for job_id, entry in traces.items() if job_id not in broken}
    if todo:
        for r in _score_items(predictor, todo, settings, store.candidate_metrics, f"Fig. S11 {spec.label}"):
            scored[(r["job_id"], r["candidate"])] = r
        stats.candidates_scored += len(todo)
        atomic_write_text(store.candidate_metrics, "".join(json.dumps(r) + "\n" for r in scored.values()))

    curves = []
    for rel in sorted({job.relation for job, _ in traces.values()}):
        ids = [j for j, (job, _) in traces.items() if job.relation == rel]
        for k in range(1, max_k + 1):
            rows = [scored[(j, picks[j][k - 1].index)] for j in ids if (j, picks[j][k - 1].index) in scored]
            if not rows:
                continue
            entry = {"method": spec.label, "relation": rel, "k": k, "n": len(rows)}
            for col, name, scale in METRICS:
                entry[col] = float(np.mean([float(r[name]) for r in rows])) * scale
            entry["accepted_share"] = float(np.mean([picks[j][k - 1].accepted for j in ids]))
            curves.append(entry)
    stats.scoring_s += time.perf_counter() - start
    return curves


def _name_bad_candidate(stats: MethodStats, job_id: str, error: str) -> None:
    stats.bad_candidate += 1
    if len(stats.errors) < MAX_LISTED_ERRORS:
        stats.errors.append({"job_id": job_id, "stage": "fig_s11", "error": f"{error}; the job is left out of "
                                                                           f"Fig. S11 (rerun without "
                                                                           f"--skip_generation to re-edit it)"})


# ---------------------------------------------------------------------------------------- report

def _example_grid(spec: MethodSpec, jobs: Sequence[Job], sources: dict, store: MethodStore,
                  out: Path) -> Optional[Path]:

    by_source: dict[str, list[Job]] = {}
    for job in jobs:
        if job.target_name in EMOTIONS and job.source_id in sources and store.image(job.job_id).exists():
            by_source.setdefault(job.source_id, []).append(job)
    chosen: dict[str, str] = {}
    for sid, js in sorted(by_source.items(), key=lambda kv: (-len(kv[1]), kv[0])):  # most complete first
        emo = js[0].source_emotion
        if emo in EMOTIONS and emo not in chosen:
            chosen[emo] = sid
    if not chosen:
        return None
    srcs, edits = {}, {}
    for emo, sid in chosen.items():
        srcs[emo] = sources[sid].permute(1, 2, 0).numpy()
        for job in by_source[sid]:
            try:
                edits[(emo, job.target_name)] = np.asarray(open_image(store.image(job.job_id)))
            except ImageLoadError:
                continue
    return example_grid(srcs, edits, out / f"grid_{spec.label}.png", title=spec.label)


def write_report(specs: Sequence[MethodSpec], rows: list[dict], curves: list[dict], jobs: Sequence[Job],
                 sources: dict, all_stats: dict[str, MethodStats], bad_sources: dict, settings: EvalSettings) -> dict:

    out = Path(settings.out)
    labels = [s.label for s in specs]
    paper_rows = {s.label: s.paper_row for s in specs}
    files = [write_csv(rows, out / "results.csv")]
    present = [r for r in RELATIONS if any(x["relation"] == r for x in rows)]
    present += sorted({x["relation"] for x in rows} - set(RELATIONS))
    names = {"cross": "cross-valence (paper Table 1)", "within": "within-valence"}
    summaries = {}
    for rel in present:
        summary = table_rows(rows, labels, paper_rows if rel == "cross" else {}, rel, settings.bootstrap,
                             settings.ci_level, settings.seed)
        summaries[rel] = summary
        files += write_table(summary, out / f"table1_{rel}", f"Table 1, {names.get(rel, rel)}", settings.ci_level)
    if summaries:
        main_rel = "cross" if "cross" in summaries else present[0]
        files.append(plot_bars(summaries[main_rel], out / "bars.png", f"{names.get(main_rel, main_rel)}"))
    files.append(write_csv(per_emotion(rows, labels, seed=settings.seed), out / "per_emotion.csv"))
    if settings.grid:
        for spec in specs:
            path = _example_grid(spec, jobs, sources, MethodStore(out, spec.label), out)
            if path is not None:
                files.append(path)
    if curves:
        files.append(write_csv(curves, out / "fig_s11.csv"))
        files.append(plot_iteration_curves(curves, out / "fig_s11.png"))
    report = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "num_jobs": len(jobs),
        "bad_sources": bad_sources,
        "methods": {label: {**asdict(st), "seconds_per_image": seconds_per_image(st)}
                    for label, st in all_stats.items()},
        "files": [str(Path(f).relative_to(out)) for f in files],
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    return report


def _merge_shard_stats(store: MethodStore, stats: MethodStats, rank: int, world: int, state) -> MethodStats:
    """Sum every process's generation counts (written next to the outputs) on rank 0."""
    if world == 1:
        return stats
    atomic_write_text(store.root / f".stats_rank{rank}.json", json.dumps(asdict(stats)))
    state.wait_for_everyone()
    if rank != 0:
        return stats
    total = MethodStats()
    for r in range(world):
        part = json.loads((store.root / f".stats_rank{r}.json").read_text())
        for key, value in part.items():
            if key == "errors":
                total.errors += value[:MAX_LISTED_ERRORS - len(total.errors)]
            elif key == "generation_s":
                total.generation_s = max(total.generation_s, value)  # wall time: the slowest process
            else:
                setattr(total, key, getattr(total, key) + value)
    return total


def run_evaluation(settings: EvalSettings) -> dict:
    """Edit, score and report every method of `settings`; returns the report (also in report.json)."""
    from accelerate import PartialState

    # Everything that can be wrong with the flags is checked before any work: the methods and their
    # options, the output folder, the jobs, each method's files, the predictor.
    specs = parse_methods(expand_all(settings.methods, settings.wo_lemb_model, settings.reference_pool,
                                     settings.baseline_weights))
    check_writable({"--out": settings.out})
    if settings.predictor is None:
        raise EmoEditorError("--predictor is required: the metrics (and EmoEditor's critic) need the emotion "
                             "predictor P (emo_predictor/)")
    state = PartialState(cpu=settings.device == "cpu")
    device = torch.device(settings.device) if settings.device else state.device
    rank, world = state.process_index, state.num_processes
    context = MethodContext(device=device, model=settings.model, predictor=settings.predictor,
                            critic=settings.critic, num_loop=settings.num_loop,
                            num_inference_steps=settings.num_inference_steps, batch_size=settings.batch_size,
                            return_candidates=settings.return_candidates,
                            extra={"dtype": settings.dtype, "out": settings.out})
    jobs, root = load_jobs(settings)
    for spec in specs:
        spec.check(context)
    predictor = load_predictor(settings.predictor, device=device)  # fail before hours of editing, not after
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    sources, bad_sources = load_sources(jobs, root, settings.image_size)
    if not sources:
        raise SplitError(f"none of the {len(jobs)} jobs' source images could be read under {root} "
                         f"(first problem: {next(iter(bad_sources.values()))}); check --image_root")
    all_stats = {}
    for spec in specs:
        store = MethodStore(out, spec.label)
        store.root.mkdir(parents=True, exist_ok=True)
        stats = generate(spec, jobs, sources, bad_sources, store, settings, context, rank, world)
        all_stats[spec.label] = _merge_shard_stats(store, stats, rank, world, state)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    rows, curves = [], []
    metric_sources = load_metric_sources(jobs, root, sources, _metric_size(settings))
    for spec in specs:
        store, stats = MethodStore(out, spec.label), all_stats[spec.label]
        rows += score(spec, jobs, metric_sources, store, predictor, settings, stats)
        if settings.fig_s11:
            curves += iteration_curves(spec, jobs, metric_sources, store, predictor, settings, stats)
    return write_report(specs, rows, curves, jobs, sources, all_stats, bad_sources, settings)


def seconds_per_image(stats: MethodStats) -> Optional[float]:
    """Wall seconds per edited job of this run (None when everything came from the cache)."""
    return round(stats.generation_s / stats.generated, 4) if stats.generated else None


def format_summary(report: dict) -> str:
    lines = [f"{report['num_jobs']} jobs; {len(report['bad_sources'])} unreadable/missing source images"]
    for label, st in report["methods"].items():
        per_image = "" if st.get("seconds_per_image") is None else f" ({st['seconds_per_image']:.2f} s/image)"
        lines.append(f"  {label}: {st['generated']} edited, {st['cached']} cached, {st['failed']} failed, "
                     f"{st['regenerated_corrupt']} damaged jobs re-edited, {st['corrupt_output']} unreadable and "
                     f"{st['missing_output']} missing at scoring, {st['bad_trace']} unreadable traces, "
                     f"{st.get('bad_candidate', 0)} jobs with unreadable candidates, "
                     f"{st['scored']} scored ({st['scored_cached']} cached), "
                     f"edit {st['generation_s']:.1f}s{per_image}, metrics {st['scoring_s']:.1f}s")
        for entry in st.get("re_edited", [])[:SHOWN_REEDITED]:
            lines.append(f"    re-edited {entry['job_id']}: {entry['reason']}")
        if len(st.get("re_edited", [])) > SHOWN_REEDITED:
            lines.append(f"    ... {len(st['re_edited']) - SHOWN_REEDITED} more in report.json")
    lines.append("wrote: " + ", ".join(report["files"]))
    return "\n".join(lines)
