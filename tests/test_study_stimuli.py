"""The study's stimulus builder (pairs from an evaluation run's layout), dummy pool and per-participant plans."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from apps.study import StudyError
from apps.study.__main__ import main
from apps.study.dummies import write_dummy_pool
from apps.study.plan import check_design, load_stimuli, make_plan
from apps.study.stimuli import build_stimuli
from apps.study.testing import method_of, write_fake_run
from emoeditor.constants import EMOTIONS, POSITIVE
from emoeditor.evaluation.runner import MethodStore

PAPER_BASELINES = {"ct", "nst", "clipstyler", "ip2p", "lms"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_run")
    write_fake_run(root / "run", per_class=2)  # 16 sources x 7 targets; 64 cross-valence jobs
    write_dummy_pool(root / "dummies")
    return root


def test_pairs_are_ours_vs_one_baseline_on_cross_valence_jobs(run, tmp_path):
    report = build_stimuli(run / "run", run / "dummies", tmp_path / "stim", seed=5)
    stim = load_stimuli(tmp_path / "stim")
    pairs = stim.manifest["pairs"]
    assert report.pairs == len(pairs) == 16 * 4 and report.dummies == len(EMOTIONS)
    assert all((p["source_emotion"] in POSITIVE) != (p["target"] in POSITIVE) for p in pairs)
    assert set(report.baselines) == PAPER_BASELINES  # wo_P is in the run but is no baseline
    for p in pairs:
        assert method_of(stim.images / p["ours_file"]) == "ours"
        assert method_of(stim.images / p["baseline_file"]) == p["baseline"]
        assert not any(m in name for name in (p["ours_file"], p["baseline_file"]) for m in PAPER_BASELINES | {"ours"})
    assert set(Counter(p["baseline"] for p in pairs)) == PAPER_BASELINES
    assert sorted(f.name for f in stim.images.iterdir()) == sorted(stim.files)
    again = build_stimuli(run / "run", run / "dummies", tmp_path / "again", seed=5)
    assert json.loads((tmp_path / "again" / "stimuli.json").read_text())["pairs"] == pairs and again.pairs == 64
    build_stimuli(run / "run", run / "dummies", tmp_path / "other", seed=6)
    other = json.loads((tmp_path / "other" / "stimuli.json").read_text())["pairs"]
    assert [p["baseline"] for p in other] != [p["baseline"] for p in pairs]


def test_missing_and_unreadable_outputs_are_skipped_and_counted(run, tmp_path):
    copy = tmp_path / "run"
    write_fake_run(copy, methods=("ours", "ct", "nst"), per_class=1)
    jobs = [p.stem for p in MethodStore(copy, "ours").images.iterdir()]
    cross = sorted(j for j in jobs if (j.split("_")[0] in POSITIVE) != (j.split("__")[1] in POSITIVE))
    MethodStore(copy, "ours").image(cross[0]).unlink()  # EmoEditor failed on this job
    MethodStore(copy, "ct").image(cross[1]).write_bytes(b"not a png")  # a corrupt baseline output
    for m in ("ct", "nst"):
        MethodStore(copy, m).image(cross[2]).unlink()  # no baseline output at all
    report = build_stimuli(copy, run / "dummies", tmp_path / "stim", baselines=["ct", "nst"])
    pairs = {p["id"]: p for p in json.loads((tmp_path / "stim" / "stimuli.json").read_text())["pairs"]}
    assert report.jobs_without_ours == 1 and report.jobs_without_baseline == 1
    assert len(report.unreadable_images) == 1 and cross[1] in report.unreadable_images[0]
    assert len(pairs) == len(cross) - 2 and cross[0] not in pairs and cross[2] not in pairs
    assert pairs[cross[1]]["baseline"] == "nst"  # the readable one


def test_bad_inputs_are_named(run, tmp_path):
    with pytest.raises(StudyError, match="scripts/evaluate.py"):
        build_stimuli(tmp_path / "nowhere", run / "dummies", tmp_path / "s")
    write_fake_run(tmp_path / "only_ours", methods=("ours",), per_class=1)
    with pytest.raises(StudyError, match="none of the baselines"):
        build_stimuli(tmp_path / "only_ours", run / "dummies", tmp_path / "s")
    with pytest.raises(StudyError, match="--ours"):
        build_stimuli(run / "run", run / "dummies", tmp_path / "s", ours="emoeditor")
    with pytest.raises(StudyError, match="make-dummies"):
        build_stimuli(run / "run", tmp_path / "no_pool", tmp_path / "s")
    (tmp_path / "pool.json").write_text('{"dummies": [{"id": "x", "target": "joy", "correct": "a", "wrong": "b"}]}')
    with pytest.raises(StudyError, match="target 'joy'"):
        build_stimuli(run / "run", tmp_path / "pool.json", tmp_path / "s")
    (tmp_path / "bad.json").write_text('{"dummies": [{"id": "x"}]}')
    with pytest.raises(StudyError, match="expected"):
        build_stimuli(run / "run", tmp_path / "bad.json", tmp_path / "s")
    (tmp_path / "results.csv").write_text("method,job_id\n")
    (tmp_path / "ours" / "images").mkdir(parents=True)
    (tmp_path / "ct" / "images").mkdir(parents=True)
    with pytest.raises(StudyError, match="columns"):
        build_stimuli(tmp_path, run / "dummies", tmp_path / "s")
    with pytest.raises(StudyError, match="build-stimuli"):
        load_stimuli(tmp_path / "s_missing")


def test_cli_builds_and_reports(run, tmp_path, capsys):
    assert main(["build-stimuli", "--eval_out", str(run / "run"), "--dummies", str(run / "dummies"),
                 "--out", str(tmp_path / "stim"), "--baselines", "ct", "lms"]) == 0
    assert "64 pairs (ours vs ct, lms), 8 dummies" in capsys.readouterr().out
    assert main(["build-stimuli", "--eval_out", str(tmp_path / "x"), "--dummies", str(run / "dummies"),
                 "--out", str(tmp_path / "s")]) == 2
    assert "error:" in capsys.readouterr().err


def test_drawn_dummies_have_an_obvious_answer(run):
    pool = json.loads((run / "dummies" / "dummies.json").read_text())["dummies"]
    assert sorted(d["target"] for d in pool) == sorted(EMOTIONS)
    for d in pool:
        correct, wrong = (np.asarray(Image.open(run / "dummies" / d[k]).convert("L"), dtype=float).mean()
                          for k in ("correct", "wrong"))
        assert (correct > wrong + 80) if d["target"] in POSITIVE else (wrong > correct + 80)


def manifest(n_pairs=120, n_dummies=8):
    return {"ours": "ours",
            "pairs": [{"id": f"job{i}", "source_emotion": "awe", "target": "fear", "baseline": f"b{i % 5}",
                       "ours_file": f"o{i}.png", "baseline_file": f"x{i}.png"} for i in range(n_pairs)],
            "dummies": [{"id": f"d{i}", "target": "awe", "correct_file": f"c{i}.png", "wrong_file": f"w{i}.png"}
                        for i in range(n_dummies)]}


def test_plan_has_the_papers_design():
    m = manifest()
    plan = make_plan(m, "P1", 100, 6, seed=0)
    assert [t["trial_index"] for t in plan] == list(range(100))
    dummies = [t for t in plan if t["kind"] == "dummy"]
    real = [t for t in plan if t["kind"] == "real"]
    assert len(dummies) == 6 and len({t["stimulus_id"] for t in dummies}) == 6
    assert len(real) == 94 and len({t["stimulus_id"] for t in real}) == 94
    pairs = {p["id"]: p for p in m["pairs"]}
    for t in real:
        p = pairs[t["stimulus_id"]]
        other = "right" if t["ours_side"] == "left" else "left"
        assert t[f"{t['ours_side']}_file"] == p["ours_file"] and t[f"{other}_file"] == p["baseline_file"]
        assert t[f"{t['ours_side']}_method"] == "ours" and t[f"{other}_method"] == p["baseline"]
    for t in dummies:
        assert t[f"{t['correct_side']}_file"].startswith("c")
    assert make_plan(m, "P1", 100, 6, seed=0) == plan  # seeded: a resume or a rebuild shows the same
    assert make_plan(m, "P2", 100, 6, seed=0) != plan
    assert make_plan(m, "P1", 100, 6, seed=1) != plan


def test_sides_and_dummy_positions_are_unbiased():
    m = manifest()
    plans = [make_plan(m, f"P{i}", 20, 6, seed=0) for i in range(300)]
    left = [t["ours_side"] == "left" for plan in plans for t in plan if t["kind"] == "real"]
    assert abs(np.mean(left) - 0.5) < 4 * np.sqrt(0.25 / len(left))
    positions = Counter(t["trial_index"] for plan in plans for t in plan if t["kind"] == "dummy")
    expected = 300 * 6 / 20
    assert set(positions) == set(range(20))
    assert max(abs(c - expected) for c in positions.values()) < 5 * expected ** 0.5


def test_design_checks_name_the_flag():
    with pytest.raises(StudyError, match="--trials 200"):
        check_design(manifest(), 200, 6)
    with pytest.raises(StudyError, match="--dummy_trials 9"):
        check_design(manifest(), 100, 9)
    with pytest.raises(StudyError, match="at least one real trial"):
        check_design(manifest(), 6, 6)
