"""The one EmoSet reader: the predictor trainer and the test split see the same images, splits and labels."""

import json

import pytest

from emoeditor.constants import EMOSET_SPLITS, EMOTIONS
from emoeditor.data.emoset import detect_layout, has_split_lists, list_images, load_split
from emoeditor.data.toy_emoset import write_toy_emoset
from emoeditor.errors import SplitError
from emoeditor.evaluation.split import make_test_split


@pytest.mark.parametrize("layout", ["release", "folders"])
def test_trainer_and_test_split_read_the_same_splits(tmp_path, layout):
    root = write_toy_emoset(tmp_path / layout, layout, per_class=(2, 1, 1), image_size=32, photos=("coffee",))
    images = list_images(root)
    assert detect_layout(root) == layout and has_split_lists(images)
    for split in EMOSET_SPLITS:
        trainer = {(s.path, EMOTIONS[s.label]) for s in load_split(root, split)}
        assert trainer == {(root / i.path, i.emotion) for i in images if i.split == split}
        assert len(trainer) == 8 * (2 if split == "train" else 1)
    # the test split's sources are listed under the split list the reader gives them
    split_of = {i.path: i.split for i in images}
    for source in make_test_split(root, None, per_class=1, source_splits=EMOSET_SPLITS)["sources"]:
        assert source["emoset_splits"] == [split_of[source["path"]]]


def test_class_folders_without_splits(tmp_path):
    root = write_toy_emoset(tmp_path / "folders", "folders", per_class=(3, 0, 0), image_size=32,
                            photos=("coffee",)) / "train"
    (root / "awe" / "._awe_00001.jpg").write_bytes(b"AppleDouble metadata, not an image")
    (root / "notes").mkdir()
    images = list_images(root)
    assert len(images) == 24 and not has_split_lists(images) and all(i.split is None for i in images)
    assert [i.emotion for i in images] == [e for e in EMOTIONS for _ in range(3)]  # EMOTIONS order, files sorted
    # the trainer splits them itself, seeded; the union is every image
    parts = {s: load_split(root, s, val_fraction=0.25, test_fraction=0.25, seed=1) for s in EMOSET_SPLITS}
    assert sorted(p.path for v in parts.values() for p in v) == sorted(root / i.path for i in images)


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(SplitError, match="is not a folder"):
        list_images(tmp_path / "missing")
    with pytest.raises(SplitError, match="neither an EmoSet release"):
        list_images(tmp_path)
    (tmp_path / "test.json").write_text("[[\"awe\", \"image/awe/a.jpg\", \"annotation/awe/a.json\"]")
    with pytest.raises(SplitError, match="test.json: cannot read"):
        list_images(tmp_path)
    (tmp_path / "test.json").write_text(json.dumps([["awe", 3, None]]))
    with pytest.raises(SplitError, match="test.json: entry 0"):
        list_images(tmp_path)
    (tmp_path / "test.json").write_text(json.dumps([[" Awe ", "image/awe/a.jpg", "annotation/awe/a.json"]]))
    assert [(i.emotion, i.split) for i in list_images(tmp_path)] == [("awe", "test")]  # any one list is a release
    assert load_split(tmp_path, "train") == []
