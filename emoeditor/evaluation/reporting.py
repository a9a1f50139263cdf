"""Tables, confidence intervals and plots of an evaluation run (Table 1, per emotion, Fig. S11).

Inputs are plain per-job rows (dicts with the per-sample metrics ``emr``, ``esr``, ``enrd``,
``ess``, ``esmi``), so every number in a table can be recomputed from ``results.csv`` alone.
The bootstrap 95% intervals are beyond the paper: they tell whether two rows differ by more
than the 504-image test set can resolve. Matplotlib runs with the Agg backend (no display).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from emoeditor.constants import BOOTSTRAP_RESAMPLES, CI_LEVEL, EMOTIONS, PAPER_METRICS, PAPER_TABLE1

# (column, per-job key, scale): EMR/ESR in %, ENRD/ESS mean L1 on 0..255, ESMI x 100 (official print).
METRICS = (("EMR", "emr", 100.0), ("ESR", "esr", 100.0), ("ENRD", "enrd", 1.0), ("ESS", "ess", 1.0),
           ("ESMI", "esmi", 100.0))
HIGHER_IS_BETTER = {"EMR": True, "ESR": True, "ENRD": False, "ESS": False, "ESMI": True}


def _floats(rows: Sequence[Mapping], key: str) -> np.ndarray:
    vals = []
    for r in rows:
        v = r.get(key)
        if v is None or v == "":
            continue
        if isinstance(v, str):
            v = {"true": 1.0, "false": 0.0}.get(v.lower(), v)
        v = float(v)
        if math.isfinite(v):
            vals.append(v)
    return np.asarray(vals, dtype=np.float64)


def bootstrap_ci(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap, seeded)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    if values.size == 1 or np.all(values == values[0]):
        return (float(values[0]), float(values[0]))
    res = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile",
                    vectorized=True, random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def summarize(rows: Sequence[Mapping], resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
              seed: int = 0) -> dict:
    """{'n': jobs, 'EMR': mean, 'EMR_lo': ..., 'EMR_hi': ..., 'EMR_n': ..., ...} for one group of per-job rows.

    Non-finite values (ESMI is NaN when P gives the target probability 0 on the source, as in the
    official script) are left out of that metric's mean; `<metric>_n` says how many values it used.
    """
    out: dict = {"n": len(rows)}
    for col, key, scale in METRICS:
        vals = _floats(rows, key) * scale
        out[col] = float(vals.mean()) if vals.size else math.nan
        out[f"{col}_n"] = int(vals.size)
        if resamples > 0:
            out[f"{col}_lo"], out[f"{col}_hi"] = bootstrap_ci(vals, resamples, level, seed)
    return out


def group_rows(rows: Iterable[Mapping], keys: Sequence[str]) -> dict[tuple, list[Mapping]]:
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


# ------------------------------------------------------------------------------------- tables

def _fmt(v: float, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table_rows(rows: Sequence[Mapping], methods: Sequence[str], paper_rows: Mapping[str, Optional[str]],
               relation: str, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
               seed: int = 0) -> list[dict]:
    """One summary per method for the jobs of `relation`, with the paper's row beside it."""
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method and r["relation"] == relation]
        s = summarize(mine, resamples, level, seed)
        paper = PAPER_TABLE1.get(paper_rows.get(method) or "")
        out.append({"method": method, "paper_row": paper_rows.get(method) or "", **s,
                    **{f"paper_{m}": (paper[i] if paper else math.nan) for i, m in enumerate(PAPER_METRICS)}})
    return out


def write_table(summary: Sequence[Mapping], stem: str | Path, title: str, level: float = CI_LEVEL) -> list[Path]:
    """Write `stem`.md, .csv and .tex: mean [CI] per metric, the paper's value after a slash."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    cols = [c for c, _, _ in METRICS]
    arrows = {c: "↑" if HIGHER_IS_BETTER[c] else "↓" for c in cols}
    pct = round(100 * level)

    def cell(s: Mapping, c: str, latex: bool = False) -> str:
        txt = _fmt(s[c])
        if f"{c}_lo" in s and not math.isnan(s[f"{c}_lo"]):
            txt += f" [{_fmt(s[f'{c}_lo'])}, {_fmt(s[f'{c}_hi'])}]"
        paper = s.get(f"paper_{c}", math.nan)
        if not (isinstance(paper, float) and math.isnan(paper)):
            txt += f" / {_fmt(paper)}" if not latex else f" / \\textit{{{_fmt(paper)}}}"
        return txt

    md = [f"**{title}** (mean [{pct}% bootstrap CI] / paper)", "",
          "| Method | Paper row | n | " + " | ".join(f"{c} {arrows[c]}" for c in cols) + " |",
          "|" + "---|" * (3 + len(cols))]
    for s in summary:
        md.append(f"| {s['method']} | {s['paper_row'] or '-'} | {s['n']} | "
                  + " | ".join(cell(s, c) for c in cols) + " |")
    paths = [stem.with_suffix(".md")]
    paths[0].write_text("\n".join(md) + "\n")

    csv_cols = ["method", "paper_row", "n"] + [f"{c}{sfx}" for c in cols for sfx in ("", "_lo", "_hi")] \
        + [f"paper_{c}" for c in PAPER_METRICS]
    paths.append(write_csv([{k: s.get(k, "") for k in csv_cols} for s in summary], stem.with_suffix(".csv"), csv_cols))

    esc = lambda t: str(t).replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    arrows_tex = {c: r"$\uparrow$" if HIGHER_IS_BETTER[c] else r"$\downarrow$" for c in cols}
    tex = [r"\begin{table}[t]", r"\centering", r"\small",
           r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
           "Method & " + " & ".join(f"{c} {arrows_tex[c]}" for c in cols) + r" \\", r"\midrule"]
    for s in summary:
        tex.append(esc(s["method"]) + " & " + " & ".join(cell(s, c, latex=True).replace("%", r"\%")
                                                          for c in cols) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}",
            rf"\caption{{{esc(title)}: mean [{pct}\% bootstrap CI] / \textit{{paper}}.}}", r"\end{table}"]
    paths.append(stem.with_suffix(".tex"))
    paths[-1].write_text("\n".join(tex) + "\n")
    return paths


def write_csv(rows: Sequence[Mapping], path: str | Path, columns: Optional[Sequence[str]] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(r.get(k, "")) for k in columns})
    return path


def _csv_value(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


def read_csv(path: str | Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def per_emotion(rows: Sequence[Mapping], methods: Sequence[str], resamples: int = 0, seed: int = 0) -> list[dict]:
    """Metrics per method x relation x (source emotion | target emotion)."""
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        for by, key in (("target", "target_name"), ("source", "source_emotion")):
            groups = group_rows(mine, ["relation", key])
            for (rel, emo), group in sorted(groups.items(), key=lambda kv: (kv[0][0], _emotion_order(kv[0][1]))):
                out.append({"method": method, "relation": rel, "by": by, "emotion": emo,
                            **summarize(group, resamples, seed=seed)})
    return out


def _emotion_order(name: str) -> tuple:
    return (EMOTIONS.index(name), "") if name in EMOTIONS else (len(EMOTIONS), name)


# ------------------------------------------------------------------------------------- plots

def pyplot():
    """matplotlib.pyplot on the Agg backend: plots are files, never windows (headless runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_bars(summary: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """One panel per metric: our mean with its CI as an error bar, the paper's value as a black tick."""
    plt = pyplot()
    cols = [c for c, _, _ in METRICS]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.4))
    x = np.arange(len(summary))
    for ax, c in zip(axes, cols):
        means = np.array([s[c] for s in summary], dtype=float)
        lo = np.array([s.get(f"{c}_lo", m) for s, m in zip(summary, means)], dtype=float)
        hi = np.array([s.get(f"{c}_hi", m) for s, m in zip(summary, means)], dtype=float)
        err = np.nan_to_num(np.vstack([means - lo, hi - means]), nan=0.0).clip(min=0)
        ax.bar(x, np.nan_to_num(means), yerr=err, capsize=3, color="tab:blue", alpha=0.8, label="ours")
        paper = np.array([s.get(f"paper_{c}", math.nan) for s in summary], dtype=float)
        if np.isfinite(paper).any():
            ax.scatter(x, paper, marker="_", s=300, color="black", zorder=3, label="paper")
        ax.set_title(f"{c} {'↑' if HIGHER_IS_BETTER[c] else '↓'}")
        ax.set_xticks(x, [s["method"] for s in summary], rotation=45, ha="right", fontsize=8)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_iteration_curves(curves: Sequence[Mapping], path: str | Path) -> Path:
    """Fig. S11: each metric against the maximum number of critic iterations k, one line per method/relation."""
    plt = pyplot()
    cols = [c for c, _, _ in METRICS]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.0))
    for (method, rel), group in group_rows(curves, ["method", "relation"]).items():
        group = sorted(group, key=lambda r: int(r["k"]))
        ks = [int(r["k"]) for r in group]
        for ax, c in zip(axes, cols):
            ax.plot(ks, [float(r[c]) for r in group], marker=".", linestyle="-" if rel == "cross" else "--",
                    label=f"{method} ({rel})")
    from matplotlib.ticker import MaxNLocator

    for ax, c in zip(axes, cols):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("max iterations k")
        ax.set_title(c)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def example_grid(sources: Mapping[str, np.ndarray], edits: Mapping[tuple[str, str], np.ndarray],
                 path: str | Path, title: str = "", cell: int = 128) -> Path:
    """The paper's protocol as a picture: one column per source emotion, its source on top (green
    frame), then its edits to the 7 other emotions (target in red): a 7x8 grid of edits.
    Composed as one canvas (one axes), which keeps it fast for many methods."""
    from PIL import Image

    plt = pyplot()
    cols = [e for e in EMOTIONS if e in sources]
    per_col = {c: [t for t in EMOTIONS if (c, t) in edits] for c in cols}
    n_rows = max([len(v) for v in per_col.values()] + [0]) + 1
    n_cols = max(len(cols), 1)
    pad, label = 4, 14
    step_x, step_y = cell + pad, cell + pad + label
    canvas = np.full((n_rows * step_y, n_cols * step_x, 3), 255, np.uint8)

    def put(img: np.ndarray, r: int, c: int, frame=None) -> None:
        tile = np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize((cell, cell), Image.BILINEAR))
        y, x = r * step_y + label, c * step_x
        canvas[y:y + cell, x:x + cell] = tile
        if frame is not None:
            canvas[y:y + 3, x:x + cell] = canvas[y + cell - 3:y + cell, x:x + cell] = frame
            canvas[y:y + cell, x:x + 3] = canvas[y:y + cell, x + cell - 3:x + cell] = frame

    texts = []
    for j, c in enumerate(cols):
        put(sources[c], 0, j, frame=(0, 160, 0))
        texts.append((j, 0, c, "green"))
        for i, t in enumerate(per_col[c], start=1):
            put(edits[(c, t)], i, j)
            texts.append((j, i, t, "red"))
    h, w = canvas.shape[:2]
    fig = plt.figure(figsize=(w / 100, h / 100 + (0.3 if title else 0)), dpi=100)
    ax = fig.add_axes([0, 0, 1, h / (h + (30 if title else 0))])
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for j, i, text, colour in texts:
        ax.text(j * step_x + cell / 2, i * step_y + label - 3, text, ha="center", va="bottom", fontsize=8,
                color=colour)
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    return save_figure(fig, path, dpi=100)
