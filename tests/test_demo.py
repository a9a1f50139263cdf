"""The README's main job: scripts/demo.py on the tiny default writes a trained model, an edit and its trace."""

import csv
import json
from pathlib import Path

import torch
from repo_scripts import load_script
from safetensors.torch import load_file

from emoeditor.imageio import load_image


def _demo_module():
    return load_script("scripts/demo.py")


def test_demo_trains_edits_and_writes_trace(tmp_path):
    out = tmp_path / "demo"
    written = _demo_module().main(["--out", str(out), "--train_steps", "4", "--target_emo", "fear"])

    # training changed the weights it started from
    trained = load_file(str(out / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    base = load_file(str(out / "base_ip2p" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert set(trained) == set(base)
    assert any(not torch.equal(trained[k], base[k]) for k in base)

    [image] = written["edited_images"]
    assert Path(image).name == "0_fear_chelsea.png"
    edited = load_image(image)
    assert edited.shape == (3, 64, 64) and 0 <= edited.min() and edited.max() <= 1

    [trace_path] = written["traces"]
    trace = json.loads(Path(trace_path).read_text())
    assert trace["critic"] == "paper" and trace["target"] == [0, 0, 0, 0, 0, 0, 1.0, 0]
    assert 1 <= len(trace["iterations"]) <= trace["thresholds"]["num_loop"]
    for it in trace["iterations"]:
        assert abs(sum(it["probs"]) - 1) < 1e-4 and 700 <= it["start_timestep"] <= 980

    [row] = list(csv.DictReader(open(written["summary_csv"])))
    assert row["target"] == "fear" and int(row["iterations"]) == len(trace["iterations"])
    assert written["strips"] and written["training_strips"]
