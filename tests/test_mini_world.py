"""The shipped miniature world (mini_world/): its weights are the ones the build recorded, P classifies
the eight styles, EmoEditor with its critic moves images toward the target style (a miniature Table 1:
it beats one pass without the critic and the identity), and three changes that random weights could not
tell apart from the real thing each measurably lower EMR: flipping the sign of the direction input,
permuting the emotion order the encoder reads, and a critic returning its worst candidate.

Fresh toy images (seeds the build never used) are the test sources. Thresholds are stated beside the
values measured when the shipped weights were built (2 CPU cores, torch 2.14); they leave a margin
for other machines' float noise.
"""

import json

import pytest
import torch
from repo_scripts import REPO

from emoeditor.cli.build_mini_world import MANIFEST, predictor_accuracy, table1_numbers
from emoeditor.cli.build_mini_world import main as build_main
from emoeditor.data.toy_emoset import write_toy_emoset
from emoeditor.editing import critic as critic_module
from emoeditor.editors import emoeditor as emoeditor_module
from emoeditor.evaluation.runner import EvalSettings, run_evaluation
from emoeditor.evaluation.split import make_test_split, save_split
from emoeditor.fileio import sha256sum

MINI = REPO / "mini_world"
SIZE = 64
NUM_LOOP, STEPS = 5, 10  # the build's evaluation runs 10 x 20; fewer here to keep CI short

# Floors, with the values measured on the shipped weights (2 sources per emotion, 5 iterations of 10 steps).
P_TOP1_FLOOR = 0.9  # measured: 1.0
EMR_OURS_FLOOR = 30.0  # % (measured: 42.9)
EMR_MARGIN_OVER_IDENTITY = 30.0  # measured: 42.9 (identity 0.0)
EMR_MARGIN_OVER_WO_P = 2.0  # measured: 5.4 (w/o P 37.5): the critic helps
ESR_MARGIN_OVER_WO_P = 0.0  # measured: 0.0 (91.1 both: one pass already moves nearly every image toward it)
EMR_DROP_WORST = 5.0  # a critic returning its worst candidate (measured: 42.9 -> 34.8)
EMR_DROP_FLIP = 20.0  # the direction input's sign flipped (measured: 42.9 -> 10.7)
EMR_DROP_PERMUTE = 15.0  # the encoder reading the emotions in another order (measured: 42.9 -> 18.8)
ESS_MAX, ENRD_MAX = 5.0, 40.0  # measured: 1.4, 29.3


def manifest() -> dict:
    return json.loads((MINI / MANIFEST).read_text())


def test_shipped_weights_match_the_manifest():
    listed = manifest()["files"]
    on_disk = sorted(p.relative_to(MINI).as_posix() for p in MINI.rglob("*.safetensors"))
    assert sorted(listed) == on_disk
    assert {"model/unet/diffusion_pytorch_model.safetensors", "model/vae/diffusion_pytorch_model.safetensors",
            "emo_predictor/model.safetensors"} <= set(on_disk)
    for rel, digest in listed.items():
        assert sha256sum(MINI / rel) == digest, f"{rel} is not the file scripts/build_mini_world.py recorded"


def test_readme_reports_the_manifest_numbers():
    text = (MINI / "README.md").read_text()
    assert f"{100 * manifest()['measured']['predictor_top1']:.1f}%" in text
    assert "not the paper's model" in text


@pytest.fixture(scope="module")
def fresh_split(tmp_path_factory):
    """Toy test sources the build never saw (another seed): 2 per emotion, 7 targets each."""
    tmp = tmp_path_factory.mktemp("mini_split")
    root = write_toy_emoset(tmp / "EmoSet", "release", per_class=(0, 0, 2), image_size=SIZE, seed=20261129)
    return save_split(make_test_split(root, None, per_class=2, seed=0), tmp / "split.json"), root


def test_predictor_accuracy_on_fresh_images(fresh_split):
    _, root = fresh_split
    top1 = predictor_accuracy(MINI / "emo_predictor", root)
    assert top1 >= P_TOP1_FLOOR, f"P's top-1 on fresh toy images fell to {top1}"


def evaluate(split, out, methods=("ours",)) -> dict:
    settings = EvalSettings(out=str(out), split=str(split), methods=tuple(methods), model=str(MINI / "model"),
                            predictor=str(MINI / "emo_predictor"), num_loop=NUM_LOOP, num_inference_steps=STEPS,
                            image_size=SIZE, metric_size=SIZE, bootstrap=0, grid=False, fig_s11=False,
                            device="cpu", seed=0, return_candidates=False)
    run_evaluation(settings)
    return table1_numbers(out)["all"]


def _worst_candidate(monkeypatch):
    """The paper critic never accepts and, after num_loop edits, returns the least confident one."""

    def decide(self, it, probs):
        it.accepted = False
        if len(self.iterations) >= self.config.num_loop:
            worst = min(range(len(self.iterations)), key=lambda i: self.iterations[i].target_confidence)
            return self._finish(worst, "worst candidate (test)", accepted=False)
        self.next_input = it.index

    monkeypatch.setattr(critic_module.PaperCritic, "_decide", decide)
    monkeypatch.setattr(critic_module.PaperCritic, "_candidates_in_reserve",
                        lambda self: set(range(len(self.iterations))))


def _flipped_direction(monkeypatch):
    """The encoder reads P(source) - target: "away from the target"."""
    original = emoeditor_module.emotion_input
    monkeypatch.setattr(emoeditor_module, "emotion_input", lambda target, probs, mode: -original(target, probs, mode))


def _permuted_emotions(monkeypatch):
    """The encoder reads the emotions shifted one place (amusement's slot holds anger's value, ...), so every
    target asks for another style; the critic still judges the true target."""
    original = emoeditor_module.emotion_input
    order = torch.roll(torch.arange(8), -1)
    monkeypatch.setattr(emoeditor_module, "emotion_input",
                        lambda target, probs, mode: original(target, probs, mode)[:, order.to(target.device)])


@pytest.mark.slow
@pytest.mark.mini_world
def test_miniature_table1_and_three_changes_that_lower_emr(fresh_split, monkeypatch, tmp_path):
    """One test, so the evaluations never run on two xdist workers' copies of one fixture."""
    table1 = evaluate(fresh_split[0], tmp_path / "table1", ("ours", "wo_P", "identity"))
    ours, wo_p, identity = table1["ours"], table1["wo_P"], table1["identity"]
    assert ours["EMR"] >= EMR_OURS_FLOOR, table1
    assert ours["EMR"] >= identity["EMR"] + EMR_MARGIN_OVER_IDENTITY, table1
    assert ours["EMR"] >= wo_p["EMR"] + EMR_MARGIN_OVER_WO_P, table1
    assert ours["ESR"] >= wo_p["ESR"] + ESR_MARGIN_OVER_WO_P and identity["ESR"] == 0, table1
    assert ours["ESS"] <= ESS_MAX and ours["ENRD"] <= ENRD_MAX, table1

    changes = (("worst", _worst_candidate, EMR_DROP_WORST), ("flip", _flipped_direction, EMR_DROP_FLIP),
               ("permute", _permuted_emotions, EMR_DROP_PERMUTE))
    for name, change, drop in changes:
        with monkeypatch.context() as patch:
            change(patch)
            changed = evaluate(fresh_split[0], tmp_path / name)["ours"]
        assert changed["EMR"] <= ours["EMR"] - drop, (name, changed, ours)


@pytest.mark.slow
@pytest.mark.mini_world
def test_reduced_build_runs_resumes_and_is_deterministic(tmp_path):
    """CI never retrains the shipped weights: the reduced build (a few steps of every stage) runs,
    a second build from nothing gives the same bytes, and a rerun on a finished work folder skips
    every training stage."""
    def build(name):
        return build_main(["--reduced", "--work", str(tmp_path / name), "--out", str(tmp_path / f"{name}_ship"),
                           "--threads", "1", "--quiet"])

    first = build("a")
    assert len(first["files"]) == 5 and (tmp_path / "a_ship" / "README.md").is_file()
    assert build("b")["files"] == first["files"]
    vae = tmp_path / "a" / "vae" / "diffusion_pytorch_model.safetensors"
    stamp = vae.stat().st_mtime_ns
    assert build("a")["files"] == first["files"] and vae.stat().st_mtime_ns == stamp
