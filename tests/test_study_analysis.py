"""The study analysis on synthetic responses with a planted answer: 60% preference vs one baseline, 50% vs the
others, and participants who fail the dummies; read back from our SQLite, our CSV export and a mapped CSV."""

import csv
import json
import math
import sqlite3

import numpy as np
import pytest
from repo_scripts import load_script
from scipy.stats import binomtest

from apps.study.analysis import (
    MATRIX_ORDER,
    analyse,
    exclude,
    matrices,
    preference,
    preference_table,
    read_responses,
)
from apps.study.db import StudyDB
from emoeditor.constants import EMOTIONS, NEGATIVE, POSITIVE

BASELINES = ("ct", "nst", "clipstyler", "ip2p", "lms")
PLANTED = {"ct": 0.6, "nst": 0.5, "clipstyler": 0.5, "ip2p": 0.5, "lms": 0.5}
CROSS = [(s, t) for s in EMOTIONS for t in EMOTIONS if (s in POSITIVE) != (t in POSITIVE)]
PER_PARTICIPANT, DUMMIES = 94, 6


def synthetic(n_good=40, seed=0):
    """Canonical rows. Good participants: one wrong dummy at most, EmoEditor chosen with exactly the planted
    rate per baseline. 'fail1', 'fail2': 2 and 3 wrong dummies, never choosing EmoEditor (they would drag every
    rate down if kept). 'edge': exactly one wrong dummy (kept: the rule is more than one)."""
    rng = np.random.default_rng(seed)
    people = [f"p{i:02d}" for i in range(n_good)] + ["edge", "fail1", "fail2"]
    wrong = {"edge": 1, "fail1": 2, "fail2": 3}
    trials = {p: [(BASELINES[i % 5], *CROSS[rng.integers(len(CROSS))]) for i in range(PER_PARTICIPANT)]
              for p in people}
    chose = {}
    kept = [p for p in people if wrong.get(p, 0) <= 1]
    for b in BASELINES:  # exactly PLANTED[b] of the kept participants' trials vs b choose EmoEditor
        slots = [(p, i) for p in kept for i, t in enumerate(trials[p]) if t[0] == b]
        wins = set(rng.choice(len(slots), round(PLANTED[b] * len(slots)), replace=False).tolist())
        chose.update({slot: j in wins for j, slot in enumerate(slots)})
    rows = []
    for p in people:
        for i, (b, s, t) in enumerate(trials[p]):
            rows.append({"participant_id": p, "kind": "real", "baseline": b, "source_emotion": s, "target": t,
                         "chose_ours": chose.get((p, i), False), "correct": None})
        for d in range(DUMMIES):
            rows.append({"participant_id": p, "kind": "dummy", "baseline": None, "source_emotion": None,
                         "target": "amusement", "chose_ours": None, "correct": d >= wrong.get(p, 0)})
    return rows


def test_exclusion_drops_exactly_the_dummy_failures():
    kept, info = exclude(synthetic(), max_dummy_errors=1)
    assert info["excluded"] == ["fail1", "fail2"]
    assert info["participants"] == 43 and info["kept_participants"] == 41
    assert len(kept) == 41 * PER_PARTICIPANT and all(r["kind"] == "real" for r in kept)
    _, lenient = exclude(synthetic(), max_dummy_errors=2)
    assert lenient["excluded"] == ["fail2"]


def test_planted_preferences_are_recovered(tmp_path):
    summary = analyse(synthetic(), tmp_path)
    table = {(r["transition"], r["baseline"]): r for r in summary["preference"]}
    for b, planted in PLANTED.items():
        r = table[("all", b)]
        assert abs(r["p"] - planted) <= r["se"] < 0.03  # exact by construction, had exclusion worked
        assert r["se"] == pytest.approx(math.sqrt(r["p"] * (1 - r["p"]) / r["n"]))
        assert r["binom_p"] == pytest.approx(binomtest(r["k"], r["n"]).pvalue)
    assert table[("all", "ct")]["binom_p"] < 1e-6 and table[("all", "nst")]["binom_p"] > 0.5
    pooled = table[("all", "all")]
    assert pooled["p"] == pytest.approx(sum(PLANTED.values()) / 5, abs=0.005)
    assert {p.name for p in tmp_path.iterdir()} >= {"preference.csv", "matrices.csv", "fig5.png", "fig_s7.png",
                                                    "fig_s8.png"}


def test_bernoulli_responses_fall_within_two_standard_errors(tmp_path):
    """Random choices (not exact counts): each estimate within 2 SE of the planted rate (95% of seeds)."""
    rng = np.random.default_rng(1)
    rows = [{**r, "chose_ours": bool(rng.random() < PLANTED[r["baseline"]])} if r["kind"] == "real" else r
            for r in synthetic() if r["participant_id"] not in ("fail1", "fail2")]
    table = {(r["transition"], r["baseline"]): r for r in analyse(rows, tmp_path)["preference"]}
    for b, planted in PLANTED.items():
        assert abs(table[("all", b)]["p"] - planted) <= 2 * table[("all", b)]["se"]
        assert table[("all", b)]["se_participants"] > 0


def test_valence_split_and_matrices_match_a_direct_count():
    kept, _ = exclude(synthetic())
    to_pos = [r for r in kept if r["baseline"] == "ct" and r["target"] in POSITIVE]
    summary = {(r["transition"], r["baseline"]): r for r in preference_table(kept, BASELINES)}
    assert summary[("to_positive", "ct")]["n"] == len(to_pos)
    assert summary[("to_positive", "ct")]["k"] == sum(r["chose_ours"] for r in to_pos)
    assert summary[("to_negative", "ct")]["n"] == sum(r["baseline"] == "ct" and r["target"] in NEGATIVE
                                                      for r in kept)
    mats = matrices(kept, BASELINES)
    cell = [r for r in kept if r["baseline"] == "nst" and r["source_emotion"] == "awe" and r["target"] == "fear"]
    i, j = MATRIX_ORDER.index("awe"), MATRIX_ORDER.index("fear")
    assert mats["nst"]["n"][i, j] == len(cell)
    assert mats["nst"]["p"][i, j] == pytest.approx(sum(r["chose_ours"] for r in cell) / len(cell))
    assert np.isnan(mats["all"]["p"][i, MATRIX_ORDER.index("contentment")])  # within-valence: never shown
    assert np.isnan(mats["all"]["p"][:4, :4]).all() and np.isnan(mats["all"]["p"][4:, 4:]).all()
    assert mats["all"]["n"].sum() == len(kept)


def store(rows, db_path):
    """The rows written through the server's store (consent + plan + answers), as a study would."""
    db = StudyDB(db_path)
    for pid in dict.fromkeys(r["participant_id"] for r in rows):
        mine = [r for r in rows if r["participant_id"] == pid]
        plan = [{"trial_index": i, "kind": r["kind"], "stimulus_id": f"s{i}", "target": r["target"],
                 "source_emotion": r["source_emotion"], "baseline": r["baseline"], "left_file": "a.png",
                 "right_file": "b.png", "left_method": None, "right_method": None,
                 "ours_side": "left" if r["kind"] == "real" else None,
                 "correct_side": "right" if r["kind"] == "dummy" else None} for i, r in enumerate(mine)]
        sid, _ = db.consent(pid, None, lambda plan=plan: plan, 0, "sha")
        for i, r in enumerate(mine):
            side = ("left" if r["chose_ours"] else "right") if r["kind"] == "real" else \
                ("right" if r["correct"] else "left")
            db.respond(sid, i, side, 500.0, "mouse", lambda: "CODE")
    return db


def test_sqlite_csv_and_mapped_csv_give_the_same_analysis(tmp_path):
    rows = synthetic(n_good=6)
    db = store(rows, tmp_path / "study.sqlite")
    from_db = read_responses(tmp_path / "study.sqlite")
    columns, values = db.export_rows()
    with (tmp_path / "export.csv").open("w", newline="") as f:
        csv.writer(f).writerows([columns, *values])
    from_csv = read_responses(tmp_path / "export.csv")
    key = ("participant_id", "kind", "baseline", "source_emotion", "target", "chose_ours", "correct")
    expect = [tuple(r[k] for k in key) for r in rows]
    assert [tuple(r[k] for k in key) for r in from_db] == expect
    assert [tuple(r[k] for k in key) for r in from_csv] == expect
    # another study's layout: its own column names and labels, the chosen method instead of a flag
    names = {"CT": "ct", "NST": "nst", "Csty": "clipstyler", "Ip2p": "ip2p", "LMS": "lms"}
    with (tmp_path / "released.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["worker", "trial_type", "method", "src", "tgt", "picked", "dummy_ok"])
        for r in rows:
            label = next((k for k, v in names.items() if v == r["baseline"]), "")
            w.writerow([r["participant_id"], "main" if r["kind"] == "real" else "check", label,
                        r["source_emotion"] or "", r["target"], ("EmoEditor" if r["chose_ours"] else label)
                        if r["kind"] == "real" else "", "" if r["correct"] is None else int(r["correct"])])
    mapped = read_responses(
        tmp_path / "released.csv", ours="EmoEditor",
        columns={"participant_id": "worker", "kind": "trial_type", "baseline": "method", "source_emotion": "src",
                 "target": "tgt", "chosen": "picked", "correct": "dummy_ok"},
        values={"main": "real", "check": "dummy", **names})
    assert [tuple(r[k] for k in key) for r in mapped] == expect
    assert preference(mapped) == preference(from_db)


def test_analyze_script_end_to_end(tmp_path, capsys):
    store(synthetic(n_good=8), tmp_path / "study.sqlite")
    main = load_script("scripts/analyze_study.py").main
    assert main(["analyze", str(tmp_path / "study.sqlite"), "--out", str(tmp_path / "out"),
                 "--max_dummy_errors", "1"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["exclusion"]["excluded"] == ["fail1", "fail2"]
    assert "ours vs ct" in capsys.readouterr().out


def test_bad_response_files_are_named(tmp_path):
    from apps.study import StudyError

    (tmp_path / "x.csv").write_text("participant_id,kind\np1,practice\n")
    with pytest.raises(StudyError, match="kind 'practice'.*--values"):
        read_responses(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("who,kind,baseline,source_emotion,target,chose_ours\np,real,ct,awe,fear,1\n")
    with pytest.raises(StudyError, match="--columns participant_id="):
        read_responses(tmp_path / "y.csv")
    with pytest.raises(StudyError, match="not found"):
        read_responses(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StudyError, match="not a study database"):
        read_responses(tmp_path / "junk.sqlite")
    with sqlite3.connect(tmp_path / "empty.db"):
        pass
    with pytest.raises(StudyError, match="not a study database"):
        read_responses(tmp_path / "empty.db")


def test_empty_cells_are_null_in_strict_json(tmp_path):
    """One participant who only saw to-positive CT trials: no SE across participants, no to-negative numbers."""
    with (tmp_path / "one.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["participant_id", "kind", "baseline", "source_emotion", "target", "chose_ours", "correct"])
        w.writerows([["solo", "real", "ct", "fear", "awe", i % 2, ""] for i in range(4)])
        w.writerow(["solo", "dummy", "", "", "awe", "", "1"])
    main = load_script("scripts/analyze_study.py").main
    assert main(["analyze", str(tmp_path / "one.csv"), "--out", str(tmp_path / "out"), "--se", "se_participants"]) == 0

    def no_nan(token):
        raise AssertionError(f"{token} in summary.json")

    summary = json.loads((tmp_path / "out" / "summary.json").read_text(), parse_constant=no_nan)
    table = {(r["transition"], r["baseline"]): r for r in summary["preference"]}
    assert table[("to_positive", "ct")]["p"] == 0.5 and table[("to_positive", "ct")]["se_participants"] is None
    assert table[("to_negative", "ct")]["n"] == 0 and table[("to_negative", "ct")]["p"] is None
