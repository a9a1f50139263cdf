"""Shared fixtures: tiny random-weight components written once per session in the real layouts."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch

torch.set_num_threads(1)  # xdist runs one worker per core


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """A tiny InstructPix2Pix folder (diffusers layout), as a local copy of the hub model would be."""
    from emoeditor.models.tiny import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny_ip2p"), seed=0)


@pytest.fixture(scope="session")
def tiny_predictor_dir(tmp_path_factory):
    from emoeditor.models.tiny import save_tiny_predictor

    return save_tiny_predictor(tmp_path_factory.mktemp("tiny_predictor"), seed=0)


@pytest.fixture(scope="session")
def toy_emopair(tmp_path_factory):
    """A 24-pair toy EmoPair at 64px in the official layout: (image root, annotation json path)."""
    from emoeditor.data.toy import write_toy_emopair

    base = tmp_path_factory.mktemp("toy_emopair")
    json_path = write_toy_emopair(base / "EmoPair", base / "json" / "data_EmoPair.json", num_pairs=24, image_size=64,
                                  seed=0)
    return base / "EmoPair", json_path
