"""Shared fixtures: tiny random-weight components written once per session in the real layouts."""

import logging
import os
import shutil
import subprocess
import warnings

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


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """test.py's inputs, per test module: a random-weight tiny model, predictor and two photos (imgs/)."""
    from emoeditor.cli.edit import write_tiny_assets

    root = tmp_path_factory.mktemp("tiny_edit")
    write_tiny_assets(root / "model", root / "predictor", root / "imgs")
    return root


@pytest.fixture(scope="session")
def toy_emopair(tmp_path_factory):
    """A 24-pair toy EmoPair at 64px in the official layout: (image root, annotation json path)."""
    from emoeditor.data.toy import write_toy_emopair

    base = tmp_path_factory.mktemp("toy_emopair")
    json_path = write_toy_emopair(base / "EmoPair", base / "json" / "data_EmoPair.json", num_pairs=24, image_size=64,
                                  seed=0)
    return base / "EmoPair", json_path


@pytest.fixture(autouse=True)
def restore_logging():
    """The entry points configure logging (emoeditor.logs); give the next test the state it had."""
    root = logging.getLogger()
    handlers, level, ours = root.handlers[:], root.level, logging.getLogger("emoeditor").level
    filters = warnings.filters[:]
    yield
    root.handlers[:], root.level = handlers, level
    logging.getLogger("emoeditor").setLevel(ours)
    warnings.filters[:] = filters


def _writable(folder) -> bool:
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.fixture
def read_only(tmp_path):
    """A folder no one may write to: chmod for a normal user; root ignores modes, so also the immutable
    attribute where the filesystem and capabilities allow it (else the test is skipped)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if _writable(folder) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    if _writable(folder):
        folder.chmod(0o755)
        pytest.skip("cannot make a read-only folder here (root without chattr +i)")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)
