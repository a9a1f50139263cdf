"""Every shipped training preset runs as its comment documents, from a fresh clone (issue 9, item 3).

The tiny presets run for real (only the step count is cut) in a temporary folder standing in for a
fresh clone, with what `make demo` / make_toy_emoset.py write there first. The full-size presets
cannot run here; for them the test is that they parse and that, on a fresh clone, the missing base
model and data get a clear error naming each one and how to get it.
"""

import shutil
import subprocess
import sys

import pytest
from repo_scripts import REPO, load_script

from emoeditor.config import parse_args, run_cli

TRAIN_PRESETS = ("tiny.yaml", "paper.yaml", "official.yaml")
PREDICTOR_PRESETS = ("predictor_paper.yaml", "predictor_tiny.yaml")
# scripts/build_mini_world.py's presets: it passes their data and output paths itself (tests/test_mini_world.py)
MINI_WORLD_PRESETS = ("mini.yaml", "predictor_mini.yaml")


def cli_error(main, argv, capsys) -> str:
    """Run an entry point as its script does; it must fail with exit code 2 and one message, no traceback."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: " in err and "Traceback" not in err, err
    return err


@pytest.fixture
def demo_clone(tmp_path, toy_emopair):
    """A fresh clone after `make demo`'s first step: the shipped mini_world/ and the toy EmoPair under runs/demo."""
    demo = tmp_path / "runs" / "demo"
    (tmp_path / "mini_world").symlink_to(REPO / "mini_world")
    root, json_path = toy_emopair
    shutil.copytree(root, demo / "EmoPair")
    (demo / "json").mkdir()
    shutil.copy(json_path, demo / "json" / "data_EmoPair.json")
    return tmp_path


def test_every_training_preset_is_tested_here():
    """A new preset must be added here; infer_*.yaml and eval_*.yaml are test.py's and evaluate.py's."""
    shipped = {p.name for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith(("infer_", "eval_"))}
    assert shipped == set(TRAIN_PRESETS) | set(PREDICTOR_PRESETS) | set(MINI_WORLD_PRESETS)


@pytest.mark.parametrize("preset", TRAIN_PRESETS + PREDICTOR_PRESETS)
def test_every_preset_documents_a_command_that_parses(preset, monkeypatch):
    """The command in each preset's header comment names the preset and parses with its script's flags."""
    import shlex

    monkeypatch.chdir(REPO)
    header = [line.lstrip("# ").split("  #")[0] for line in (REPO / "configs" / preset).read_text().splitlines()
              if line.startswith("#   python ")]
    commands = [shlex.split(line) for line in header if f"configs/{preset}" in line]
    assert commands, f"configs/{preset} does not document its command"
    parsers = {"train.py": _train_parser, "scripts/train_predictor.py": _predictor_parser}
    for cmd in commands:
        parse_args(parsers[cmd[1]](), cmd[2:])


def test_tiny_preset_says_to_run_make_demo_and_names_its_paths():
    text = (REPO / "configs" / "tiny.yaml").read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert "make demo" in header and "python train.py --config configs/tiny.yaml" in header
    args = parse_args(_train_parser(), ["--config", str(REPO / "configs" / "tiny.yaml")])
    assert (args.base_model, args.init_model, args.data_root, args.json_path) == (
        "mini_world/model", "mini_world/model", "runs/demo/EmoPair", "runs/demo/json/data_EmoPair.json")


def test_tiny_preset_runs_as_documented_after_make_demo(demo_clone):
    """`python train.py --config configs/tiny.yaml` from the clone's root (a real process), 2 steps instead of 30."""
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs" / "tiny.yaml"),
                           "--max_steps", "2"], cwd=demo_clone, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = (demo_clone / "runs" / "tiny" / "save_models" / "model").resolve()
    assert (model / "model_index.json").is_file() and (model / "training_summary.json").is_file()
    assert "training done: 2 steps" in proc.stdout and str(model) in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr


def test_tiny_preset_without_make_demo_says_to_run_it(tmp_path, monkeypatch, capsys):
    from emoeditor.cli.train import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mini_world").symlink_to(REPO / "mini_world")  # shipped with the repository; runs/demo is not
    err = cli_error(main, ["--config", str(REPO / "configs" / "tiny.yaml")], capsys)
    for flag, path in (("--json_path", "runs/demo/json/data_EmoPair.json"), ("--data_root", "runs/demo/EmoPair")):
        assert f"{flag} {path} does not exist" in err, err
    assert "Run `make demo` first" in err
    assert "huggingface-cli download" not in err  # not the full model's advice for the tiny path
    assert not (tmp_path / "runs" / "tiny").exists()  # nothing was done


@pytest.mark.parametrize("preset", ["paper.yaml", "official.yaml"])
def test_full_size_presets_name_the_missing_base_model_and_data(preset, tmp_path, monkeypatch, capsys):
    """On a fresh clone (no EmoPair, no annotations, the hub offline and no cached Ip2p) one error lists
    what is missing and how to get each; with the README's local copy of the base model, the same."""
    from emoeditor.cli.train import main

    monkeypatch.chdir(tmp_path)
    config = ["--config", str(REPO / "configs" / preset)]
    err = cli_error(main, config, capsys)
    assert "--base_model timbrooks/instruct-pix2pix does not exist" in err and "the hub is offline" in err, err
    assert "huggingface-cli download timbrooks/instruct-pix2pix --local-dir model/instruct-pix2pix" in err
    assert "--json_path json/data_EmoPair.json does not exist" in err and "json/README.md" in err
    assert "--data_root EmoPair does not exist" in err
    assert "make demo && python train.py --config configs/tiny.yaml" in err

    (tmp_path / "model").mkdir()  # as in the repository: model/README.md says what goes there
    err = cli_error(main, config + ["--base_model", "model/instruct-pix2pix"], capsys)
    assert "--base_model model/instruct-pix2pix does not exist (its folder model/ does)" in err, err
    assert "huggingface-cli download timbrooks/instruct-pix2pix --local-dir model/instruct-pix2pix" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing was written


def test_predictor_tiny_preset_runs_as_documented(tmp_path, monkeypatch, capsys):
    """The preset's comment: make_toy_emoset.py --root runs/toy_emoset, then train_predictor.py --config."""
    text = (REPO / "configs" / "predictor_tiny.yaml").read_text()
    assert "python scripts/make_toy_emoset.py --root runs/toy_emoset" in text
    monkeypatch.chdir(tmp_path)
    train_predictor = load_script("scripts/train_predictor.py")
    err = cli_error(train_predictor.main, ["--config", str(REPO / "configs" / "predictor_tiny.yaml")], capsys)
    assert "--data_root runs/toy_emoset does not exist" in err
    assert "python scripts/make_toy_emoset.py --root runs/toy_emoset" in err

    load_script("scripts/make_toy_emoset.py").main(["--root", "runs/toy_emoset", "--per_class", "2", "1", "1"])
    summary = train_predictor.main(["--config", str(REPO / "configs" / "predictor_tiny.yaml"), "--max_steps", "2"])
    out = capsys.readouterr().out
    weights = (tmp_path / "runs" / "predictor_tiny" / "emo_predictor.pt").resolve()
    assert weights.is_file() and summary["steps"] == 2
    assert f"predictor weights (best on val): {weights}" in out, out


def test_predictor_paper_preset_names_the_missing_emoset(tmp_path, monkeypatch, capsys):
    train_predictor = load_script("scripts/train_predictor.py")
    monkeypatch.chdir(tmp_path)
    err = cli_error(train_predictor.main, ["--config", str(REPO / "configs" / "predictor_paper.yaml")], capsys)
    assert "--data_root EmoSet-118K does not exist" in err and "download EmoSet-118K there" in err
    assert not (tmp_path / "runs").exists()


def _train_parser():
    from emoeditor.cli.train import build_parser

    return build_parser()


def _predictor_parser():
    from emoeditor.cli.train_predictor import build_parser

    return build_parser()
