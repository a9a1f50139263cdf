"""`--methods all`: Table 1's eight rows (the five baselines, w/o P, w/o L_emb, Ours) from one command on
the tiny default, named as in the paper, with the paper's numbers beside ours and each method's seconds per
image in the run record; a rerun edits nothing."""

import json

import pytest
from repo_scripts import REPO

from emoeditor.constants import EMOTIONS, PAPER_TABLE1
from emoeditor.data.toy_emoset import write_toy_emoset
from emoeditor.editors.discovery import parse_methods
from emoeditor.editors.registry import TABLE1_METHODS, expand_all
from emoeditor.errors import MethodError
from emoeditor.evaluation.runner import EvalSettings, run_evaluation
from emoeditor.evaluation.split import make_test_split, save_split

PAPER_ROWS = ["CT", "NST", "Csty", "Ip2p", "LMS", "w/o P", "w/o L_emb", "Ours"]


def test_all_is_table1_in_the_papers_order_with_what_each_row_needs():
    specs = expand_all(["all"], wo_lemb_model="runs/lambda0", reference_pool="data/EmoSet", baseline_weights="tiny")
    assert [s.split(":")[0] for s in specs] == list(TABLE1_METHODS)
    assert specs[0] == "ct:weights=tiny,pool=data/EmoSet" and specs[1] == "nst:weights=tiny,pool=data/EmoSet"
    assert specs[2:5] == ["clipstyler:weights=tiny", "ip2p:weights=tiny", "lms:weights=tiny"]
    assert specs[5:] == ["wo_P", "wo_Lemb:model=runs/lambda0", "ours"]
    assert [m.paper_row for m in parse_methods(specs)] == PAPER_ROWS
    assert set(PAPER_ROWS) <= set(PAPER_TABLE1)
    # other methods are kept beside it; real weights add no option
    assert expand_all(["identity", "all"], wo_lemb_model="m")[:2] == ["identity", "ct"]
    # a row named on its own gets the same, and what its spec sets wins
    assert expand_all(["ct", "mine=nst:pool=p", "ip2p+critic", "wo_Lemb"], wo_lemb_model="m", reference_pool="r",
                      baseline_weights="tiny") == ["ct:weights=tiny,pool=r", "mine=nst:pool=p,weights=tiny",
                                                   "ip2p+critic:weights=tiny", "wo_Lemb:model=m"]


def test_all_without_the_wo_lemb_model_says_what_to_pass():
    with pytest.raises(MethodError, match="--wo_lemb_model"):
        expand_all(["all"])


@pytest.mark.slow
def test_all_eight_rows_on_the_tiny_default(tmp_path):
    root = write_toy_emoset(tmp_path / "EmoSet", "release", per_class=(0, 0, 1), image_size=64, seed=3)
    split = save_split(make_test_split(root, None, per_class=1, seed=0), tmp_path / "split.json")
    mini = REPO / "mini_world"
    settings = EvalSettings(out=str(tmp_path / "eval"), split=str(split), methods=("all",),
                            model=str(mini / "model"), wo_lemb_model=str(mini / "model"),
                            predictor=str(mini / "emo_predictor"), baseline_weights="tiny",
                            targets=("awe",), num_loop=2, num_inference_steps=2, image_size=64, metric_size=64,
                            bootstrap=20, grid=True, fig_s11=False, device="cpu", seed=0, batch_size=4,
                            chunk_size=8)
    report = run_evaluation(settings)
    jobs = len([e for e in EMOTIONS if e != "awe"])  # every source but awe's own
    assert list(report["methods"]) == list(TABLE1_METHODS)
    for label, stats in report["methods"].items():
        assert stats["generated"] == jobs and stats["failed"] == 0, (label, stats)
        assert stats["seconds_per_image"] > 0, label
    out = tmp_path / "eval"
    table = (out / "table1_cross.md").read_text()
    for row in PAPER_ROWS:
        assert f"| {row} |" in table or f"| {row} " in table, (row, table)
    for ext in ("csv", "tex"):
        assert (out / f"table1_cross.{ext}").exists()
    paper_ct = PAPER_TABLE1["CT"]
    assert f"{paper_ct[0]:.2f}" in table  # the paper's numbers beside ours
    # each baseline recorded what it used
    trace = json.loads(next((out / "lms" / "traces").glob("*.json")).read_text())
    assert trace["instruction"] and trace["caption"]

    again = run_evaluation(settings)
    # a rerun computes nothing: no edit, and every job's metrics come from the cache
    rerun = {m: (st["generated"], st["cached"], st["scored"], st["scored_cached"])
             for m, st in again["methods"].items()}
    assert all(counts == (0, jobs, 0, jobs) for counts in rerun.values()), rerun
