"""What a user sees from the entry points (issue 9, items 5 and 17): `make demo` and test.py print no
warning that is not ours, no library bars, nothing at all but our warnings with --quiet; every
script's --help groups its options, shows each default once and gives examples that work."""

import argparse
import os
import re
import shlex
import subprocess
import sys

import pytest
from repo_scripts import REPO, load_script

from emoeditor.config import HelpFormatter, parse_args

LIBRARY_NOISE = re.compile(r"bitsandbytes|kernels|gemm_4bit|torch_dtype|kept in float32|Loading (weights|pipeline)"
                           r"|Traceback|offline", re.I)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=900, **kw)


def not_ours(stderr: str) -> list[str]:
    """stderr lines (progress bars split at their carriage returns) that are a warning we did not write, or
    a library's notice. Ours read "warning: ..." (emoeditor.logs)."""
    lines = [line.strip() for line in re.split(r"[\r\n]", stderr) if line.strip()]
    return [line for line in lines if LIBRARY_NOISE.search(line)
            or (re.search(r"warn", line, re.I) and not line.startswith("warning: "))]


def bars(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", stderr) if re.search(r"\d+%\||it/s\]|s/it\]", line)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`make demo`'s command, at its smallest, in a fresh interpreter as a user runs it."""
    out = tmp_path_factory.mktemp("quiet") / "demo"
    proc = run(["scripts/demo.py", "--out", out, "--train_steps", "2", "--num_pairs", "8"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


def test_the_demo_prints_no_warning_that_is_not_ours(demo):
    out, proc = demo
    assert not_ours(proc.stderr) == []
    assert "[3/3] editing" in proc.stderr and "done. Outputs:" in proc.stdout  # our lines still show
    assert (out / "model" / "model_index.json").is_file()


@pytest.mark.parametrize("verbosity", ["--quiet", None])
def test_test_py_on_the_demo_model_prints_no_warning_that_is_not_ours(demo, tmp_path, verbosity):
    out, _ = demo
    image = out / "demo_img" / "chelsea.png"
    proc = run(["test.py", "--model_dir", out / "model", "--predictor_path", REPO / "mini_world" / "emo_predictor",
                "--input_path", image, "--test_save_dir", tmp_path / "out", "--num_loop", "1",
                "--num_inference_steps", "2", "--image_size", "64", "--device", "cpu",
                *([verbosity] if verbosity else [])])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not_ours(proc.stderr) == []
    if verbosity == "--quiet":  # warnings and errors only: no bars, no info lines
        assert bars(proc.stderr) == [] and all(line.startswith(("warning: ", "error: "))
                                               for line in proc.stderr.splitlines() if line.strip()), proc.stderr
    assert len(list((tmp_path / "out").glob("*_awe_chelsea.*"))) == 1


def test_convert_official_prints_no_library_notice(tmp_path, tiny_base_dir):
    """The official .pt files cast to float16 used to log "modules ... kept in float32: []" twice."""
    import torch

    from emoeditor.models.tiny import tiny_emotion_encoder, tiny_unet, tiny_vae

    model = tmp_path / "model"
    model.mkdir()
    state = {f"unet.{k}": v.half() for k, v in tiny_unet(1).state_dict().items()}
    state.update({f"auto_encoder.{k}": v.half() for k, v in tiny_vae(1).state_dict().items()})
    torch.save(state, model / "model_ip2p.pt")
    torch.save(tiny_emotion_encoder(1).state_dict(), model / "model_emoenc.pt")
    proc = run(["scripts/convert_official.py", "--model_dir", model, "--base", tiny_base_dir, "--out",
                tmp_path / "converted", "--dtype", "float16"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not_ours(proc.stderr) == [] and proc.stderr == ""


# ------------------------------------------------------------------------------------ --help (item 17)
SCRIPTS = ("evaluate", "download_weights", "convert_official", "make_test_split", "demo")


def _parser(name: str) -> argparse.ArgumentParser:
    return load_script(f"scripts/{name}.py").build_parser()


def _examples(help_text: str, name: str) -> list[list[str]]:
    """The argv of every example command of `scripts/<name>.py` in its help (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", help_text)
    commands = []
    for line in text.splitlines():
        if f"scripts/{name}.py" not in line or not line.lstrip().startswith(("python ", "accelerate ")):
            continue
        words = shlex.split(re.sub(r"\s+#.*$", "", line))
        commands.append(words[words.index(f"scripts/{name}.py") + 1:])
    return commands


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_groups_options_shows_each_default_once_and_has_working_examples(name, monkeypatch):
    parser = _parser(name)
    groups = [g.title for g in parser._action_groups if g._group_actions and g.title not in ("options",
                                                                                             "positional arguments")]
    assert len(groups) >= 2, groups
    assert isinstance(parser._get_formatter(), HelpFormatter)
    formatter = HelpFormatter(name)
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings} has no help"
        shown = formatter._get_help_string(action).lower().count("default")
        meaningful = action.nargs != 0 and action.default is not None
        assert shown == 1 if meaningful else shown <= 1, (action.option_strings, formatter._get_help_string(action))

    help_text = parser.format_help()
    examples = _examples(help_text, name)
    assert examples, f"scripts/{name}.py --help shows no example"
    monkeypatch.chdir(REPO)  # the examples name configs/ relative to the repository root
    for argv in examples:
        parse_args(_parser(name), argv)  # every flag exists and every value parses
