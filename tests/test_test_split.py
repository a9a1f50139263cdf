"""The test split: 63 unused EmoSet images per class, 7 edits each, cross/within tags."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emoeditor.constants import EMOSET_SPLITS, EMOTIONS, POSITIVE
from emoeditor.data.emoset import list_images
from emoeditor.data.toy_emoset import write_toy_emoset
from emoeditor.errors import SplitError
from emoeditor.evaluation.split import (
    NEUTRAL,
    build_jobs,
    describe_split,
    folder_sources,
    load_split,
    make_test_split,
    save_split,
    subset_sources,
)
from emoeditor.seeding import mix_seed

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
    # every list: 35 per class in train.json and 35 in test.json (the default, test only, has too few)
    split = make_test_split(root, _emopair(tmp_path / "pairs.json", used), per_class=63, seed=3,
                            source_splits=EMOSET_SPLITS)
    assert split["num_sources"] == 504 and split["num_jobs"] == 3528
    assert split["num_cross"] == 504 * 4 and split["num_within"] == 504 * 3
    for emotion in EMOTIONS:
        mine = [s for s in split["sources"] if s["emotion"] == emotion]
        assert len(mine) == 63
        assert all(int(s["id"].split("_")[1]) >= 5 for s in mine)  # none of the EmoPair images
        assert all(s["path"].startswith(f"image/{emotion}/") for s in mine)
    train = {entry[1] for entry in json.loads((root / "train.json").read_text())}
    assert split["num_from_p_train"] == sum(s["path"] in train for s in split["sources"]) > 0
    # seeded: same seed same split, other seed another one
    assert make_test_split(root, tmp_path / "pairs.json", 63, seed=3, source_splits=EMOSET_SPLITS)["sources"] \
        == split["sources"]
    assert make_test_split(root, tmp_path / "pairs.json", 63, seed=4, source_splits=EMOSET_SPLITS)["sources"] \
        != split["sources"]


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
    assert jobs[0].seed(7) == mix_seed(7, "eval", jobs[0].job_id)  # the one seed mixer


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
    assert len(list_images(root)) == 7 * 3 + 1
    with pytest.raises(SplitError, match="anger: 1 of 2"):
        make_test_split(root, None, per_class=2)
    split = make_test_split(root, None, per_class=2, allow_fewer=True)
    assert split["num_sources"] == 7 * 2 + 1 and split["short_classes"] == ["anger: 1 of 2"]
    # class folders carry no EmoSet split lists: every image is in the pool, P's overlap is unknown
    assert split["source_splits"] is None and split["num_from_p_train"] is None
    assert "unknown" in describe_split(split)
    assert len(subset_sources(split["sources"], 1)) == 8
    with pytest.raises(SplitError, match="per-emotion folders"):
        make_test_split(tmp_path / "emoset" / "anger", None)
    with pytest.raises(SplitError, match="not found"):
        load_split(tmp_path / "missing.json")


def test_cli_writes_split(tmp_path):
    root = _emoset_release(tmp_path / "EmoSet", per_class=4)
    out = tmp_path / "json" / "test_split.json"
    script = [sys.executable, str(ROOT / "scripts/make_test_split.py"), "--emoset_root", str(root),
              "--emopair_json", "none", "--out", str(out)]
    # train.json and test.json list 2 images per class each
    res = subprocess.run(script + ["--per_class", "3", "--source_splits", "train", "val", "test"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    split = load_split(out)
    assert split["num_sources"] == 24 and len(split["jobs"]) == 24 * 7 and "168 jobs" in res.stdout
    n = sum(s["path"] in {e[1] for e in json.loads((root / "train.json").read_text())} for s in split["sources"])
    assert split["source_splits"] == ["train", "val", "test"] and split["num_from_p_train"] == n >= 8
    assert f"{n} of 24 in EmoSet train" in res.stdout
    res = subprocess.run(script + ["--per_class", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert load_split(out)["source_splits"] == ["test"] and "0 of 16 in EmoSet train" in res.stdout
    bad = subprocess.run(script + ["--per_class", "3"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "too few" in bad.stderr and "--source_splits" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_toy_emoset_both_layouts(tmp_path):
    release = write_toy_emoset(tmp_path / "release", layout="release", per_class=(2, 1, 0), image_size=40)
    folders = write_toy_emoset(tmp_path / "folders", layout="folders", per_class=(2, 1, 0), image_size=40)
    a, b = [[(i.emotion, i.path) for i in list_images(r)] for r in (release, folders)]
    assert len(a) == len(b) == 8 * 3
    assert {e for e, _ in a} == {e for e, _ in b} == set(EMOTIONS)
    assert all(p.startswith(("train/", "val/")) for _, p in b) and all(p.startswith("image/") for _, p in a)
    assert all((folders / p).is_file() for _, p in b)


@pytest.fixture(scope="module")
def toy_emoset(tmp_path_factory):
    """A toy EmoSet-118K release: 3 train, 1 val, 2 test images per class."""
    return write_toy_emoset(tmp_path_factory.mktemp("toy") / "EmoSet", "release", per_class=(3, 1, 2),
                            image_size=32, photos=("astronaut", "coffee"))


def test_source_splits_restrict_the_pool(toy_emoset):
    listed = {s: {e[1] for e in json.loads((toy_emoset / f"{s}.json").read_text())} for s in EMOSET_SPLITS}
    # default: EmoSet's test list only, none of P's training images
    split = make_test_split(toy_emoset, None, per_class=2)
    assert split["source_splits"] == ["test"] and split["num_sources"] == 16
    assert all(s["path"] in listed["test"] and s["emoset_splits"] == ["test"] for s in split["sources"])
    assert split["num_from_p_train"] == 0 and split["sources_per_list"] == {"train": 0, "val": 0, "test": 16}
    with pytest.raises(SplitError, match="EmoSet's test list.*widen --source_splits"):
        make_test_split(toy_emoset, None, per_class=3)
    # one flag away: P's training list alone, or the literal reading (every list)
    train = make_test_split(toy_emoset, None, per_class=3, source_splits=["train"])
    assert {s["path"] for s in train["sources"]} == listed["train"] and train["num_from_p_train"] == 24
    val_test = make_test_split(toy_emoset, None, per_class=3, source_splits=["val", "test"])
    assert {s["path"] for s in val_test["sources"]} == listed["val"] | listed["test"]
    assert val_test["num_from_p_train"] == 0 and val_test["sources_per_list"] == {"train": 0, "val": 8, "test": 16}
    with pytest.raises(SplitError, match="--source_splits"):
        make_test_split(toy_emoset, None, per_class=1, source_splits=["holdout"])


def test_split_counts_sources_from_p_training_list(toy_emoset, tmp_path):
    train = {e[1] for e in json.loads((toy_emoset / "train.json").read_text())}
    everything = make_test_split(toy_emoset, None, per_class=6, source_splits=EMOSET_SPLITS)
    assert everything["num_from_p_train"] == 24 and everything["sources_per_list"] == {"train": 24, "val": 8,
                                                                                      "test": 16}
    for seed in range(4):  # 4 of 6 per class: at least one train image per class, the count must match
        split = make_test_split(toy_emoset, None, per_class=4, seed=seed, source_splits=EMOSET_SPLITS)
        n = sum(s["path"] in train for s in split["sources"])
        assert split["num_from_p_train"] == n >= 8
        assert all(("train" in s["emoset_splits"]) == (s["path"] in train) for s in split["sources"])
    saved = load_split(save_split(split, tmp_path / "split.json"))
    assert saved["num_from_p_train"] == n and saved["source_splits"] == list(EMOSET_SPLITS)
    assert f"{n} of 32 in EmoSet train (P's training list)" in describe_split(saved)


def test_source_splits_on_split_folders(tmp_path):
    root = write_toy_emoset(tmp_path / "folders", "folders", per_class=(2, 1, 1), image_size=32, photos=("coffee",))
    split = make_test_split(root, None, per_class=1)
    assert all(s["path"].startswith("test/") for s in split["sources"]) and split["num_from_p_train"] == 0
    train = make_test_split(root, None, per_class=2, source_splits=["train"])
    assert all(s["path"].startswith("train/") for s in train["sources"]) and train["num_from_p_train"] == 16


def test_save_split_is_crash_safe(tmp_path, monkeypatch):
    path = save_split({"sources": [], "num_sources": 0}, tmp_path / "split.json")
    before = path.read_text()

    def killed(self, text, *args, **kwargs):  # dies half-way through writing
        Path.write_bytes(self, text[: len(text) // 2].encode())
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        save_split({"sources": [{"id": "x" * 100}], "num_sources": 1}, path)
    monkeypatch.undo()
    assert path.read_text() == before
