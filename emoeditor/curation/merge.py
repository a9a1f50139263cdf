"""The merge: shards -> one deduplicated, validated EmoPair annotation file, its statistics and provenance.

Shards are refused (EmoEditorError naming the file) when their header's digests differ from the
predictor, threshold set or instruction bank the merge was given, when their stage settings differ
from the other shards', or when a shard of the set is missing. Entries are validated with the
training validator (emoeditor.data.emopair), so what the merge writes is what train.py accepts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from emoeditor.curation.filters import EPGS_FILTERS, EpasRule, epas_counts
from emoeditor.curation.shards import SHARD_GLOB, read_shard
from emoeditor.data.emopair import validate_entries
from emoeditor.errors import EmoEditorError
from emoeditor.fileio import atomic_write, atomic_write_text, plain, sha256sum
from emoeditor.logs import show_progress

logger = logging.getLogger(__name__)

CONSISTENT = ("num_shards", "settings", "source")  # must agree across a stage's shards (not known to the merge)
MAX_NAMED = 50  # corrupt inputs and invalid entries listed by name in the report


def load_stage(work_dir: str | Path, allow_missing: bool = False) -> list[tuple[Path, dict]]:
    """The shard files of one work folder, all of one stage and one shard count, and (unless allowed) complete."""
    work_dir = Path(work_dir)
    paths = sorted(work_dir.glob(SHARD_GLOB))
    if not paths:
        raise EmoEditorError(f"no shard files ({SHARD_GLOB}) in {work_dir}; run the epas or epgs step first")
    shards = [(p, read_shard(p)) for p in paths]
    first_path, first = shards[0][0], shards[0][1]["header"]
    for path, data in shards[1:]:
        header = data["header"]
        for key in ("stage", *CONSISTENT):
            if header.get(key) != first.get(key):
                raise EmoEditorError(f"shard {path} was written with another {key} than {first_path} "
                                     f"({header.get(key)!r} vs {first.get(key)!r}); rerun it with the same "
                                     f"settings or move it out of {work_dir}")
    found = {data["header"]["shard_id"] for _, data in shards}
    missing = sorted(set(range(first["num_shards"])) - found)
    if missing and not allow_missing:
        raise EmoEditorError(f"{work_dir}: {len(missing)} of {first['num_shards']} shards not finished (first: "
                             f"{missing[:10]}); run them (--shard_id ...) or pass --allow_missing to merge the rest")
    return shards


def check_digests(shards: Sequence[tuple[Path, dict]], expected: dict[str, str]) -> None:
    """Refuse a shard whose predictor / thresholds / bank digest is not the one the merge was given."""
    for path, data in shards:
        digests = data["header"].get("digests", {})
        for key, want in expected.items():
            if digests.get(key) != want:
                values = data["header"].get("thresholds") if key == "thresholds" else digests.get(key)
                raise EmoEditorError(
                    f"shard {path} was written with another {key} ({str(values)[:80]}; digest "
                    f"{str(digests.get(key))[:12]} vs {want[:12]} for the merge's flags): the merge refuses to mix "
                    f"it in; rerun that shard with these settings, or merge with the flags it was written with")


def collect(stages: dict[str, list[tuple[Path, dict]]], rule: Optional[EpasRule] = None) -> dict:
    """Counts over every record (not only the kept ones): the statistics report minus the entries' own."""
    report: dict = {}
    for stage, shards in stages.items():
        records = [r for _, data in shards for r in data["records"]]
        corrupt = [c for _, data in shards for c in data["corrupt"]]
        part = {"shards": len(shards), "num_shards": shards[0][1]["header"]["num_shards"],
                "candidates": len(records), "kept": sum(r["kept"] for r in records),
                "corrupt_inputs": len(corrupt), "corrupt_named": corrupt[:MAX_NAMED]}
        if stage == "epas":
            part["kept_under_each_rule"] = epas_counts(records, rule or EpasRule())
        else:
            part["rejected_by_filter"] = {name: sum(name in r["rejected_by"] for r in records)
                                          for name in EPGS_FILTERS}
            part["rejected_by_filter_only"] = {name: sum(r["rejected_by"] == [name] for r in records)
                                               for name in EPGS_FILTERS}
        report[stage] = part
    return report


def entry_stats(entries: Sequence[dict]) -> dict:
    return {"entries": len(entries),
            "per_class_source": dict(sorted(Counter(e["class_source"] for e in entries).items())),
            "per_class_target": dict(sorted(Counter(e["class_target"] for e in entries).items())),
            "per_transition": dict(sorted(Counter(f"{e['class_source']} to {e['class_target']}"
                                                  for e in entries).items()))}


def histogram(stages: dict[str, list[tuple[Path, dict]]], path: Path) -> Optional[Path]:
    """SSIM / LPIPS / target confidence of every EPGS candidate, P's target confidence for EPAS pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for stage, shards in stages.items():
        records = [r for _, data in shards for r in data["records"]]
        if stage == "epgs" and records:
            thresholds = shards[0][1]["header"]["thresholds"]
            panels += [("EPGS SSIM", [r["scores"]["ssim"] for r in records],
                        (thresholds["ssim_low"], thresholds["ssim_high"])),
                       ("EPGS LPIPS", [r["scores"]["lpips"] for r in records], (thresholds["lpips_min"],)),
                       ("EPGS P(target)", [r["scores"]["confidence"] for r in records], (thresholds["confidence"],))]
        elif stage == "epas" and records:
            panels.append(("EPAS P top-1 on target", [r["scores"]["confidence_target"] for r in records], ()))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (title, values, lines) in zip(axes[0], panels):
        ax.hist(values, bins=30, color="#4c72b0")
        for x in lines:
            ax.axvline(x, color="#c44e52", linestyle="--")
        ax.set_title(f"{title} (n={len(values)})")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return path


def write_annotations(entries: Sequence[dict], path: Path) -> Path:
    """One entry per line (as the toy writer): readable, greppable and diff-friendly."""
    return atomic_write_text(path, "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")


def merge(work_dirs: Sequence[str | Path], data_root: str | Path, out_json: str | Path,
          expected: dict[str, dict[str, str]], rule: Optional[EpasRule] = None, check_images: str = "header",
          allow_missing: bool = False, command: Optional[list[str]] = None) -> dict:
    """Merge the shards of `work_dirs` (one stage each); `expected[stage]` maps digest names to the merge's own.

    Writes `out_json`, ``<stem>_stats.json``, ``<stem>_hist.png`` and ``<stem>_provenance.json`` beside it;
    returns the statistics report.
    """
    out_json = Path(out_json)
    stages: dict[str, list[tuple[Path, dict]]] = {}
    for work_dir in work_dirs:
        shards = load_stage(work_dir, allow_missing)
        stage = shards[0][1]["header"]["stage"]
        if stage in stages:
            raise EmoEditorError(f"two work folders hold {stage} shards ({work_dir} and an earlier one); merge one "
                                 f"folder per stage")
        check_digests(shards, expected.get(stage, {}))
        stages[stage] = shards
    report = collect(stages, rule)
    entries, seen, duplicates = [], set(), 0
    for stage in sorted(stages):
        records = sorted((r for _, data in stages[stage] for r in data["records"] if r["kept"]), key=lambda r: r["id"])
        for record in records:
            key = (record["entry"]["img_src_path"], record["entry"]["img_tgt_path"])
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            entries.append(record["entry"])
    good, problems = validate_entries(entries, data_root, check_images=check_images, progress=show_progress())
    for problem in problems[:5]:
        logger.warning("dropped an entry the training validator rejects: %s", problem)
    report.update(duplicates_dropped=duplicates, invalid_dropped=len(problems), invalid_named=problems[:MAX_NAMED],
                  **entry_stats(good))
    write_annotations(good, out_json)
    stem = out_json.with_suffix("")
    report["histogram"] = str(histogram(stages, Path(f"{stem}_hist.png")))
    atomic_write_text(Path(f"{stem}_stats.json"), json.dumps(plain(report), indent=1) + "\n")
    provenance = {"annotation": str(out_json), "sha256": sha256sum(out_json), "data_root": str(data_root),
                  "command": command, "stages": {stage: {"work_dir": str(shards[0][0].parent),
                                                         **{k: v for k, v in shards[0][1]["header"].items()
                                                            if k not in ("shard_id", "stage")}}
                                                 for stage, shards in stages.items()},
                  "versions": versions()}
    atomic_write_text(Path(f"{stem}_provenance.json"), json.dumps(plain(provenance), indent=1) + "\n")
    logger.info("wrote %d entries to %s (%d duplicates, %d invalid dropped)", len(good), out_json, duplicates,
                len(problems))
    return report


def versions() -> dict:
    import importlib.metadata as metadata

    found = {}
    for package in ("emoeditor", "torch", "diffusers", "transformers", "lpips", "pyarrow"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
