"""test.py's runs and what they leave behind: settings from the model, progress, the end-of-run summary,
outputs that never overwrite each other, failed saves, folders, --output_size and labelled strips (issue 9)."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emoeditor.cli import edit as test_cli
from emoeditor.errors import EmoEditorError, ImageLoadError

REPO = Path(__file__).resolve().parent.parent


def photo(w=96, h=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
    return Image.fromarray(arr)


def run(assets, out, inputs, *extra):
    """test.py without a preset: every setting is a flag or comes from the model."""
    return test_cli.main(["--model_dir", str(assets / "model"), "--predictor_path", str(assets / "predictor"),
                          "--input_path", str(inputs), "--test_save_dir", str(out), "--num_inference_steps", "2",
                          "--num_loop", "2", "--device", "cpu", *extra])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------- 2. settings from the model, progress
def test_image_size_comes_from_the_model_folder(assets, tmp_path, capsys):
    model = tmp_path / "model96"
    shutil.copytree(assets / "model", model)
    (model / "training_args.json").write_text(json.dumps({"image_size": 96, "emotion_input": "direction"}))
    image = assets / "imgs" / "coffee.png"
    summary = test_cli.main(["--model_dir", str(model), "--predictor_path", str(assets / "predictor"),
                             "--input_path", str(image), "--test_save_dir", str(tmp_path / "a"),
                             "--num_inference_steps", "2", "--num_loop", "1", "--device", "cpu"])
    assert summary["image_size"] == 96 and Image.open(summary["rows"][0]["output"]).size == (96, 96)
    err = capsys.readouterr().err
    assert f"image size 96 px (from {model / 'training_args.json'}" in err
    summary = test_cli.main(["--model_dir", str(model), "--predictor_path", str(assets / "predictor"),
                             "--input_path", str(image), "--test_save_dir", str(tmp_path / "b"), "--image_size", "64",
                             "--num_inference_steps", "2", "--num_loop", "1", "--device", "cpu"])
    assert summary["image_size"] == 64 and "differs from the 96 px the model was trained at" in capsys.readouterr().err


def test_progress_per_iteration_and_job_and_a_cpu_hint(assets, tmp_path, capsys):
    run(assets, tmp_path, assets / "imgs", "--critic", "official")
    err = capsys.readouterr().err
    assert "edit iterations" in err and "jobs: 100%" in err and "2/2" in err
    assert "on CPU each job takes up to --num_loop 2 edits of --num_inference_steps 2" in err


# --------------------------------------------------------------------------- 6. the run's summary
def test_the_run_ends_with_counts_and_full_paths(assets, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = run(assets, "rel_out", assets / "imgs", "--quiet", "--save_strip")
    out = capsys.readouterr().out
    rows = read_csv(tmp_path / "rel_out" / "summary.csv")
    accepted = sum(r["accepted"] == "True" for r in rows)
    assert f"2 edits: {accepted} accepted by the critic, {2 - accepted} returned by its fallback" in out
    for path in (tmp_path / "rel_out", tmp_path / "rel_out" / "summary.csv", tmp_path / "rel_out" / "traces",
                 tmp_path / "rel_out" / "strips"):
        assert f" {path}\n" in out + "\n"  # absolute, whatever the user typed
    assert summary["summary"] == tmp_path / "rel_out" / "summary.csv"


# ------------------------------------------------------------------- 10. no output is ever replaced
def test_inputs_that_differ_only_in_extension_get_their_own_outputs(assets, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo(seed=1).save(imgs / "photo.jpg")
    photo(seed=2).save(imgs / "photo.png")
    for ext in ("png", "same"):
        out = tmp_path / ext
        summary = run(assets, out, imgs, "--output_ext", ext, "--quiet")
        outputs = [r["output"] for r in summary["rows"]]
        assert len(set(outputs)) == 2 and all(Path(o).is_file() for o in outputs)
        assert len(list((out / "traces").glob("*.json"))) == 2
        assert sorted(Path(o).name for o in outputs) == sorted(
            [f"75863_awe_photo_jpg.{'png' if ext == 'png' else 'jpg'}", "75863_awe_photo_png.png"])


def test_existing_outputs_need_overwrite_and_summaries_are_never_replaced(assets, tmp_path, monkeypatch):
    image = assets / "imgs" / "coffee.png"
    run(assets, tmp_path, image, "--quiet")
    first_summary = (tmp_path / "summary.csv").read_bytes()

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")
    with monkeypatch.context() as m:
        m.setattr(test_cli, "load_model", loaded)
        m.setattr(test_cli, "load_predictor", loaded)
        with pytest.raises(EmoEditorError, match="already exist.*--overwrite"):
            run(assets, tmp_path, image, "--quiet", "--random_seed", "75863")
    summary = run(assets, tmp_path, image, "--quiet", "--overwrite", "--critic", "none")
    assert summary["summary"] == tmp_path / "summary-2.csv" and (tmp_path / "skipped-2.csv").exists()
    assert (tmp_path / "summary.csv").read_bytes() == first_summary  # the earlier run's record is kept
    assert read_csv(tmp_path / "summary-2.csv")[0]["output"] == str(tmp_path / "75863_awe_coffee.png")
    summary = run(assets, tmp_path, image, "--quiet", "--target_emo", "fear")  # new names: no --overwrite needed
    assert summary["summary"] == tmp_path / "summary-3.csv"
    assert [r["target"] for r in read_csv(tmp_path / "summary-3.csv")] == ["fear"]


# ------------------------------------------------ 11. formats checked first; a failed save is counted
def test_an_image_without_extension_is_saved_as_png(assets, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo().save(imgs / "photo", format="PNG")
    summary = run(assets, tmp_path / "out", imgs, "--quiet")
    out = Path(summary["rows"][0]["output"])
    assert out.name == "75863_awe_photo.png" and Image.open(out).format == "PNG"


def test_a_failed_save_is_named_counted_and_the_summary_is_written(assets, tmp_path, monkeypatch, capsys):
    real = test_cli.save_image

    def full_disk(image, path, *args, **kwargs):
        if "coffee" in Path(path).name:
            raise OSError(28, "No space left on device")
        return real(image, path, *args, **kwargs)
    monkeypatch.setattr(test_cli, "save_image", full_disk)
    with pytest.raises(EmoEditorError, match="1 edit.*could not be saved.*coffee.*No space left"):
        run(assets, tmp_path, assets / "imgs", "--quiet", "--batch_size", "2")
    rows = read_csv(tmp_path / "summary.csv")
    assert [Path(r["input"]).name for r in rows] == ["astronaut.png"]
    (failed,) = read_csv(tmp_path / "skipped.csv")
    assert Path(failed["input"]).name == "coffee.png" and "could not be saved" in failed["reason"]
    assert "1 edit(s) not saved" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*tmp*"))  # no half-written file left behind


# --------------------------------------------------------------------- 13. folders with nothing to do
def test_empty_folders_and_subfolders_are_reported(assets, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageLoadError, match=f"{empty}: nothing to edit"):
        run(assets, tmp_path / "o1", empty, "--quiet")
    nested = tmp_path / "nested"
    (nested / "sub").mkdir(parents=True)
    photo().save(nested / "sub" / "deep.png")
    with pytest.raises(ImageLoadError, match="only 1 subfolder.*sub.*--recursive"):
        run(assets, tmp_path / "o2", nested, "--quiet")
    photo(seed=3).save(nested / "top.png")
    summary = run(assets, tmp_path / "o3", nested, "--critic", "none")
    assert summary["done"] == 1 and "1 subfolder(s) of" in capsys.readouterr().err
    summary = run(assets, tmp_path / "o4", nested, "--critic", "none", "--recursive", "--quiet")
    assert summary["done"] == 2
    assert (tmp_path / "o4" / "sub" / "75863_awe_deep.png").is_file()  # the input tree is mirrored
    assert (tmp_path / "o4" / "traces" / "sub" / "75863_awe_deep.json").is_file()


# ------------------------------------------------------- 16. --output_size source, labelled strips
def test_output_size_source_keeps_the_source_size_and_strips_are_labelled(assets, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo(96, 80).save(imgs / "wide.png")
    summary = run(assets, tmp_path / "src", imgs, "--quiet", "--output_size", "source", "--save_strip")
    assert Image.open(summary["rows"][0]["output"]).size == (96, 80)
    summary = run(assets, tmp_path / "model", imgs, "--quiet")
    assert Image.open(summary["rows"][0]["output"]).size == (64, 64)  # default unchanged

    from emoeditor.cli.edit import strip_labels

    trace = json.loads(next((tmp_path / "src" / "traces").glob("*.json")).read_text())
    assert trace["source_size"] == [96, 80]
    labels = strip_labels(trace)
    assert len(labels) == len(trace["iterations"]) + 2 and labels[0][0] == "source"
    for it, lines in zip(trace["iterations"], labels[1:-1]):
        assert lines == [f"it {it['index'] + 1}", f"SSIM {it['ssim']:.2f}", f"P {it['target_confidence']:.2f}",
                         "accept" if it["accepted"] else "reject"]
    assert labels[-1] == ["returned", f"it {trace['returned'] + 1}", "accepted" if trace["accepted"] else "fallback"]
    strip = np.asarray(Image.open(next((tmp_path / "src" / "strips").glob("*.png"))))
    assert strip.shape[0] > 64 and (strip[64:] < 128).any()
