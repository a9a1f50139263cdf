"""The test split: 63 unused EmoSet images per class, 7 edits each, cross/within tags."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emoeditor.constants import EMOTIONS, POSITIVE
from emoeditor.evaluation.split import NEUTRAL, build_jobs, folder_sources, list_emoset, load_split, make_test_split, subset_sources
from emoeditor.errors import SplitError

ROOT = Path(__file__).resolve().parent.parent


def _emoset_release(root: Path, per_class: int) -> Path:
    """EmoSet-118K layout: image/<emo>/<emo>_xxxxx.jpg listed in train/val/test.json (files need not exist)."""
    entries = [[e, f"image/{e}/{e}_{i:05d}.jpg", f"annotation/{e}/{e}_{i:05d}.json"]
               for e in EMOTIONS for i in range(per_class)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.json").write_text(json.dumps(entries[0::2]))
    (root / "test.json").write_text(json.dumps(entries[1::2]))
    return root


def _emopair(path: Path, used: list[str]) -> Path:
    path.write_text(json.dumps([{"img_src_path": f"EPGS/{u}", "img_tgt_path": f"EPGS/edited/x_{k}.png",
                                 "class_source": "awe", "class_target": "fear", "source_softmax": [0.125] * 8,
                                 "prompt": "p"} for k, u in enumerate(used)]))
    return path


def test_split_excludes_emopair_and_counts(tmp_path):
    root = _emoset_release(tmp_path / "EmoSet", per_class=70)
    used = [f"{e}/{e}_{i:05d}.jpg" for e in EMOTIONS for i in range(5)]  # first 5 of every class are in EmoPair
    split = make_test_split(root, _emopair(tmp_path / "pairs.json", used), per_class=63, seed=3)
    assert split["num_sources"] == 504 and split["num_jobs"] == 3528
    assert split["num_cross"] == 504 * 4 and split["num_within"] == 504 * 3
    for emotion in EMOTIONS:
        mine = [s for s in split["sources"] if s["emotion"] == emotion]
        assert len(mine) == 63
        assert all(int(s["id"].split("_")[1]) >= 5 for s in mine)  # none of the EmoPair images
        assert all(s["path"].startswith(f"image/{emotion}/") for s in mine)
    # seeded: same seed same split, other seed another one
    assert make_test_split(root, tmp_path / "pairs.json", 63, seed=3)["sources"] == split["sources"]
    assert make_test_split(root, tmp_path / "pairs.json", 63, seed=4)["sources"] != split["sources"]


def test_jobs_are_the_other_seven_with_valence_tags():
    sources = [{"id": f"{e}_0", "emotion": e, "path": f"{e}.jpg"} for e in EMOTIONS]
    jobs = build_jobs(sources)
    assert len(jobs) == 56 and len({j.job_id for j in jobs}) == 56
    for j in jobs:
        tgt = EMOTIONS[int(torch.tensor(j.target).argmax())]
        assert tgt != j.source_emotion and j.target_name == tgt
        assert j.relation == ("within" if (tgt in POSITIVE) == (j.source_emotion in POSITIVE) else "cross")
    within = build_jobs(sources, relations=["within"])
    assert len(within) == 8 * 3 and all(j.relation == "within" for j in within)
    # per-job seeds do not depend on anything but the job id and the base seed
    assert jobs[0].seed(0) == build_jobs(sources[:1])[0].seed(0) != jobs[0].seed(1)


def test_multi_emotion_targets_and_neutral_sources(tmp_path):
    sources = [{"id": "a", "emotion": "fear", "path": "a.jpg"}, {"id": "b", "emotion": "awe", "path": "b.jpg"}]
    jobs = build_jobs(sources, targets=["awe:0.5,excitement:0.5", "awe", "fear:1,awe:1"])
    by_id = {j.job_id: j for j in jobs}
    assert set(by_id) == {"a__awe50-excitement50", "a__awe", "a__awe50-fear50", "b__awe50-excitement50",
                          "b__awe50-fear50"}  # b -> awe is not an edit
    assert by_id["a__awe50-excitement50"].relation == "cross"
    assert by_id["b__awe50-excitement50"].relation == "within"
    assert by_id["a__awe50-fear50"].relation == "mixed"
    assert by_id["a__awe50-excitement50"].target == pytest.approx((0, 0, 0.5, 0, 0, 0.5, 0, 0))
    from PIL import Image
    for name in ("x.png", "y.jpg"):
        Image.new("RGB", (40, 40)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    neutral = folder_sources(tmp_path)
    assert [s["id"] for s in neutral] == ["x", "y"] and all(s["emotion"] == NEUTRAL for s in neutral)
    njobs = build_jobs(neutral)
    assert len(njobs) == 16 and all(j.relation == NEUTRAL for j in njobs)


def test_folder_layout_too_few_and_allow_fewer(tmp_path):
    from PIL import Image
    root = tmp_path / "emoset"
    for k, e in enumerate(EMOTIONS):
        (root / e).mkdir(parents=True)
        for i in range(3 if e != "anger" else 1):
            Image.new("RGB", (40, 40), (k * 20, i * 50, 0)).save(root / e / f"{e}_{i}.jpg")
    assert len(list_emoset(root)) == 7 * 3 + 1
    with pytest.raises(SplitError, match="anger: 1 of 2"):
        make_test_split(root, None, per_class=2)
    split = make_test_split(root, None, per_class=2, allow_fewer=True)
    assert split["num_sources"] == 7 * 2 + 1 and split["short_classes"] == ["anger: 1 of 2"]
    assert len(subset_sources(split["sources"], 1)) == 8
    with pytest.raises(SplitError, match="per-emotion folders"):
        make_test_split(tmp_path / "emoset" / "anger", None)
    with pytest.raises(SplitError, match="not found"):
        load_split(tmp_path / "missing.json")


def test_cli_writes_split(tmp_path):
    root = _emoset_release(tmp_path / "EmoSet", per_class=4)
    out = tmp_path / "json" / "test_split.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts/make_test_split.py"), "--emoset_root", str(root),
                          "--emopair_json", "none", "--per_class", "3", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    split = load_split(out)
    assert split["num_sources"] == 24 and len(split["jobs"]) == 24 * 7 and "168 jobs" in res.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts/make_test_split.py"), "--emoset_root", str(root),
                          "--emopair_json", "none", "--per_class", "9", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "too few" in bad.stderr and "Traceback" not in bad.stderr


def test_toy_emoset_both_layouts(tmp_path):
    from emoeditor.data.toy_emoset import write_toy_emoset
    release = write_toy_emoset(tmp_path / "release", layout="release", per_class=(2, 1, 0), image_size=40)
    folders = write_toy_emoset(tmp_path / "folders", layout="folders", per_class=(2, 1, 0), image_size=40)
    a, b = list_emoset(release), list_emoset(folders)
    assert len(a) == len(b) == 8 * 3
    assert {e for e, _ in a} == {e for e, _ in b} == set(EMOTIONS)
    assert all(p.startswith(("train/", "val/")) for _, p in b) and all(p.startswith("image/") for _, p in a)
    assert all((folders / p).is_file() for _, p in b)
