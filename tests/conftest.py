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
    from emoeditor.tiny import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny_ip2p"), seed=0)


@pytest.fixture(scope="session")
def tiny_predictor_dir(tmp_path_factory):
    from emoeditor.tiny import save_tiny_predictor

    return save_tiny_predictor(tmp_path_factory.mktemp("tiny_predictor"), seed=0)
