"""One-command evaluation on a toy EmoSet with test-double editors (and the tiny EmoEditor when present).

The doubles are real Editors: a colour shift, one that raises on a chosen job, and the real
batched critic loop (emoeditor.editing.loop) driving a scripted colour-shift backend, so traces and
candidates have the engine's format and Fig. S11 is computed exactly as for EmoEditor.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from repo_scripts import load_script

from emoeditor.constants import EMOTIONS
from emoeditor.editing.critic import CriticConfig
from emoeditor.editors.base import Editor, EditResult
from emoeditor.editors.discovery import parse_method, parse_methods
from emoeditor.editors.registry import EDITOR_FACTORIES, register_editor
from emoeditor.errors import MethodError
from emoeditor.evaluation.reporting import read_csv
from emoeditor.evaluation.runner import EvalSettings, MethodStore, returned_at, run_evaluation
from emoeditor.evaluation.split import load_split, make_test_split, save_split
from emoeditor.imageio import load_image

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64
PALETTE = torch.tensor([[1.0, 0.8, 0.2], [0.9, 0.1, 0.1], [0.6, 0.8, 1.0], [0.5, 0.9, 0.5],
                        [0.4, 0.5, 0.1], [1.0, 0.4, 0.8], [0.1, 0.1, 0.3], [0.3, 0.3, 0.4]])
BUILDS: dict[str, int] = {}


class ColourShift(Editor):
    """Blend toward the target's palette colour, plus a little generator-drawn noise."""

    def __init__(self, fail_on: str | None = None):
        self.fail_on = fail_on

    def edit(self, images, targets, generators):
        out = []
        for img, t, g in zip(images, targets, generators):
            if self.fail_on and torch.equal(img, self.fail_on[0]) and int(t.argmax()) == self.fail_on[1]:
                raise RuntimeError("scripted failure")
            tint = (PALETTE.T @ t).view(3, 1, 1)
            out.append((0.7 * img + 0.3 * tint + 0.02 * torch.rand(img.shape, generator=g)).clamp(0, 1))
        return EditResult(torch.stack(out))


class ScriptedBackend(Editor):
    """A repeatable edit for the real critic loop: each edit moves further toward the direction's colour."""
    device = torch.device("cpu")

    def edit(self, images, targets, generators):
        raise AssertionError("the critic loop calls edit_step")

    def edit_step(self, request):
        direction = request.targets - request.reference_probs
        tint = (PALETTE.T @ direction.clamp(min=0).T).T.view(-1, 3, 1, 1)
        noise = torch.stack([torch.rand(3, 1, 1, generator=g) for g in request.generators])
        return EditResult((0.75 * request.inputs + 0.25 * tint + 0.1 * (noise - 0.5)).clamp(0, 1))


def LoopEditor(predictor_dir, num_loop: int) -> Editor:
    """The scripted edit in the real critic loop, with loose thresholds so some jobs are accepted early
    and others fall back."""
    from emoeditor.editing.loop import CriticLoop
    from emoeditor.models.predictor import load_predictor

    config = CriticConfig(critic="paper", num_loop=num_loop, ssim_low=-1.0, ssim_high=1.01, confidence=0.13)
    return CriticLoop(ScriptedBackend(), load_predictor(predictor_dir).probs, config, batch_size=3,
                      return_candidates=True)


def _counted(kind, make):
    def factory(options, context):
        BUILDS[kind] = BUILDS.get(kind, 0) + 1
        return make(options, context)
    return factory


register_editor("test_colour")(_counted("test_colour", lambda o, c: ColourShift()))
register_editor("test_loop")(_counted("test_loop", lambda o, c: LoopEditor(c.predictor, int(o.get("num_loop", 4)))))


@pytest.fixture(scope="module")
def toy_split(tmp_path_factory):
    from emoeditor.data.toy_emoset import write_toy_emoset
    tmp = tmp_path_factory.mktemp("eval_emoset")
    root = write_toy_emoset(tmp / "EmoSet", layout="release", per_class=(0, 0, 2), image_size=SIZE, seed=0)
    split = make_test_split(root, None, per_class=1, seed=0)
    return save_split(split, tmp / "json" / "test_split.json"), root


def _settings(out, split, predictor, **kw):
    base = dict(out=str(out), split=str(split), predictor=str(predictor), image_size=SIZE, metric_size=SIZE,
                bootstrap=50, chunk_size=8, device="cpu", metric_batch_size=64)
    base.update(kw)
    return EvalSettings(**base)


def test_method_specs():
    assert parse_method("ours").paper_row == "Ours" and parse_method("ours").kind == "emoeditor"
    m = parse_method("lam0=wo_Lemb:model=runs/x,num_loop=5")
    assert (m.label, m.kind, m.opts, m.paper_row) == ("lam0", "emoeditor", {"model": "runs/x", "num_loop": "5"},
                                                      "w/o L_emb")
    assert parse_method("wo_P").opts == {"critic": "none"}
    with pytest.raises(MethodError, match="lambda_emb 0"):
        parse_method("wo_Lemb")  # without its own model it would silently be "ours"
    assert parse_method("x=emoeditor:critic=official").paper_row is None
    assert parse_method("x=identity:paper_row=CT").paper_row == "CT"
    with pytest.raises(MethodError, match="unknown method"):
        parse_method("nonsense")
    with pytest.raises(MethodError, match="unique"):
        parse_methods(["identity", "identity"])
    assert "emoeditor" in EDITOR_FACTORIES and "identity" in EDITOR_FACTORIES


def test_returned_at_replays_the_critic():
    def it(p_target):  # target class 0 is the top class iff p_target > 0.5
        return {"ssim": 0.5, "probs": [p_target, 1 - p_target] + [0.0] * 6}
    trace = {"critic": "paper", "thresholds": {"ssim_low": 0.3, "ssim_high": 0.8, "confidence": 0.8, "num_loop": 5,
                                               "confidence_mode": "support"},
             "target": [1.0] + [0.0] * 7, "source_probs": [0.125] * 8,
             "iterations": [it(0.3), it(0.45), it(0.9)], "returned": 2}
    # k=1: the only candidate; k=2: the better of two; k>=3: accepted at the third (the run stopped there)
    assert [returned_at(trace, k).index for k in (1, 2, 3, 4, 5, 9)] == [0, 1, 2, 2, 2, 2]


def test_evaluate_end_to_end_resume_and_bad_input(toy_split, tiny_predictor_dir, tmp_path):
    split_path, emoset = toy_split
    split = load_split(split_path)
    num_jobs = len(split["jobs"])
    assert num_jobs == 8 * 7
    # a source listed in the split but missing on disk (for the whole test)
    missing = split["sources"][3]
    (emoset / missing["path"]).rename(emoset / (missing["path"] + ".moved"))
    try:
        _end_to_end(split_path, split, emoset, missing, tiny_predictor_dir, tmp_path, num_jobs)
    finally:
        (emoset / (missing["path"] + ".moved")).rename(emoset / missing["path"])


def _end_to_end(split_path, split, emoset, missing, tiny_predictor_dir, tmp_path, num_jobs):
    # a method that raises on exactly one job
    bad_src = split["sources"][0]
    bad_img = load_image(emoset / bad_src["path"], SIZE).mul(255).round().div(255)
    bad_target = next(i for i, e in enumerate(EMOTIONS) if e != bad_src["emotion"])
    register_editor("test_flaky")(lambda o, c: ColourShift(fail_on=(bad_img, bad_target)))
    methods = ["colour=test_colour:paper_row=CT", "loop=test_loop:num_loop=4", "test_flaky", "identity"]
    out = tmp_path / "eval"
    BUILDS.clear()
    report = run_evaluation(_settings(out, split_path, tiny_predictor_dir, methods=methods))

    for name in ("results.csv", "table1_cross.md", "table1_cross.csv", "table1_cross.tex", "table1_within.md",
                 "table1_within.csv", "table1_within.tex", "bars.png", "per_emotion.csv", "grid_colour.png",
                 "grid_loop.png", "fig_s11.png", "fig_s11.csv", "report.json"):
        assert (out / name).is_file(), name
    assert list(report["bad_sources"]) == [missing["id"]]
    m = report["methods"]
    ok_jobs = num_jobs - 7
    assert m["colour"]["generated"] == ok_jobs and m["colour"]["bad_source"] == 7 and m["colour"]["failed"] == 0
    assert m["test_flaky"]["failed"] == 1 and m["test_flaky"]["generated"] == ok_jobs - 1
    assert m["test_flaky"]["missing_output"] == 1 and m["colour"]["missing_output"] == 0
    assert m["test_flaky"]["errors"][0]["job_id"] == f"{bad_src['id']}__{EMOTIONS[bad_target]}"
    assert "scripted failure" in m["test_flaky"]["errors"][0]["error"]

    rows = read_csv(out / "results.csv")
    count = {k: sum(r["method"] == k for r in rows) for k in ("colour", "loop", "test_flaky", "identity")}
    assert count == {"colour": ok_jobs, "loop": ok_jobs, "test_flaky": ok_jobs - 1, "identity": ok_jobs}
    # the table is the mean of the per-job rows; the paper's CT row sits beside "colour"
    table = {r["method"]: r for r in read_csv(out / "table1_cross.csv")}
    cross = [r for r in rows if r["method"] == "colour" and r["relation"] == "cross"]
    assert int(table["colour"]["n"]) == len(cross) == (8 - 1) * 4
    assert float(table["colour"]["EMR"]) == pytest.approx(100 * np.mean([r["emr"] == "True" for r in cross]))
    assert float(table["colour"]["ENRD"]) == pytest.approx(np.mean([float(r["enrd"]) for r in cross]))
    assert float(table["colour"]["paper_EMR"]) == 6.89
    # identity edits change nothing: no structural deviation
    ident = [r for r in rows if r["method"] == "identity"]
    assert all(float(r["enrd"]) == 0 and float(r["ess"]) == 0 and r["esr"] == "False" for r in ident)

    # a row equals an independent computation on the saved files
    from emoeditor.models.predictor import load_predictor
    from emoeditor.scoring.metrics import compute_all
    pred = load_predictor(tiny_predictor_dir)
    row = next(r for r in rows if r["method"] == "colour" and r["relation"] == "within")
    src = next(s for s in split["sources"] if s["id"] == row["source_id"])
    ref = compute_all(pred, load_image(emoset / src["path"], SIZE)[None],
                      load_image(out / "colour" / "images" / f"{row['job_id']}.png")[None],
                      torch.tensor([EMOTIONS.index(row["target_name"])]), size=SIZE)
    assert float(row["enrd"]) == pytest.approx(float(ref["enrd"][0]))
    assert float(row["ess"]) == pytest.approx(float(ref["ess"][0]))
    assert (row["emr"] == "True") == bool(ref["emr"][0])
    probs = [float(x) for x in row["probs_out"].split()]
    assert probs == pytest.approx(ref["probs_out"][0].tolist(), abs=1e-5) and sum(probs) == pytest.approx(1, abs=1e-4)

    # Fig. S11: k = num_loop reproduces the table; k = 1 is the first candidate of every job
    curves = read_csv(out / "fig_s11.csv")
    loop_cross = {int(r["k"]): r for r in curves if r["method"] == "loop" and r["relation"] == "cross"}
    assert sorted(loop_cross) == [1, 2, 3, 4]
    for col in ("EMR", "ESR", "ENRD", "ESS", "ESMI"):
        assert float(loop_cross[4][col]) == pytest.approx(float(table["loop"][col]))
    store = MethodStore(out, "loop")
    first = [r for r in rows if r["method"] == "loop" and r["relation"] == "cross"]
    firsts = compute_all(pred, torch.stack([load_image(emoset / next(s["path"] for s in split["sources"]
                                                                         if s["id"] == r["source_id"]), SIZE)
                                            for r in first]),
                         torch.stack([load_image(store.candidate(r["job_id"], 0)) for r in first]),
                         torch.tensor([EMOTIONS.index(r["target_name"]) for r in first]), size=SIZE)
    assert float(loop_cross[1]["ESS"]) == pytest.approx(float(firsts["ess"].mean()))
    assert float(loop_cross[1]["EMR"]) == pytest.approx(100 * float(firsts["emr"].double().mean()))
    traces = [json.loads(p.read_text()) for p in store.traces.glob("*.json")]
    assert any(t["accepted"] for t in traces) and any(not t["accepted"] for t in traces)

    # rerun: nothing new is edited or scored, no editor is even built, the tables are identical
    before = (out / "table1_cross.md").read_text()
    BUILDS.clear()
    again = run_evaluation(_settings(out, split_path, tiny_predictor_dir, methods=methods, grid=False))
    assert BUILDS == {}
    for label in ("colour", "loop", "identity"):
        st = again["methods"][label]
        assert (st["generated"], st["scored"], st["candidates_scored"]) == (0, 0, 0), label
    assert again["methods"]["colour"]["scored_cached"] == ok_jobs
    assert (out / "table1_cross.md").read_text() == before

    # a corrupt output is re-edited on the next run (and only it), or counted when only scoring
    victim = out / "colour" / "images" / f"{rows[0]['job_id']}.png"
    victim.write_bytes(b"\x89PNG\r\n garbage")
    scored_only = run_evaluation(_settings(out, split_path, tiny_predictor_dir,
                                           methods=["colour=test_colour:paper_row=CT"],
                                           skip_generation=True, fig_s11=False, grid=False))
    assert scored_only["methods"]["colour"]["corrupt_output"] == 1
    assert sum(1 for r in read_csv(out / "results.csv")) == ok_jobs - 1
    fixed = run_evaluation(_settings(out, split_path, tiny_predictor_dir, methods=["colour=test_colour:paper_row=CT"],
                                     fig_s11=False, grid=False))
    st = fixed["methods"]["colour"]
    assert (st["regenerated_corrupt"], st["generated"], st["scored"]) == (1, 1, 1)
    assert (out / "table1_cross.md").read_text().splitlines()[4] == before.splitlines()[4]  # same colour row


def test_generalisation_runs(toy_split, tiny_predictor_dir, tmp_path):
    split_path, emoset = toy_split
    # same valence only, multi-emotion targets, then a neutral folder
    out = tmp_path / "within"
    rep = run_evaluation(_settings(out, split_path, tiny_predictor_dir, methods=["test_colour"], per_class=1,
                                   relations=["within"], fig_s11=False))
    rows = read_csv(out / "results.csv")
    assert len(rows) == 8 * 3 and {r["relation"] for r in rows} == {"within"}
    assert (out / "table1_within.md").exists() and not (out / "table1_cross.md").exists()

    out = tmp_path / "multi"
    run_evaluation(_settings(out, split_path, tiny_predictor_dir, methods=["test_colour"], per_class=1,
                             targets=["awe:0.5,excitement:0.5", "fear:0.5,sadness:0.5"], fig_s11=False))
    rows = read_csv(out / "results.csv")
    assert len(rows) == 16 and {r["target_name"] for r in rows} == {"awe50-excitement50", "fear50-sadness50"}

    folder = tmp_path / "coco"
    folder.mkdir()
    for p in sorted((emoset / "image" / "awe").glob("*.jpg"))[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "neutral"
    rep = run_evaluation(_settings(out, None, tiny_predictor_dir, methods=["test_colour"], source_folder=str(folder),
                                   fig_s11=False))
    rows = read_csv(out / "results.csv")
    assert rep["num_jobs"] == 16 and {r["relation"] for r in rows} == {"neutral"}
    assert (out / "table1_neutral.md").exists()


class OddSizeOutput(ColourShift):
    """Returns its edits at 80x80, neither the source's nor the metric size."""

    def edit(self, images, targets, generators):
        out = super().edit(images, targets, generators).images
        return EditResult(torch.nn.functional.interpolate(out, size=(80, 80), mode="nearest"))


register_editor("test_odd_size")(lambda o, c: OddSizeOutput())


def test_metrics_see_the_official_resize(tiny_predictor_dir, tmp_path):
    """metric_ESMI.py opens both files and PIL-resizes them (default filter) to the metric size: no
    bilinear source (the editors' input) and no second resampling of the output."""
    from PIL import Image

    from emoeditor.models.predictor import load_predictor
    from emoeditor.scoring.metrics import compute_all

    folder = tmp_path / "src"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(folder / f"s{k}.png")
    out = tmp_path / "eval"
    run_evaluation(_settings(out, None, tiny_predictor_dir, methods=["test_odd_size"], source_folder=str(folder),
                             targets=["awe"], fig_s11=False, grid=False))
    rows = read_csv(out / "results.csv")
    assert len(rows) == 2

    def official(path):  # Image.open(path).resize((224, 224)) at our metric size, then ToTensor
        arr = np.array(Image.open(path).resize((SIZE, SIZE)).convert("RGB"))
        return torch.from_numpy(arr).permute(2, 0, 1).float()[None] / 255

    pred = load_predictor(tiny_predictor_dir)
    for row in rows:
        ref = compute_all(pred, official(folder / f"{row['source_id']}.png"),
                          official(out / "test_odd_size" / "images" / f"{row['job_id']}.png"),
                          torch.tensor([EMOTIONS.index("awe")]), size=None)
        for key in ("enrd", "ess"):  # pixels: exact
            assert float(row[key]) == float(ref[key][0]), key
        for key in ("esmi", "kl_src", "kl_out"):  # P's float32 softmax, batched differently
            assert float(row[key]) == pytest.approx(float(ref[key][0]), rel=1e-6), key


def test_unreadable_trace_is_counted_not_fatal(tmp_path):
    from emoeditor.editors.discovery import parse_method
    from emoeditor.evaluation.runner import MethodStats, iteration_curves
    from emoeditor.evaluation.split import build_jobs
    from emoeditor.imageio import save_image

    jobs = build_jobs([{"id": "s0", "emotion": "fear", "path": "s0.png"}])[:2]
    store = MethodStore(tmp_path, "loop")
    for job, text in zip(jobs, ('{"critic": "paper", "candidate_files": ["c"]',
                                '{"critic": "paper", "candidate_files": ["c"]}')):
        save_image(torch.zeros(3, 8, 8), store.image(job.job_id))
        store.trace(job.job_id).parent.mkdir(parents=True, exist_ok=True)
        store.trace(job.job_id).write_text(text)  # torn JSON; JSON without the critic's thresholds
    stats = MethodStats()
    curves = iteration_curves(parse_method("loop=test_loop"), jobs, {"s0": torch.zeros(3, 8, 8, dtype=torch.uint8)},
                              store, None, _settings(tmp_path, None, None), stats)
    assert curves == [] and stats.bad_trace == 2
    assert [e["job_id"] for e in stats.errors] == [j.job_id for j in jobs]


def test_a_damaged_fig_s11_candidate_is_re_edited_and_named(toy_split, tiny_predictor_dir, tmp_path):
    """A corrupt candidate is treated like a corrupt output: its job is re-edited (same seed, same bytes) and
    named, and Fig. S11 comes out as before. When only scoring, the job is named and left out of every k alike."""
    from emoeditor.evaluation.runner import format_summary

    split_path, _ = toy_split
    out = tmp_path / "eval"
    kw = dict(methods=["loop=test_loop:num_loop=3"], per_class=1, targets=["awe", "fear"], grid=False, bootstrap=0)
    run_evaluation(_settings(out, split_path, tiny_predictor_dir, **kw))
    before = (out / "fig_s11.csv").read_text()
    store = MethodStore(out, "loop")
    trace_path = sorted(store.traces.glob("*.json"))[0]
    job_id = trace_path.stem
    victim = store.root / json.loads(trace_path.read_text())["candidate_files"][0]  # every k=1 point uses it
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])

    scored_only = run_evaluation(_settings(out, split_path, tiny_predictor_dir, skip_generation=True, **kw))
    st = scored_only["methods"]["loop"]
    assert (st["bad_candidate"], st["generated"], st["regenerated_corrupt"]) == (1, 0, 0)
    assert [e["job_id"] for e in st["errors"] if str(victim) in e["error"]] == [job_id]
    relation = next(job["relation"] for job in load_split(split_path)["jobs"] if job["job_id"] == job_id)
    full = {r["k"]: int(r["n"]) for r in read_csv_text(before) if r["relation"] == relation}
    now = {r["k"]: int(r["n"]) for r in read_csv(out / "fig_s11.csv") if r["relation"] == relation}
    assert now == {k: n - 1 for k, n in full.items()}  # the same jobs at every k

    fixed = run_evaluation(_settings(out, split_path, tiny_predictor_dir, **kw))
    st = fixed["methods"]["loop"]
    assert (st["regenerated_corrupt"], st["generated"], st["bad_candidate"]) == (1, 1, 0)
    assert st["re_edited"] == [{"job_id": job_id, "reason": f"corrupt candidate {victim}"}]
    assert f"re-edited {job_id}: corrupt candidate {victim}" in format_summary(fixed)
    assert victim.read_bytes() == good
    assert (out / "fig_s11.csv").read_text() == before


def read_csv_text(text: str) -> list[dict]:
    import csv
    import io
    return list(csv.DictReader(io.StringIO(text)))


def test_cli_reports_bad_split_without_traceback(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts/evaluate.py"), "--config", str(ROOT / "configs/eval_tiny.yaml"),
           "--split", str(tmp_path / "nope.json"), "--predictor", str(tmp_path), "--out", str(tmp_path / "out")]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and "make_test_split.py" in bad.stderr and "Traceback" not in bad.stderr


def _evaluate_main():
    """scripts/evaluate.py's main, run in-process (the subprocess start-up alone costs more than the run)."""
    return load_script("scripts/evaluate.py").main


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_base_dir, tmp_path_factory):
    """A tiny exported EmoEditor (random weights) in the layout --model expects."""
    from emoeditor.editing.pipeline import EmoEditorPipeline
    from emoeditor.models.components import load_base_components
    from emoeditor.models.tiny import tiny_emotion_encoder
    pipe = EmoEditorPipeline(emotion_encoder=tiny_emotion_encoder(0),
                             **load_base_components(tiny_base_dir, text=False))
    folder = tmp_path_factory.mktemp("tiny_emoeditor")
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def test_cli_tiny_emoeditor_tables_fig_s11_and_rerun(toy_split, tiny_predictor_dir, tiny_model_dir, tmp_path, capsys):
    """Done-criterion of the issue: the tiny default writes every table and plot, and a rerun computes nothing."""
    split_path, _ = toy_split
    out = tmp_path / "cli"
    argv = ["--config", str(ROOT / "configs/eval_tiny.yaml"),
           "--split", str(split_path), "--predictor", str(tiny_predictor_dir), "--model", str(tiny_model_dir),
           "--methods", "ours", "wo_P", "official=ours_official", "identity",
           "--per_class", "1", "--targets", "awe", "fear", "--out", str(out)]
    main = _evaluate_main()
    main(argv)
    stdout = capsys.readouterr().out
    assert "14 jobs" in stdout and "ours: 14 edited" in stdout
    for name in ("results.csv", "table1_cross.md", "table1_cross.tex", "table1_within.csv", "bars.png",
                 "per_emotion.csv", "grid_ours.png", "grid_wo_P.png", "fig_s11.png", "fig_s11.csv", "report.json"):
        assert (out / name).is_file(), name
    table = {r["method"]: r for r in read_csv(out / "table1_cross.csv")}
    assert table["ours"]["paper_row"] == "Ours" and float(table["wo_P"]["paper_EMR"]) == 5.06
    curves = read_csv(out / "fig_s11.csv")
    for method in ("ours", "official"):
        mine = {int(r["k"]): r for r in curves if r["method"] == method and r["relation"] == "cross"}
        assert sorted(mine) == [1, 2, 3]  # eval_tiny.yaml: num_loop 3
        for col in ("EMR", "ESR", "ENRD", "ESS"):
            assert float(mine[3][col]) == pytest.approx(float(table[method][col]))
    assert not any(r["method"] == "wo_P" for r in curves)  # one pass: no iterations to ablate
    # same per-job seeds: the critic loop's first candidate is exactly the one-pass (w/o P) edit
    k1 = next(r for r in curves if r["method"] == "ours" and r["relation"] == "cross" and r["k"] == "1")
    for col in ("EMR", "ESR", "ENRD", "ESS", "ESMI"):
        assert float(k1[col]) == pytest.approx(float(table["wo_P"][col]))
    traces = [json.loads(p.read_text()) for p in (out / "ours" / "traces").glob("*.json")]
    assert len(traces) == 14 and all(len(t["candidate_files"]) == len(t["iterations"]) for t in traces)
    assert not (out / "wo_P" / "candidates").exists()  # one pass keeps no candidates

    main(argv + ["--no_grid"])
    report = json.loads((out / "report.json").read_text())
    for label, st in report["methods"].items():
        assert (st["generated"], st["scored"], st["candidates_scored"]) == (0, 0, 0), label
        assert st["cached"] == 14 and st["scored_cached"] == 14


@pytest.mark.parametrize("fails", ["trace", "candidate"])
def test_a_save_failing_before_the_output_leaves_the_job_to_be_re_edited(fails, toy_split, tiny_predictor_dir,
                                                                          tmp_path, monkeypatch):
    """_save_job writes candidates and trace first and the output image last, since the image marks the job
    done. When the trace (or the second candidate) of one job fails to save, that job has no output, so the
    rerun edits it again (same seed: the same bytes as a clean run) instead of counting it done without
    the files Fig. S11 reads."""
    from emoeditor.editors.registry import MethodContext
    from emoeditor.evaluation import runner

    split_path, _ = toy_split
    settings = _settings(tmp_path, split_path, tiny_predictor_dir, per_class=1, targets=["awe"])
    jobs, root = runner.load_jobs(settings)
    sources, bad = runner.load_sources(jobs, root, SIZE)
    spec = parse_method("loop=test_loop:num_loop=3")
    context = MethodContext(predictor=str(tiny_predictor_dir))
    clean, store = MethodStore(tmp_path / "clean", "loop"), MethodStore(tmp_path / "broken", "loop")
    assert runner.generate(spec, jobs, sources, bad, clean, settings, context).generated == len(jobs)
    # A job whose critic loop ran at least twice, so a candidate can fail after another was written.
    victim = next(j.job_id for j in jobs
                  if len(json.loads(clean.trace(j.job_id).read_text())["candidate_files"]) >= 2)
    failing = store.trace(victim) if fails == "trace" else store.candidate(victim, 1)

    def boom(path):
        if Path(path) == failing:
            raise OSError(28, "No space left on device")

    real_text, real_save = runner.atomic_write_text, runner._atomic_save
    monkeypatch.setattr(runner, "atomic_write_text", lambda path, *a, **k: (boom(path), real_text(path, *a, **k)))
    monkeypatch.setattr(runner, "_atomic_save", lambda image, path: (boom(path), real_save(image, path)))
    first = runner.generate(spec, jobs, sources, bad, store, settings, context)
    assert (first.generated, first.failed) == (len(jobs) - 1, 1)
    assert first.errors[0]["job_id"] == victim and first.errors[0]["stage"] == "save"
    assert not store.image(victim).exists() and not failing.exists()
    monkeypatch.undo()

    rerun = runner.generate(spec, jobs, sources, bad, store, settings, context)
    assert (rerun.generated, rerun.cached, rerun.failed) == (1, len(jobs) - 1, 0)  # the victim, edited again
    assert not store.error(victim).exists()
    files = json.loads(clean.trace(victim).read_text())["candidate_files"]
    for rel in [f"images/{victim}.png", f"traces/{victim}.json", *files]:
        assert (store.root / rel).read_bytes() == (clean.root / rel).read_bytes(), rel
    assert runner.generate(spec, jobs, sources, bad, store, settings, context).cached == len(jobs)


def test_sharded_generation_matches_one_process(toy_split, tmp_path):
    """Two accelerate ranks each edit every other missing job; together they write what one process writes."""
    from emoeditor.editors.registry import MethodContext
    from emoeditor.evaluation.runner import generate, load_jobs, load_sources
    split_path, _ = toy_split
    settings = _settings(tmp_path, split_path, "unused", per_class=1, targets=["awe", "sadness"])
    jobs, root = load_jobs(settings)
    sources, bad = load_sources(jobs, root, SIZE)
    spec = parse_method("test_colour")
    one, two = MethodStore(tmp_path / "one", "m"), MethodStore(tmp_path / "two", "m")
    assert generate(spec, jobs, sources, bad, one, settings, MethodContext()).generated == len(jobs) == 14
    shards = [generate(spec, jobs, sources, bad, two, settings, MethodContext(), rank=r, world=2) for r in (0, 1)]
    assert [s.generated for s in shards] == [7, 7]
    for job in jobs:
        assert one.image(job.job_id).read_bytes() == two.image(job.job_id).read_bytes()


@pytest.mark.slow
def test_two_process_run_equals_one_process(toy_split, tiny_predictor_dir, tiny_model_dir, tmp_path):
    """`accelerate launch` with 2 CPU processes: each edits its shard, rank 0 sums the counts and
    writes the tables; every output is byte-identical to a one-process run (per-job seeds)."""
    import os
    import socket
    split_path, _ = toy_split
    args = ["--config", str(ROOT / "configs/eval_tiny.yaml"), "--split", str(split_path),
            "--predictor", str(tiny_predictor_dir), "--model", str(tiny_model_dir), "--methods", "ours",
            "--per_class", "1", "--targets", "awe", "--num_loop", "2", "--no_grid", "--bootstrap", "0"]
    _evaluate_main()(args + ["--out", str(tmp_path / "one")])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           str(ROOT / "scripts/evaluate.py"), *args, "--out", str(tmp_path / "two")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["num_jobs"] == 7 and report["methods"]["ours"]["generated"] == 7
    assert report["methods"]["ours"]["scored"] == 7
    one = sorted((tmp_path / "one" / "ours" / "images").glob("*.png"))
    assert len(one) == 7
    for p in one:
        assert p.read_bytes() == (tmp_path / "two" / "ours" / "images" / p.name).read_bytes(), p.name
    assert (tmp_path / "one" / "table1_cross.csv").read_text() == (tmp_path / "two" / "table1_cross.csv").read_text()


INVERT_METHOD = '''"""A toy method for the discovery test: inverts the colours."""

from emoeditor.editors.base import EditResult, Editor
from emoeditor.editors.registry import register_editor


class InvertEditor(Editor):
    name = "invert"

    def edit(self, images, targets, generators):
        return EditResult(images=1 - images)


@register_editor("invert", paper_row="Invert")
def _invert(options, context):
    return InvertEditor()
'''


def test_a_method_is_one_file_in_editors(toy_split, tiny_predictor_dir, tmp_path):
    """Dropping one file into emoeditor/editors/ makes `scripts/evaluate.py --methods` run it; nothing else changes.

    The package is copied so the file never appears in the tree other tests import from."""
    import os
    import shutil

    split_path, _ = toy_split
    pkg = tmp_path / "site" / "emoeditor"
    shutil.copytree(ROOT / "emoeditor", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "editors" / "invert.py").write_text(INVERT_METHOD)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts/evaluate.py"), "--config", str(ROOT / "configs/eval_tiny.yaml"),
           "--split", str(split_path), "--predictor", str(tiny_predictor_dir), "--methods", "invert", "identity",
           "--per_class", "1", "--targets", "awe", "--no_grid", "--bootstrap", "0", "--device", "cpu",
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["methods"]["invert"]["generated"] == report["num_jobs"] == 7
    for inverted in sorted((out / "invert" / "images").glob("*.png")):
        source = load_image(out / "identity" / "images" / inverted.name, None)
        torch.testing.assert_close(load_image(inverted, None), 1 - source, rtol=0, atol=1 / 255 + 1e-6)
    table = (out / "table1_cross.md").read_text()
    assert "| invert | Invert |" in table
    assert not (ROOT / "emoeditor" / "editors" / "invert.py").exists()


def test_wo_p_presets_are_the_two_readings():
    """"w/o P": no critic, P still in the direction input; "wo_P_onehot": P removed everywhere."""
    assert parse_method("wo_P").opts == {"critic": "none"}
    onehot_row = parse_method("wo_P_onehot")
    assert onehot_row.opts == {"critic": "none", "emotion_input": "onehot"} and onehot_row.paper_row == "w/o P"
