"""test.py before any work: presets that invent nothing, the shipped demo image, flags and folders
checked before a model loads (exit 2, one line), --help, and the logging flags (issue 9)."""

import os
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from emoeditor.cli import edit as test_cli
from emoeditor.config import parse_args, run_cli
from emoeditor.errors import EmoEditorError

REPO = Path(__file__).resolve().parent.parent
PRESET = str(REPO / "configs" / "infer_tiny.yaml")


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if test.py loads a model: these errors must come before any work."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")
    monkeypatch.setattr(test_cli, "load_model", loaded)
    monkeypatch.setattr(test_cli, "load_predictor", loaded)


def argv(assets, out, *extra):
    return ["--config", PRESET, "--model_dir", str(assets / "model"), "--predictor_path", str(assets / "predictor"),
            "--input_path", str(assets / "imgs"), "--test_save_dir", str(out), "--num_inference_steps", "2",
            "--num_loop", "1", "--critic", "none", "--quiet", *extra]


def cli_error(capsys, argv_list) -> str:
    """run test.py's main as the command line does; the one-line error it printed (exit code 2)."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: test_cli.main(argv_list))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert any(line.startswith("error: ") for line in err.splitlines())
    return err


# ------------------------------------------------------------------------- 1. nothing invented
@pytest.mark.parametrize("flag", ["--model_dir", "--input_path", "--predictor_path"])
def test_a_mistyped_path_is_an_error_and_nothing_is_created(assets, tmp_path, capsys, no_loading, flag):
    typo = tmp_path / "exists" / "mdoel"
    typo.parent.mkdir()
    err = cli_error(capsys, argv(assets, tmp_path / "out", flag, str(typo)))
    assert f"{flag} {typo} does not exist (its folder {typo.parent}/ does)" in err
    assert not typo.exists() and not (tmp_path / "out").exists()
    deeper = tmp_path / "missing" / "model"
    err = cli_error(capsys, argv(assets, tmp_path / "out", flag, str(deeper)))
    assert f"nor does its folder {deeper.parent}/" in err and not deeper.parent.exists()


def test_the_tiny_preset_needs_make_demo_and_says_so(tmp_path, capsys, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/demo
    err = cli_error(capsys, ["--config", PRESET])
    assert "runs/demo/model does not exist" in err and "run `make demo` first" in err
    assert not (tmp_path / "runs").exists()
    assert "make demo" in (REPO / "configs" / "infer_tiny.yaml").read_text().splitlines()[0]


def test_tiny_dir_writes_a_random_model_says_so_and_uses_it(tmp_path, capsys):
    tiny, out = tmp_path / "tiny", tmp_path / "out"
    common = ["--tiny", str(tiny), "--num_loop", "1", "--num_inference_steps", "2", "--critic", "none",
              "--device", "cpu"]
    summary = test_cli.main([*common, "--test_save_dir", str(out)])  # the shipped demo image by default
    err = capsys.readouterr().err
    assert "created a RANDOM-WEIGHT tiny model" in err and str(tiny / "model") in err
    assert (tiny / "model" / "model_index.json").is_file() and (tiny / "emo_predictor").exists()
    assert summary["image_size"] == 64 and Image.open(summary["rows"][0]["output"]).size == (64, 64)
    test_cli.main([*common, "--test_save_dir", str(tmp_path / "again")])
    assert "reusing a RANDOM-WEIGHT" in capsys.readouterr().err
    (tmp_path / "trained" / "model").mkdir(parents=True)  # --tiny never writes into a real model's folder
    (tmp_path / "trained" / "model" / "model_index.json").write_text("{}")
    with pytest.raises(EmoEditorError, match="not a tiny model"):
        test_cli.main([*common, "--tiny", str(tmp_path / "trained")])


# ------------------------------------------------------------------------------ 4. demo image
def test_the_demo_image_is_shipped_with_its_license():
    image = REPO / test_cli.DEMO_IMAGE
    assert test_cli.build_parser().get_default("input_path") == test_cli.DEMO_IMAGE
    assert 40_000 < image.stat().st_size < 150_000
    assert min(Image.open(image).size) >= 256
    readme = (image.parent / "README.md").read_text()
    assert "skimage.data.chelsea" in readme and "CC0" in readme


def test_no_arguments_without_weights_says_what_to_do(tmp_path, capsys, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)  # no model/ here; the demo image is found in the repository
    err = cli_error(capsys, [])
    assert "--model_dir model does not exist" in err
    assert "scripts/download_weights.py" in err and "make demo" in err
    (tmp_path / "model").mkdir()  # the repository's model/ holds only its README until weights are downloaded
    err = cli_error(capsys, [])
    assert "holds no model" in err and "scripts/download_weights.py" in err and "make demo" in err


# ------------------------------------------------------------------- 7. errors before any work
@pytest.mark.parametrize("extra, message", [
    (["--device", "cuda"], "CUDA is not available"),
    (["--device", "cuda:1"], "CUDA is not available"),
    (["--device", "gpu"], "unknown --device 'gpu'"),
    (["--output_ext", "xyz"], "--output_ext 'xyz' is not a format"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--num_loop", "0"], "--num_loop must be at least 1"),
    (["--image_size", "50"], "multiple of 8"),
    (["--noise_range", "980", "700"], "LOW <= HIGH"),
])
def test_bad_flags_fail_before_any_work(assets, tmp_path, capsys, monkeypatch, no_loading, extra, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = cli_error(capsys, argv(assets, tmp_path / "out", *extra))
    assert message in err
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_folder_fails_before_any_work(assets, tmp_path, capsys, monkeypatch, no_loading):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = cli_error(capsys, argv(assets, blocker / "out"))
    assert "not writable" in err and str(blocker) in err and "is a file" in err

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permission bits: refuse the probe as a read-only mount would
        import tempfile

        real = tempfile.TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == readonly.resolve():
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    try:
        err = cli_error(capsys, argv(assets, readonly))
        assert "not writable" in err and str(readonly) in err
    finally:
        readonly.chmod(0o755)


# ------------------------------------------------------------------------------------ 17. help
def test_help_is_grouped_shows_each_default_once_and_its_examples_parse():
    parser = test_cli.build_parser()
    text = parser.format_help()
    for group in ("inputs and outputs", "model", "critic (paper Sec. 3.3)", "one edit", "seeds and running"):
        assert f"\n{group}:\n" in text
    parse_args(parser, [])  # --config is added as parse_args does, so it is listed too
    helps = {a.dest: parser._get_formatter()._expand_help(a) for a in parser._actions if a.help}
    for action in parser._actions:
        if action.help in (None, "==SUPPRESS==") or not action.option_strings:
            continue
        shown = helps[action.dest]
        assert shown.lower().count("default") <= 1, action.dest
        if action.default not in (None, False) and action.dest != "help":
            value = " ".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
            assert f"(default: {value})" in shown, action.dest
    joined = text.split("examples:")[1].replace("\\\n", " ")
    commands = [line for line in joined.splitlines() if "test.py" in line]
    assert len(commands) >= 6
    for line in commands:
        flags = shlex.split(line.split("test.py", 1)[1].split("#")[0])
        args = parse_args(test_cli.build_parser(), flags)
        if args.config:
            assert (REPO / args.config).exists()


# ------------------------------------------------------------------------------------ 5. logs
def test_quiet_and_verbose_come_from_the_one_logging_setup(assets, tmp_path, capsys):
    import logging

    test_cli.main([a for a in argv(assets, tmp_path / "q") if a != "--quiet"] + ["--quiet"])
    err = capsys.readouterr().err
    assert "edit iterations" not in err and "image size" not in err  # no bars, no info lines
    test_cli.main([a for a in argv(assets, tmp_path / "v") if a != "--quiet"] + ["--verbose"])
    assert logging.getLogger("emoeditor").getEffectiveLevel() == logging.DEBUG
    assert "image size 64 px" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        test_cli.build_parser().parse_args(["--quiet", "--verbose"])


def test_a_test_py_run_prints_no_warning_that_is_not_ours(tmp_path):
    """The command line as a user runs it, with a file past PIL's decompression-bomb limit in the folder."""
    import re
    import subprocess
    import sys

    from test_bad_inputs import huge_png

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "cat.jpg").write_bytes((REPO / test_cli.DEMO_IMAGE).read_bytes())
    huge_png(imgs / "huge.png", 10000, 10000)
    # -W default (not PYTHONWARNINGS): every warning of test.py's own process shows, while helper processes
    # a library may start (torch 2.4's inductor compile workers, via bitsandbytes' import) keep their defaults
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-W", "default", "test.py", "--tiny", str(tmp_path / "tiny"),
                           "--input_path", str(imgs), "--test_save_dir", str(tmp_path / "out"), "--num_loop", "1",
                           "--num_inference_steps", "2", "--critic", "none"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in re.split(r"[\r\n]", done.stderr) if line.strip() and "|" not in line]  # bars have |
    foreign = [line for line in lines if re.search(r"Warning\b|^warning \(|^\s+\S+\(", line)]
    assert not foreign, foreign
    assert any("skipped" in line and "huge.png" in line and "larger than" in line for line in lines)
