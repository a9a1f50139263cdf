"""The study's analysis: exclusion by dummy trials, preference for EmoEditor with standard errors and a
binomial test against 50% (Fig. 5), split by target valence (Fig. S7), source x target matrices (Fig. S8).

Input rows are one answered trial each, in canonical columns (:data:`COLUMNS`): our SQLite file, our CSV
export (/admin/export.csv), or any CSV whose columns (and values) can be mapped onto them, such as the
paper's released raw data (see README.md, "Analysis").
"""

from __future__ import annotations

import csv
import math
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy.stats import binomtest

from apps.study import StudyError
from apps.study.db import EXPORT_SQL
from apps.study.plan import OURS
from emoeditor.constants import EMOTIONS, NEGATIVE, POSITIVE
from emoeditor.evaluation.reporting import pyplot, save_figure, write_csv

COLUMNS = ("participant_id", "kind", "baseline", "source_emotion", "target", "chose_ours", "correct")
KINDS = ("real", "dummy")
MAX_DUMMY_ERRORS = 1  # Supp. S2.4: at most one wrong answer in the 6 dummy trials
TRANSITIONS = ("all", "to_positive", "to_negative")  # Fig. S7's rows
ALL = "all"  # every baseline pooled
MATRIX_ORDER = (*POSITIVE, *NEGATIVE)  # Fig. S8's axes: valence blocks, so cross-valence cells form two quadrants
TRUE, FALSE = {"1", "true", "yes", "t", "y"}, {"0", "false", "no", "f", "n"}


def _flag(value, column: str, where: str) -> Optional[bool]:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise StudyError(f"{where}: column {column!r} holds {value!r}; expected 1/0 or true/false "
                     f"(map other values with --values)")


def canonical(raw: Mapping, where: str, columns: Mapping[str, str], values: Mapping[str, str],
              ours: str) -> dict:
    """One input row in canonical columns: renamed, values mapped, flags parsed.

    Without a `chose_ours` column, a `chosen` column naming the picked method gives it (== `ours`)."""
    def get(name):
        value = raw.get(columns.get(name, name))
        return values.get(value, value) if isinstance(value, str) else value

    row = {c: get(c) for c in COLUMNS}
    row.update({c: None for c in ("baseline", "source_emotion", "target") if row[c] == ""})  # CSV's empty cells
    if row["chose_ours"] is None and get("chosen") not in (None, ""):
        row["chose_ours"] = "1" if get("chosen") == ours else "0"
    if row["kind"] not in KINDS:
        raise StudyError(f"{where}: kind {row['kind']!r}; expected one of {KINDS} (map it with --values)")
    row["chose_ours"] = _flag(row["chose_ours"], "chose_ours", where)
    row["correct"] = _flag(row["correct"], "correct", where)
    if row["participant_id"] in (None, ""):
        raise StudyError(f"{where}: no participant id (map the column with --columns participant_id=NAME)")
    missing = [c for c in (("baseline", "target", "source_emotion", "chose_ours") if row["kind"] == "real"
                           else ("correct",)) if row[c] in (None, "")]
    if missing:
        raise StudyError(f"{where}: {row['kind']} trial without {missing} (map the columns with --columns)")
    for c in ("target", "source_emotion"):
        if row["kind"] == "real" and row[c] not in EMOTIONS:
            raise StudyError(f"{where}: {c} {row[c]!r} is not one of {EMOTIONS} (map it with --values)")
    return row


def read_responses(path: str | Path, columns: Optional[Mapping[str, str]] = None,
                   values: Optional[Mapping[str, str]] = None, ours: str = OURS) -> list[dict]:
    """Canonical rows from a study SQLite file (.sqlite/.db) or a CSV (our export or a mapped one)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"responses file {path} not found: pass the server's --db file or a CSV export")
    columns, values = dict(columns or {}), dict(values or {})
    if path.suffix.lower() in (".sqlite", ".sqlite3", ".db"):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            cur = con.execute(EXPORT_SQL)
            names = [c[0] for c in cur.description]
            raws = [dict(zip(names, (None if v is None else str(v) for v in r))) for r in cur]
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{path}: not a study database ({exc})") from exc
        finally:
            con.close()
    else:
        with path.open(newline="", encoding="utf-8-sig") as f:
            raws = list(csv.DictReader(f))
    return [canonical(r, f"{path} row {i + 1}", columns, values, ours) for i, r in enumerate(raws)]


def exclude(rows: Sequence[dict], max_dummy_errors: int = MAX_DUMMY_ERRORS) -> tuple[list[dict], dict]:
    """The real trials of participants with at most `max_dummy_errors` wrong dummies, and who was excluded."""
    errors, dummies = defaultdict(int), defaultdict(int)
    for r in rows:
        if r["kind"] == "dummy":
            dummies[r["participant_id"]] += 1
            errors[r["participant_id"]] += not r["correct"]
    participants = list(dict.fromkeys(r["participant_id"] for r in rows))
    excluded = [p for p in participants if errors[p] > max_dummy_errors]
    kept = [r for r in rows if r["kind"] == "real" and r["participant_id"] not in set(excluded)]
    info = {"participants": len(participants), "excluded": excluded,
            "kept_participants": len(participants) - len(excluded), "max_dummy_errors": max_dummy_errors,
            "real_trials_kept": len(kept), "dummy_errors": {p: errors[p] for p in participants},
            "dummy_trials": {p: dummies[p] for p in participants}}
    return kept, info


def preference(rows: Sequence[dict]) -> dict:
    """How often EmoEditor was chosen: proportion, its binomial standard error sqrt(p(1-p)/n), the SE across
    participants' own proportions, and the two-sided binomial test against 50%."""
    n = len(rows)
    k = sum(bool(r["chose_ours"]) for r in rows)
    if n == 0:  # None, not NaN: summary.json stays strict JSON
        return {"n": 0, "k": 0, "p": None, "se": None, "se_participants": None, "binom_p": None, "participants": 0}
    p = k / n
    per = defaultdict(list)
    for r in rows:
        per[r["participant_id"]].append(bool(r["chose_ours"]))
    props = np.array([np.mean(v) for v in per.values()])
    se_part = float(props.std(ddof=1) / math.sqrt(len(props))) if len(props) > 1 else None
    return {"n": n, "k": k, "p": p, "se": math.sqrt(p * (1 - p) / n), "se_participants": se_part,
            "binom_p": float(binomtest(k, n, 0.5).pvalue), "participants": len(props)}


def transition(row: dict) -> str:
    return "to_positive" if row["target"] in POSITIVE else "to_negative"


def preference_table(rows: Sequence[dict], baselines: Sequence[str]) -> list[dict]:
    """Fig. 5 (transition "all") and Fig. S7 (to_positive, to_negative): one row per (transition, baseline)."""
    table = []
    for tr in TRANSITIONS:
        sub = [r for r in rows if tr == ALL or transition(r) == tr]
        for b in (ALL, *baselines):
            table.append({"transition": tr, "baseline": b,
                          **preference([r for r in sub if b == ALL or r["baseline"] == b])})
    return table


def matrices(rows: Sequence[dict], baselines: Sequence[str]) -> dict[str, dict]:
    """Fig. S8: for all baselines pooled and each one, P(EmoEditor chosen) per (source, target) and its n;
    rows (sources) and columns (targets) in MATRIX_ORDER."""
    out = {}
    index = {e: i for i, e in enumerate(MATRIX_ORDER)}
    for b in (ALL, *baselines):
        k, n = np.zeros((len(MATRIX_ORDER),) * 2), np.zeros((len(MATRIX_ORDER),) * 2, dtype=int)
        for r in rows:
            if b == ALL or r["baseline"] == b:
                i, j = index[r["source_emotion"]], index[r["target"]]
                n[i, j] += 1
                k[i, j] += bool(r["chose_ours"])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b] = {"p": np.where(n > 0, k / np.maximum(n, 1), np.nan), "n": n}
    return out


def plot_preferences(table: Sequence[dict], baselines: Sequence[str], path: Path, transitions: Sequence[str],
                     se: str = "se") -> Path:
    """Bars of P(EmoEditor preferred) per baseline with standard-error bars and chance (red dashed), one
    panel per transition (Fig. 5 is the "all" panel, Fig. S7 all three)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(transitions), 1, figsize=(1.2 * len(baselines) + 2.5, 2.8 * len(transitions)),
                             squeeze=False)
    x = np.arange(len(baselines))
    for ax, tr in zip(axes[:, 0], transitions):
        rows = {r["baseline"]: r for r in table if r["transition"] == tr}
        p = np.array([rows[b]["p"] for b in baselines], dtype=float)
        err = np.nan_to_num(np.array([rows[b][se] for b in baselines], dtype=float))
        ax.bar(x, np.nan_to_num(p), yerr=err, capsize=4, color="tab:blue", alpha=0.85)
        ax.axhline(0.5, color="red", linestyle="--", linewidth=1)
        ax.set_xticks(x, list(baselines))
        ax.set_ylim(0, 1)
        ax.set_ylabel("EmoEditor preferred")
        ax.set_title({"all": "all trials", "to_positive": "to positive", "to_negative": "to negative"}[tr])
    fig.tight_layout()
    return save_figure(fig, path)


def plot_matrices(mats: Mapping[str, dict], path: Path) -> Path:
    """Fig. S8: one source x target matrix per comparison, mean preference in each title."""
    plt = pyplot()
    names = list(mats)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        p, n = mats[name]["p"], mats[name]["n"]
        im = ax.imshow(p, vmin=0, vmax=1, cmap="coolwarm")
        for i, j in zip(*np.nonzero(n)):
            ax.text(j, i, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=6)
        mean = float((np.nan_to_num(p) * n).sum() / n.sum()) if n.sum() else math.nan
        ax.set_title(f"ours vs {name}: {mean:.2f}")
        ax.set_xticks(range(len(MATRIX_ORDER)), MATRIX_ORDER, rotation=90, fontsize=7)
        ax.set_yticks(range(len(MATRIX_ORDER)), MATRIX_ORDER, fontsize=7)
        ax.set_xlabel("target")
        ax.set_ylabel("source")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6)
    return save_figure(fig, path)


def analyse(rows: Sequence[dict], out: str | Path, max_dummy_errors: int = MAX_DUMMY_ERRORS,
            se: str = "se") -> dict:
    """Exclusion, tables and plots into `out`; returns the summary (also out/summary.json's content)."""
    out = Path(out)
    kept, info = exclude(rows, max_dummy_errors)
    if not kept:
        raise StudyError(f"no real trials left after excluding {len(info['excluded'])} of "
                         f"{info['participants']} participants (> {max_dummy_errors} wrong dummies)")
    baselines = list(dict.fromkeys(r["baseline"] for r in kept))
    table = preference_table(kept, baselines)
    mats = matrices(kept, baselines)
    files = [write_csv(table, out / "preference.csv")]
    cells = [{"comparison": b, "source": s, "target": t, "n": int(m["n"][i, j]), "p": float(m["p"][i, j])}
             for b, m in mats.items() for i, s in enumerate(MATRIX_ORDER) for j, t in enumerate(MATRIX_ORDER)
             if m["n"][i, j]]
    files.append(write_csv(cells, out / "matrices.csv"))
    files.append(plot_preferences(table, baselines, out / "fig5.png", ["all"], se))
    files.append(plot_preferences(table, baselines, out / "fig_s7.png", TRANSITIONS, se))
    files.append(plot_matrices(mats, out / "fig_s8.png"))
    return {"exclusion": info, "baselines": baselines, "preference": table, "error_bars": se,
            "files": [str(f) for f in files]}
