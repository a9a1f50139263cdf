import argparse

import pytest

from emoeditor.config import parse_args
from emoeditor.errors import EmoEditorError


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lambda_emb", type=float, default=0.5)
    return p


def test_preset_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 4\nlambda_emb: 0.0\n")
    args = parse_args(_parser(), ["--config", str(cfg), "--batch_size", "8"])
    assert args.batch_size == 8 and args.lambda_emb == 0.0


def test_unknown_key_and_missing_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batchsize: 4\n")
    with pytest.raises(EmoEditorError, match="batchsize"):
        parse_args(_parser(), ["--config", str(cfg)])
    with pytest.raises(EmoEditorError, match="not found"):
        parse_args(_parser(), ["--config", str(tmp_path / "none.yaml")])


def test_preset_value_outside_choices_is_named(tmp_path):
    p = argparse.ArgumentParser()
    p.add_argument("--mixed_precision", default="auto", choices=["auto", "no", "bf16"])
    p.add_argument("--modes", nargs="+", default=["a"], choices=["a", "b"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mixed_precision: no\n")  # unquoted: YAML reads the boolean False
    with pytest.raises(EmoEditorError, match="mixed_precision: False is not one of auto, no, bf16 .*quote"):
        parse_args(p, ["--config", str(cfg)])
    assert parse_args(p, ["--config", str(cfg), "--mixed_precision", "bf16"]).mixed_precision == "bf16"
    cfg.write_text("modes: [a, c]\n")
    with pytest.raises(EmoEditorError, match="modes"):
        parse_args(p, ["--config", str(cfg)])
    cfg.write_text("mixed_precision: 'no'\nmodes: [b]\n")
    args = parse_args(p, ["--config", str(cfg)])
    assert (args.mixed_precision, args.modes) == ("no", ["b"])
