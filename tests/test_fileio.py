import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emoeditor.fileio import atomic_write, atomic_write_text, plain, sha256sum
from emoeditor.models import predictor as predictor_module
from emoeditor.models.predictor import (
    PREDICTOR_CONFIG,
    PREDICTOR_PT,
    PREDICTOR_WEIGHTS,
    load_predictor,
    save_predictor,
)
from emoeditor.models.release import read_checksums, record_checksum
from emoeditor.models.tiny import tiny_predictor


def test_atomic_write_replaces_only_when_the_writer_finishes(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.json", "old")
    seen = []

    def broken(tmp):
        seen.append(tmp)
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken, tag="3")
    assert path.read_text() == "old"  # the destination never holds a half-written file
    assert seen[0].parent == path.parent and seen[0].suffix == ".json" and "3" in seen[0].name
    assert not seen[0].exists()  # nor is the partial temporary left behind
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and not (path.parent / ".a.tmp.json").exists()


def test_sha256sum_equals_hashlib(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    assert sha256sum(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_plain_makes_json_and_weights_only_safe_values(tmp_path):
    value = {"path": tmp_path, 1: (torch.tensor([0.5, 1.0]), np.float32(0.25), np.int64(3), np.bool_(True)),
             "t": torch.tensor(2), "none": None}
    out = plain(value)
    assert out == {"path": str(tmp_path), "1": [[0.5, 1.0], 0.25, 3, True], "t": 2, "none": None}
    assert json.loads(json.dumps(out)) == out


# ------------------------------------------------- every lasting file survives a writer that dies midway
def dies_halfway(real, path_arg: int):
    """`real` writer that gets half its bytes to disk and then fails, as on a full disk."""
    def writer(*args, **kwargs):
        real(*args, **kwargs)
        path = Path(args[path_arg])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise OSError("No space left on device")
    return writer


@pytest.fixture(scope="module")
def predictors():
    return tiny_predictor(0), tiny_predictor(1)


@pytest.mark.parametrize("kind, target, name, path_arg", [
    (PREDICTOR_WEIGHTS, predictor_module, "save_file", 1),
    (PREDICTOR_PT, torch, "save", 1),
    (PREDICTOR_CONFIG, Path, "write_text", 0),
])
def test_predictor_save_that_dies_midway_keeps_the_previous_file(tmp_path, monkeypatch, predictors, kind, target,
                                                                 name, path_arg):
    old, new = predictors
    folder = save_predictor(old, tmp_path / "predictor", extra={"run": 1})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) == {PREDICTOR_WEIGHTS, PREDICTOR_CONFIG, PREDICTOR_PT}
    monkeypatch.setattr(target, name, dies_halfway(getattr(target, name), path_arg))
    with pytest.raises(OSError, match="No space"):
        save_predictor(new, folder, extra={"run": 2})
    monkeypatch.undo()
    assert (folder / kind).read_bytes() == before[kind]
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)  # no partial temporaries
    if kind == PREDICTOR_CONFIG:
        assert json.loads((folder / kind).read_text())["run"] == 1
    else:
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(load_predictor(folder / kind)(x), old(x), rtol=0, atol=0)


def test_checksum_update_that_dies_midway_keeps_the_previous_sums(tmp_path, monkeypatch):
    record_checksum(tmp_path, "a.pt", "a" * 64)
    before = (tmp_path / "SHA256SUMS").read_bytes()
    monkeypatch.setattr(Path, "write_text", dies_halfway(Path.write_text, 0))
    with pytest.raises(OSError, match="No space"):
        record_checksum(tmp_path, "b.pt", "b" * 64)
    monkeypatch.undo()
    assert (tmp_path / "SHA256SUMS").read_bytes() == before and read_checksums(tmp_path) == {"a.pt": "a" * 64}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS"]
    record_checksum(tmp_path, "b.pt", "b" * 64)
    assert read_checksums(tmp_path) == {"a.pt": "a" * 64, "b.pt": "b" * 64}
