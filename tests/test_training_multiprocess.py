"""`accelerate launch` with 2 CPU processes (gloo): ranks build the latent cache together, agree on the
weights, and only rank 0 writes checkpoints and logs."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emoeditor.training import checkpoint as ckpt
from emoeditor.training.trainer import weights_digest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path, tiny_base_dir, toy_emopair):
    root, json_path = toy_emopair
    # --multi_gpu selects accelerate's torch.distributed launcher; --cpu makes the ranks use gloo on CPU.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()),
           str(REPO / "train.py"), "--cpu", "--base_model", str(tiny_base_dir), "--json_path", str(json_path),
           "--data_root", str(root), "--image_size", "64", "--encoder_hidden", "16", "32", "32",
           "--batch_size", "4", "--gradient_accumulation_steps", "2", "--max_steps", "3", "--num_workers", "0",
           "--learning_rate", "1e-3", "--save_model_dir", str(tmp_path / "models"),
           "--train_save_dir", str(tmp_path / "logs"), "--checkpoint_every", "2", "--log_every", "1",
           "--image_every", "3", "--no_progress",
           # the ranks split the cache shards between them (3 shards of 10 pairs)
           "--latent_cache", str(tmp_path / "cache"), "--cache_shard_size", "10"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]

    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "COMPLETE", "meta.json", "shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors"]
    summary = json.loads((tmp_path / "models" / "model" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 3
    final = ckpt.list_checkpoints(ckpt.checkpoint_root(tmp_path / "models"))[-1]
    weights = load_file(str(final / ckpt.MODEL_FILE))
    # Both ranks ended with exactly the weights rank 0 saved.
    assert summary["rank_weight_digests"] == [weights_digest(weights)] * 2
    assert all(torch.isfinite(v).all() for v in weights.values())
    # Only rank 0 logged and wrote strips.
    assert len(list((tmp_path / "logs" / "tensorboard").iterdir())) == 1
    assert len(list((tmp_path / "logs" / "images").glob("*.png"))) == 1
    assert [p.name for p in ckpt.list_checkpoints(ckpt.checkpoint_root(tmp_path / "models"))] == \
        ["step_00000002", "step_00000003"]
