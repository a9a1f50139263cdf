import hashlib

import pytest

from emoeditor.fileio import atomic_write, atomic_write_text, plain, sha256sum


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
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and not (path.parent / ".a.tmp.json").exists()


def test_sha256sum_equals_hashlib(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    assert sha256sum(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_plain_makes_json_and_weights_only_safe_values(tmp_path):
    import json

    import numpy as np
    import torch

    value = {"path": tmp_path, 1: (torch.tensor([0.5, 1.0]), np.float32(0.25), np.int64(3), np.bool_(True)),
             "t": torch.tensor(2), "none": None}
    out = plain(value)
    assert out == {"path": str(tmp_path), "1": [[0.5, 1.0], 0.25, 3, True], "t": 2, "none": None}
    assert json.loads(json.dumps(out)) == out
