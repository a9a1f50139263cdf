"""Training data problems are found before the model loads, named, and counted (issue 9, item 14)."""

import json
import logging
import shutil

import pytest
from tiny_training import tiny_train_args

from emoeditor.cli import train as train_cli
from emoeditor.data.emopair import load_emopair, read_annotations, validate_entries
from emoeditor.errors import AnnotationError, ImageLoadError
from emoeditor.models.tiny import TINY_ENCODER_HIDDEN
from emoeditor.training import trainer as training


@pytest.fixture
def pairs(tmp_path, toy_emopair):
    """A writable copy of the toy EmoPair: (image root, annotation entries)."""
    root, json_path = toy_emopair
    copy = shutil.copytree(root, tmp_path / "EmoPair")
    return copy, read_annotations(json_path)


def write(tmp_path, entries, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(entries))
    return path


def cut_short(path):
    """A JPEG whose pixel data stops half-way: its header is intact."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_args(tmp_path, tiny_base_dir, root, json_path, **overrides):
    return tiny_train_args(tmp_path, tiny_base_dir, root, json_path,
                           **{"max_steps": 1, "preview_steps": 2, **overrides})


def test_default_check_finds_a_jpeg_cut_short(tmp_path, pairs):
    root, entries = pairs
    cut_short(root / entries[5]["img_tgt_path"])
    with pytest.raises(AnnotationError) as exc:
        load_emopair(write(tmp_path, entries), root, progress=False)  # the default check, as training runs it
    assert "entry 5 " in str(exc.value) and entries[5]["img_tgt_path"] in str(exc.value)
    assert "truncated" in str(exc.value) and "1 of 24 entries" in str(exc.value)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_pair_failing_mid_run_is_named_with_the_fix_not_a_worker_traceback(tmp_path, tiny_base_dir, pairs,
                                                                             num_workers, capsys):
    """A file that passes the check before training (here: --check_images exists) but does not decode."""
    from emoeditor.config import run_cli

    root, entries = pairs
    bad = root / entries[0]["img_src_path"]
    cut_short(bad)
    json_path = write(tmp_path, entries)
    args = make_args(tmp_path, tiny_base_dir, root, json_path, check_images="exists", num_workers=num_workers,
                     max_steps=6)  # one epoch: every pair is read
    with pytest.raises(ImageLoadError) as exc:
        training.train(args)
    message = str(exc.value)
    assert str(bad) in message and "truncated" in message and "--skip_bad" in message, message
    assert "--check_images decode" in message
    assert "Traceback" not in message and "worker" not in message

    argv = ["--base_model", str(tiny_base_dir), "--json_path", str(json_path), "--data_root", str(root),
            "--image_size", "64", "--encoder_hidden", *map(str, TINY_ENCODER_HIDDEN), "--batch_size", "4", "--cpu",
            "--num_workers", str(num_workers), "--mixed_precision", "no", "--check_images", "exists",
            "--max_steps", "6", "--save_model_dir", str(tmp_path / "m2"), "--train_save_dir", str(tmp_path / "l2"),
            "--image_every", "0", "--quiet"]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train_cli.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and str(bad) in err


def test_skip_bad_names_and_counts_a_pair_failing_mid_run(tmp_path, tiny_base_dir, pairs, caplog):
    root, entries = pairs
    bad = root / entries[0]["img_src_path"]
    cut_short(bad)
    args = make_args(tmp_path, tiny_base_dir, root, write(tmp_path, entries), check_images="exists", num_workers=1,
                     max_steps=6, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="emoeditor"):
        export = training.train(args)
    summary = json.loads((export / "training_summary.json").read_text())
    assert summary["bad_pairs_skipped"] >= 1
    assert "skipped a pair that fails to load (--skip_bad): EmoPair entry " in caplog.text and str(bad) in caplog.text


@pytest.mark.parametrize("path, problem", [("../outside.jpg", "resolves outside the data root"),
                                           ("EPGS/../../outside.jpg", "resolves outside the data root"),
                                           ("ABSOLUTE", "is absolute")])
def test_paths_leaving_the_data_root_are_rejected(tmp_path, pairs, path, problem):
    root, entries = pairs
    outside = tmp_path / "outside.jpg"  # a real, readable image: only where it is makes it wrong
    shutil.copy(root / entries[0]["img_src_path"], outside)
    path = str(outside) if path == "ABSOLUTE" else path
    entries[3]["img_src_path"] = path
    good, problems = validate_entries(entries, root, progress=False)
    assert len(good) == 23 and len(problems) == 1
    assert problems[0].startswith("entry 3 ") and f"img_src_path {path!r} {problem}" in problems[0]
    assert "relative to --data_root" in problems[0]


def test_validation_runs_before_the_base_model_is_loaded(tmp_path, tiny_base_dir, pairs, monkeypatch):
    from emoeditor.models import components

    root, entries = pairs
    entries[7]["class_target"] = "joy"
    monkeypatch.setattr(components, "load_base_components",
                        lambda *a, **kw: pytest.fail("the base model was loaded before the annotations were checked"))
    with pytest.raises(AnnotationError, match="entry 7 .*'joy'"):
        training.train(make_args(tmp_path, tiny_base_dir, root, write(tmp_path, entries)))


def test_entries_dropped_by_validation_are_counted_in_the_summary(tmp_path, tiny_base_dir, pairs):
    root, entries = pairs
    entries.append(dict(entries[0], class_target="joy"))
    entries.append(dict(entries[1], img_tgt_path="../escape.jpg"))
    args = make_args(tmp_path, tiny_base_dir, root, write(tmp_path, entries), skip_bad=True)
    summary = json.loads((training.train(args) / "training_summary.json").read_text())
    assert (summary["invalid_entries_dropped"], summary["entries_validated"], summary["training_pairs"]) == (2, 26, 24)

    # Training from a finished latent cache reads no annotations; the count comes with the cache.
    cached = dict(skip_bad=True, latent_cache=str(tmp_path / "cache"), save_model_dir=str(tmp_path / "c"),
                  train_save_dir=str(tmp_path / "cl"))
    training.cache_latents(make_args(tmp_path, tiny_base_dir, root, write(tmp_path, entries), **cached))
    args = make_args(tmp_path, tiny_base_dir, root, write(tmp_path, entries), **cached)
    summary = json.loads((training.train(args) / "training_summary.json").read_text())
    assert (summary["invalid_entries_dropped"], summary["entries_validated"], summary["training_pairs"]) == (2, 26, 24)


def test_cache_build_names_a_pair_that_fails_to_load(tmp_path, tiny_base_dir, pairs):
    root, entries = pairs
    bad = root / entries[2]["img_tgt_path"]
    cut_short(bad)
    args = make_args(tmp_path, tiny_base_dir, root, write(tmp_path, entries), check_images="exists",
                     latent_cache=str(tmp_path / "cache"), num_workers=1)
    with pytest.raises(ImageLoadError) as exc:
        training.cache_latents(args)
    assert str(bad) in str(exc.value) and "--skip_bad" in str(exc.value) and "Traceback" not in str(exc.value)
