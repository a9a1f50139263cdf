"""Tables, bootstrap intervals and plots from per-job rows."""

import math

import numpy as np
import pytest
from PIL import Image

from emoeditor.constants import EMOTIONS, PAPER_TABLE1
from emoeditor.evaluation.reporting import (
    bootstrap_ci,
    example_grid,
    per_emotion,
    plot_bars,
    plot_iteration_curves,
    read_csv,
    summarize,
    table_rows,
    write_csv,
    write_table,
)


def _rows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append({"method": "ours" if i % 2 else "ct", "relation": "cross" if i % 4 < 2 else "within",
                     "job_id": f"j{i}", "source_emotion": EMOTIONS[i % 8], "target_name": EMOTIONS[(i + 3) % 8],
                     "emr": bool(rng.random() < 0.5), "esr": bool(rng.random() < 0.8),
                     "enrd": float(rng.normal(20, 3)), "ess": float(rng.normal(15, 2)), "esmi": float(rng.random())})
    return rows


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    vals = np.random.default_rng(1).normal(10, 2, size=200)
    lo, hi = bootstrap_ci(vals, resamples=500, seed=0)
    assert lo < vals.mean() < hi
    # about 2 standard errors either side
    se = vals.std(ddof=1) / math.sqrt(vals.size)
    assert 3.0 * se < hi - lo < 5.0 * se
    assert bootstrap_ci(vals, resamples=500, seed=0) == (lo, hi)
    assert bootstrap_ci(np.full(5, 3.0)) == (3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))


def test_summary_and_table_files(tmp_path):
    rows = _rows()
    s = summarize([r for r in rows if r["method"] == "ours"], resamples=200)
    ours = [r for r in rows if r["method"] == "ours"]
    assert s["n"] == len(ours)
    assert s["EMR"] == pytest.approx(100 * np.mean([r["emr"] for r in ours]))
    assert s["ENRD"] == pytest.approx(np.mean([r["enrd"] for r in ours]))
    assert s["ESMI"] == pytest.approx(100 * np.mean([r["esmi"] for r in ours]))
    assert s["EMR_lo"] <= s["EMR"] <= s["EMR_hi"]

    summary = table_rows(rows, ["ct", "ours"], {"ours": "Ours", "ct": "CT"}, "cross", resamples=100)
    assert [x["n"] for x in summary] == [10, 10]
    assert summary[1]["paper_EMR"] == PAPER_TABLE1["Ours"][0]
    paths = write_table(summary, tmp_path / "table1_cross", "Table 1 (cross-valence)")
    assert [p.suffix for p in paths] == [".md", ".csv", ".tex"]
    md = paths[0].read_text()
    assert "| ours | Ours | 10 |" in md and "/ 50.20" in md and "/ 6.89" in md
    back = read_csv(paths[1])
    assert float(back[1]["EMR"]) == pytest.approx(summary[1]["EMR"]) and back[0]["paper_row"] == "CT"
    tex = paths[2].read_text()
    assert r"\begin{tabular}" in tex and r"\textit{50.20}" in tex


def test_per_emotion_and_csv_roundtrip(tmp_path):
    rows = _rows()
    table = per_emotion(rows, ["ours"])
    by_target = [r for r in table if r["by"] == "target"]
    assert sum(r["n"] for r in by_target) == 20
    one = next(r for r in by_target if r["relation"] == "cross" and r["emotion"] == by_target[0]["emotion"])
    mine = [r for r in rows
            if r["method"] == "ours" and r["relation"] == "cross" and r["target_name"] == one["emotion"]]
    assert one["ESS"] == pytest.approx(np.mean([r["ess"] for r in mine]))
    path = write_csv(rows, tmp_path / "results.csv")
    back = read_csv(path)
    assert len(back) == 40 and float(back[3]["enrd"]) == pytest.approx(rows[3]["enrd"])


def test_plots_are_images(tmp_path):
    rows = _rows()
    summary = table_rows(rows, ["ct", "ours"], {"ours": "Ours"}, "cross", resamples=50)
    bars = plot_bars(summary, tmp_path / "bars.png")
    curves = [{"method": "ours", "relation": rel, "k": k, "EMR": 10 * k, "ESR": 80, "ENRD": 20, "ESS": 15, "ESMI": 30}
              for rel in ("cross", "within") for k in range(1, 4)]
    s11 = plot_iteration_curves(curves, tmp_path / "fig_s11.png")
    srcs = {e: np.full((16, 16, 3), 30 * i, np.uint8) for i, e in enumerate(EMOTIONS)}
    edits = {(s, t): np.full((16, 16, 3), 200, np.uint8) for s in EMOTIONS for t in EMOTIONS if s != t}
    grid = example_grid(srcs, edits, tmp_path / "grid.png")
    for p in (bars, s11, grid):
        with Image.open(p) as im:
            assert im.size[0] > 200 and im.size[1] > 100


def test_summary_counts_the_values_each_metric_used():
    from emoeditor.evaluation.reporting import summarize

    rows = [{"emr": 1, "esr": 0, "enrd": 10.0, "ess": 2.0, "esmi": 0.5},
            {"emr": 0, "esr": 1, "enrd": 20.0, "ess": 4.0, "esmi": float("nan")}]
    s = summarize(rows, resamples=0)
    assert s["n"] == 2 and s["ENRD_n"] == 2 and s["ESMI_n"] == 1
    assert s["ESMI"] == 50.0 and s["ENRD"] == 15.0 and s["EMR"] == 50.0
