"""The README's main job: scripts/demo.py fine-tunes the miniature model a few steps, edits a photo
toward a target style (P's confidence in the target rises) and writes the model, the edit and its trace."""

import csv
import json
from pathlib import Path

import torch
from repo_scripts import REPO, load_script
from safetensors.torch import load_file

from emoeditor.constants import EMOTIONS
from emoeditor.imageio import load_image


def _demo_module():
    return load_script("scripts/demo.py")


def test_demo_trains_edits_and_writes_trace(tmp_path):
    out = tmp_path / "demo"
    written = _demo_module().main(["--out", str(out), "--train_steps", "4", "--target_emo", "sadness"])

    # training changed the weights it started from: the shipped miniature's
    trained = load_file(str(out / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    base = load_file(str(REPO / "mini_world" / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert set(trained) == set(base)
    assert any(not torch.equal(trained[k], base[k]) for k in base)

    [image] = written["edited_images"]
    assert Path(image).name == "0_sadness_chelsea.png"
    edited = load_image(image)
    assert edited.shape == (3, 64, 64) and 0 <= edited.min() and edited.max() <= 1

    [trace_path] = written["traces"]
    trace = json.loads(Path(trace_path).read_text())
    assert trace["critic"] == "paper" and trace["target"] == [0, 0, 0, 0, 0, 0, 0, 1.0]
    assert 1 <= len(trace["iterations"]) <= trace["thresholds"]["num_loop"]
    for it in trace["iterations"]:
        assert abs(sum(it["probs"]) - 1) < 1e-4 and 700 <= it["start_timestep"] <= 980
    # a real edit: the returned image is more "sadness" to P than the photo was (measured: 0.009 -> 0.943)
    sadness = EMOTIONS.index("sadness")
    returned = trace["iterations"][trace["returned"]]["probs"]
    assert returned[sadness] > trace["source_probs"][sadness] + 0.2, (trace["source_probs"], returned)

    [row] = list(csv.DictReader(open(written["summary_csv"])))
    assert row["target"] == "sadness" and int(row["iterations"]) == len(trace["iterations"])
    assert written["strips"] and written["training_strips"]
