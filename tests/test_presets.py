"""Every YAML preset in configs/ parses with its entry point's parser (a typo in a preset is an error)."""


import pytest
from repo_scripts import REPO, load_script

from emoeditor.config import parse_args


def _script_parser(name):
    return load_script(f"scripts/{name}.py").build_parser()


def _parser(preset: str):
    if preset.startswith("infer_"):
        from emoeditor.cli.edit import build_parser
        return build_parser()
    if preset.startswith("eval_"):
        return _script_parser("evaluate")
    if preset.startswith("predictor_"):
        from emoeditor.cli.train_predictor import build_parser
        return build_parser()
    from emoeditor.cli.train import build_parser  # paper, official, tiny: train.py
    return build_parser()


PRESETS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


def test_presets_exist():
    assert {"paper.yaml", "tiny.yaml", "official.yaml", "infer_paper.yaml", "eval_paper.yaml"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_parses(preset):
    import yaml

    values = yaml.safe_load((REPO / "configs" / preset).read_text())
    args = parse_args(_parser(preset), ["--config", str(REPO / "configs" / preset)])
    for key, value in values.items():
        got = getattr(args, key)
        assert got == value or (isinstance(got, (list, tuple)) and list(got) == value), key


def test_official_preset_is_the_official_recipe():
    from emoeditor.cli.train import build_parser

    args = parse_args(build_parser(), ["--config", str(REPO / "configs" / "official.yaml")])
    assert (args.vae_input_range, args.adam_eps, args.learning_rate, args.batch_size) == ("zero_one", 1e-3, 1e-5, 32)
