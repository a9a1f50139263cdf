"""EmoPair annotations: validation reports, subsets, the Dataset's items, and the toy generator."""

import argparse
import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from repo_scripts import load_script
from skimage import color

from emoeditor.config import parse_args
from emoeditor.constants import EMOPAIR_FIELDS, EMOTIONS
from emoeditor.data.emopair import (
    EmoPairDataset,
    add_emopair_args,
    load_emopair,
    read_annotations,
    validate_entries,
)
from emoeditor.data.toy import emotion_edit, load_toy_photo, random_crop, write_toy_emopair
from emoeditor.errors import AnnotationError, ImageLoadError
from emoeditor.imageio import load_image

NUM_TOY = 24  # tests/conftest.py toy_emopair


def write_json(path: Path, entries) -> Path:
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture
def toy_entries(toy_emopair):
    return json.loads(Path(toy_emopair[1]).read_text())


# ---------------------------------------------------------------- the toy set and the Dataset


def test_toy_set_loads_and_validates_clean(toy_emopair, toy_entries):
    root, json_path = toy_emopair
    assert len(toy_entries) == NUM_TOY
    good, problems = validate_entries(toy_entries, root, check_images="decode", progress=False)
    assert problems == [] and good == toy_entries
    entries = load_emopair(json_path, root, progress=False)
    assert entries == toy_entries
    for e in entries:
        assert set(e) == set(EMOPAIR_FIELDS)
        assert e["class_source"] in EMOTIONS and e["class_target"] in EMOTIONS
        assert e["class_source"] != e["class_target"]
        assert abs(sum(e["source_softmax"]) - 1) < 1e-6
        assert int(np.argmax(e["source_softmax"])) == EMOTIONS.index(e["class_source"])
    assert {e["class_source"] for e in entries} == set(EMOTIONS)


def test_subset_filtering_counts(toy_emopair, toy_entries):
    root, json_path = toy_emopair
    epgs = load_emopair(json_path, root, subset="EPGS", progress=False)
    epas = load_emopair(json_path, root, subset="EPAS", progress=False)
    expected_epgs = [e for e in toy_entries if e["img_src_path"].startswith("EPGS/")]
    expected_epas = [e for e in toy_entries if e["img_src_path"].startswith("EPAS/ip2p_clip/")]
    assert len(expected_epgs) == len(expected_epas) == NUM_TOY // 2
    assert epgs == expected_epgs and epas == expected_epas
    with pytest.raises(AnnotationError, match="choose one of EPAS, EPGS, all"):
        load_emopair(json_path, root, subset="epgs", progress=False)


def test_empty_subset_is_a_clear_error(toy_emopair, toy_entries, tmp_path):
    root, _ = toy_emopair
    only_epas = write_json(tmp_path / "a.json", [e for e in toy_entries if "EPGS" not in e["img_src_path"]])
    with pytest.raises(AnnotationError, match=r"no usable entries.*EPAS 12, EPGS 0"):
        load_emopair(only_epas, root, subset="EPGS", progress=False)


@pytest.mark.parametrize("size", [64, 48])
def test_dataset_item(toy_emopair, toy_entries, size):
    root, _ = toy_emopair
    ds = EmoPairDataset(toy_entries, root, image_size=size)
    assert len(ds) == NUM_TOY
    for i in (0, 5):
        item, e = ds[i], toy_entries[i]
        assert set(item) == {"source", "target", "target_vec", "source_softmax", "prompt", "index", "transition"}
        for key in ("source", "target"):
            assert item[key].shape == (3, size, size) and item[key].dtype == torch.float32
            assert 0 <= float(item[key].min()) and float(item[key].max()) <= 1
        torch.testing.assert_close(item["source"], load_image(root / e["img_src_path"], size))
        torch.testing.assert_close(item["target"], load_image(root / e["img_tgt_path"], size))
        assert not torch.equal(item["source"], item["target"])
        expected_vec = torch.zeros(8)
        expected_vec[EMOTIONS.index(e["class_target"])] = 1
        assert torch.equal(item["target_vec"], expected_vec)
        assert item["source_softmax"].dtype == torch.float32
        torch.testing.assert_close(item["source_softmax"], torch.tensor(e["source_softmax"]))
        assert item["prompt"] == e["prompt"] and item["index"] == i
        assert item["transition"] == f"{e['class_source']} to {e['class_target']}"


def test_dataloader_batches(toy_emopair, toy_entries):
    root, _ = toy_emopair
    loader = torch.utils.data.DataLoader(EmoPairDataset(toy_entries, root, 64), batch_size=4)
    batch = next(iter(loader))
    assert batch["source"].shape == (4, 3, 64, 64) and batch["target_vec"].shape == (4, 8)
    assert batch["prompt"] == [e["prompt"] for e in toy_entries[:4]]
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_dataset_names_entry_of_unreadable_image(toy_emopair, toy_entries, tmp_path):
    root, _ = toy_emopair
    entry = dict(toy_entries[0], img_tgt_path="broken.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / entry["img_src_path"]).parent.mkdir(parents=True)
    (tmp_path / entry["img_src_path"]).write_bytes((root / entry["img_src_path"]).read_bytes())
    with pytest.raises(ImageLoadError, match=r"EmoPair entry 0: .*broken\.jpg"):
        EmoPairDataset([entry], tmp_path, 64)[0]


# ---------------------------------------------------------------- bad annotations


def _missing_prompt(e):
    del e["prompt"]


def _set(key, value):
    def edit(e):
        e[key] = value
    return edit


BAD_FIELD_CASES = {
    "missing field": (_missing_prompt, "missing field(s) prompt"),
    "unknown class": (_set("class_target", "joy"), "class_target 'joy' is not one of amusement, anger, awe"),
    "capitalised class": (_set("class_source", "Anger"), "sadness (names are lowercase: 'anger')"),
    "softmax too short": (_set("source_softmax", [0.125] * 7), "source_softmax has 7 values, expected 8"),
    "softmax NaN": (_set("source_softmax", [float("nan")] + [1 / 7] * 7), "source_softmax contains NaN"),
    "softmax infinite": (_set("source_softmax", [float("inf")] + [0.0] * 7),
                         "source_softmax contains NaN or infinite"),
    "softmax sum": (_set("source_softmax", [0.2] * 8), "source_softmax sums to 1.6, not 1"),
    "softmax negative": (_set("source_softmax", [-0.5, 1.5] + [0.0] * 6), "source_softmax has negative values"),
    "softmax strings": (_set("source_softmax", ["0.125"] * 8), "source_softmax must hold numbers only"),
    "softmax not a list": (_set("source_softmax", 0.5), "source_softmax must be a list of 8 floats"),
    "empty prompt": (_set("prompt", "  "), "prompt must be a non-empty string"),
    "path not a string": (_set("img_tgt_path", None), "img_tgt_path must be a non-empty path string"),
    "missing image": (_set("img_src_path", "EPGS/source/nope.jpg"),
                      "img_src_path {root}/EPGS/source/nope.jpg not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELD_CASES))
def test_bad_entry_is_reported_by_index(case, toy_emopair, toy_entries, tmp_path):
    root, _ = toy_emopair
    edit, message = BAD_FIELD_CASES[case]
    entries = copy.deepcopy(toy_entries)
    edit(entries[7])
    message = message.format(root=root)

    good, problems = validate_entries(entries, root, progress=False)
    assert len(good) == NUM_TOY - 1 and entries[7] not in good
    assert len(problems) == 1 and problems[0].startswith("entry 7 ") and message in problems[0]

    json_path = write_json(tmp_path / "data_EmoPair.json", entries)
    with pytest.raises(AnnotationError) as info:
        load_emopair(json_path, root, progress=False)
    report = str(info.value)
    assert f"1 of {NUM_TOY} entries are malformed" in report and "--skip_bad" in report
    assert "entry 7 " in report and message in report


def test_entry_that_is_not_an_object(toy_emopair, toy_entries):
    root, _ = toy_emopair
    good, problems = validate_entries(toy_entries[:2] + [["a", "b"]], root, progress=False)
    assert good == toy_entries[:2]
    assert problems == ["entry 2: is a JSON list, not an object with fields " + ", ".join(EMOPAIR_FIELDS)]


def _copy_toy(root: Path, dst: Path) -> Path:
    for p in root.rglob("*.jpg"):
        (dst / p.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        (dst / p.relative_to(root)).write_bytes(p.read_bytes())
    return dst


def test_unreadable_image_files(toy_emopair, toy_entries, tmp_path):
    root = _copy_toy(toy_emopair[0], tmp_path / "EmoPair")
    e = toy_entries
    (root / e[1]["img_src_path"]).write_text("this is not an image")                 # non-image
    full = (root / e[2]["img_tgt_path"]).read_bytes()
    (root / e[2]["img_tgt_path"]).write_bytes(full[:12])                            # header cut
    (root / e[3]["img_src_path"]).write_bytes(full[: len(full) // 2])               # body cut
    Image.new("RGB", (8, 8)).save(root / e[4]["img_tgt_path"], format="JPEG")       # too small

    good, problems = validate_entries(e, root, check_images="header", progress=False)
    assert [p.split(" ")[1] for p in problems] == ["1", "2", "3", "4"]
    assert f"img_src_path {root / e[1]['img_src_path']} is not an image file" in problems[0]
    assert f"img_tgt_path {root / e[2]['img_tgt_path']}" in problems[1]
    # A JPEG cut short after its header has no end marker: the header check decodes it and finds it.
    assert f"img_src_path {root / e[3]['img_src_path']}" in problems[2] and "truncated" in problems[2]
    assert "is 8x8, smaller than 32px" in problems[3]

    # A full decode finds the same.
    good, problems = validate_entries(e, root, check_images="decode", progress=False)
    assert [p.split(" ")[1] for p in problems] == ["1", "2", "3", "4"]
    assert f"img_src_path {root / e[3]['img_src_path']}" in problems[2] and "truncated" in problems[2]
    assert len(good) == NUM_TOY - 4

    # Existence only: every file is there.
    assert validate_entries(e, root, check_images="exists", progress=False)[1] == []
    assert validate_entries(e, root, check_images=False, progress=False)[1] == []


def test_all_problems_of_one_entry_on_one_line(toy_emopair, toy_entries):
    root, _ = toy_emopair
    bad = dict(toy_entries[0], class_source="happy", source_softmax=[1.0], img_tgt_path="gone.jpg")
    _, problems = validate_entries([bad], root, progress=False)
    assert len(problems) == 1
    assert "class_source 'happy'" in problems[0] and "8" in problems[0] and "gone.jpg not found" in problems[0]


def test_long_report_is_truncated(toy_emopair, toy_entries, tmp_path):
    root, _ = toy_emopair
    entries = [dict(toy_entries[0], class_target="joy") for _ in range(60)] + toy_entries
    with pytest.raises(AnnotationError) as info:
        load_emopair(write_json(tmp_path / "d.json", entries), root, progress=False)
    report = str(info.value)
    assert f"60 of {60 + NUM_TOY} entries are malformed" in report
    assert "entry 49 " in report and "entry 50 " not in report and "... and 10 more bad entries" in report


def test_skip_bad_drops_and_counts(toy_emopair, toy_entries, tmp_path, caplog):
    root, _ = toy_emopair
    entries = copy.deepcopy(toy_entries)
    entries[0]["class_target"] = "joy"
    entries[3]["source_softmax"] = [0.5] * 8
    entries[9]["img_tgt_path"] = "missing.jpg"
    json_path = write_json(tmp_path / "d.json", entries)
    with caplog.at_level(logging.WARNING, logger="emoeditor.data.emopair"):
        good = load_emopair(json_path, root, skip_bad=True, progress=False)
    assert good == [e for i, e in enumerate(entries) if i not in (0, 3, 9)]
    assert f"skipped 3 of {NUM_TOY} bad entries" in caplog.text
    # In one subset only that subset's bad entries count (odd entries 3 and 9 are EPGS, 0 is EPAS).
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emoeditor.data.emopair"):
        epgs = load_emopair(json_path, root, subset="EPGS", skip_bad=True, progress=False)
    assert len(epgs) == NUM_TOY // 2 - 2 and f"skipped 2 of {NUM_TOY // 2}" in caplog.text


def test_annotation_file_errors(toy_emopair, tmp_path):
    root, _ = toy_emopair
    with pytest.raises(AnnotationError, match=r"nope\.json not found; download data_EmoPair\.json"):
        read_annotations(tmp_path / "nope.json")
    with pytest.raises(AnnotationError, match="must hold a JSON list of entries, got a JSON dict"):
        load_emopair(write_json(tmp_path / "dict.json", {"img_src_path": "a"}), root)
    (tmp_path / "broken.json").write_text('[{"prompt": "x"},')
    with pytest.raises(AnnotationError, match=r"broken\.json is not valid JSON \(line 1"):
        read_annotations(tmp_path / "broken.json")
    with pytest.raises(AnnotationError, match="EmoPair image root .* not found"):
        load_emopair(write_json(tmp_path / "ok.json", []), tmp_path / "no_root")


def test_emopair_flags_drive_load_emopair(toy_emopair, toy_entries):
    root, json_path = toy_emopair
    parser = add_emopair_args(argparse.ArgumentParser())
    args = parse_args(parser, ["--json_path", str(json_path), "--data_root", str(root), "--subset", "EPGS",
                               "--skip_bad", "--check_images", "decode"])
    assert (args.subset, args.skip_bad, args.check_images) == ("EPGS", True, "decode")
    entries = load_emopair(args.json_path, args.data_root, args.subset, args.skip_bad, args.check_images,
                           progress=False)
    assert entries == [e for e in toy_entries if "EPGS" in e["img_src_path"]]
    defaults = parse_args(add_emopair_args(argparse.ArgumentParser()), [])
    assert (defaults.json_path, defaults.data_root, defaults.subset, defaults.skip_bad, defaults.check_images) == (
        "json/data_EmoPair.json", "EmoPair", "all", False, "header")
    with pytest.raises(AnnotationError,
                       match="unknown image check 'full'; choose one of none, exists, header, decode"):
        load_emopair(json_path, root, check_images="full")


# ---------------------------------------------------------------- the toy generator


def test_toy_generator_is_deterministic(tmp_path):
    def files(base):
        return {p.relative_to(base): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_toy_emopair(tmp_path / name / "EmoPair", tmp_path / name / "data.json", num_pairs=10, seed=seed)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 2 * 10 + 1 and a == b
    assert a[Path("data.json")] != c[Path("data.json")]


def test_toy_edits_move_colour_the_emotion_way():
    base = random_crop(load_toy_photo("coffee"), 64, np.random.default_rng(0))

    def stats(img):
        return img.mean(), color.rgb2hsv(img)[..., 1].mean(), img[..., 0].mean() - img[..., 2].mean()

    bright0, sat0, warm0 = stats(base)
    for emo in ("fear", "sadness"):
        bright, sat, warm = stats(emotion_edit(base, emo))
        assert bright < bright0 - 0.05 and sat < sat0 and warm < warm0
    for emo in ("amusement", "awe", "excitement"):
        assert stats(emotion_edit(base, emo))[0] > bright0
    assert stats(emotion_edit(base, "excitement"))[1] > sat0
    angry = emotion_edit(base, "anger")
    assert angry.std() > base.std() and stats(angry)[2] > warm0
    disgust = emotion_edit(base, "disgust")
    assert disgust[..., 1].mean() - disgust[..., 0].mean() > base[..., 1].mean() - base[..., 0].mean()
    np.testing.assert_allclose(emotion_edit(base, "anger", 0.0), base, atol=1e-9)


def test_make_toy_emopair_script(tmp_path, capsys):
    module = load_script("scripts/make_toy_emopair.py")
    module.main(["--root", str(tmp_path / "EmoPair"), "--json", str(tmp_path / "json" / "data_EmoPair.json"),
                 "--num_pairs", "4", "--image_size", "40", "--seed", "1"])
    assert "wrote 4 toy pairs" in capsys.readouterr().out
    entries = load_emopair(tmp_path / "json" / "data_EmoPair.json", tmp_path / "EmoPair", progress=False)
    assert len(entries) == 4
    assert Image.open(tmp_path / "EmoPair" / entries[0]["img_src_path"]).size == (40, 40)
