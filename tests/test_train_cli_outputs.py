"""Read-only output folders and incomplete checkpoints get a clear error before any work (issue 9, item 7)."""

import os

import pytest
import torch
from tiny_training import tiny_train_args

from emoeditor.errors import EmoEditorError, MissingWeightsError
from emoeditor.fileio import unwritable
from emoeditor.training import checkpoint as ckpt
from emoeditor.training import trainer as training


def make_args(tmp_path, tiny_base_dir, toy_emopair, **overrides):
    return tiny_train_args(tmp_path, tiny_base_dir, *toy_emopair, **{"max_steps": 2, "preview_steps": 2, **overrides})



@pytest.fixture
def no_model_load(monkeypatch):
    """Loading the base model counts as work: it must not happen before the checks."""
    from emoeditor.models import components

    def refuse(*a, **kw):
        raise AssertionError("the base model was loaded before the output folders were checked")

    monkeypatch.setattr(components, "load_base_components", refuse)


@pytest.mark.parametrize("flag", ["save_model_dir", "train_save_dir", "export_dir", "latent_cache"])
def test_read_only_output_folder_stops_training_before_any_work(flag, read_only, tmp_path, tiny_base_dir, toy_emopair,
                                                                 no_model_load):
    target = read_only / "out"  # does not exist yet: its parent must be writable
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, **{flag: str(target)})
    with pytest.raises(EmoEditorError) as exc:
        training.train(args)
    message = str(exc.value)
    assert f"--{flag} {target}: cannot write there" in message and "nothing was done" in message, message
    assert f"its parent {read_only} is not writable" in message
    assert not (tmp_path / "models").exists() and not (tmp_path / "logs").exists()

    args = make_args(tmp_path, tiny_base_dir, toy_emopair, **{flag: str(read_only)})  # the folder itself
    with pytest.raises(EmoEditorError, match=f"--{flag} {read_only}: cannot write there"):
        training.train(args)


def test_an_output_path_that_is_a_file_is_named(tmp_path, tiny_base_dir, toy_emopair, no_model_load):
    (tmp_path / "taken").write_text("a file")
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, train_save_dir=str(tmp_path / "taken" / "logs"))
    with pytest.raises(EmoEditorError, match="--train_save_dir .*taken/logs .*is a file, not a folder"):
        training.train(args)


def test_read_only_latent_cache_stops_cache_latents_before_loading(read_only, tmp_path, tiny_base_dir, toy_emopair,
                                                                   no_model_load):
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, latent_cache=str(read_only / "cache"))
    with pytest.raises(EmoEditorError, match="--latent_cache .*cannot write there"):
        training.cache_latents(args)


def test_read_only_output_dir_stops_predictor_training_before_any_work(read_only, tmp_path, monkeypatch):
    from emoeditor.cli.train_predictor import build_parser
    from emoeditor.data.toy_emoset import write_toy_emoset
    from emoeditor.training import predictor

    root = write_toy_emoset(tmp_path / "emoset", per_class=(1, 1, 0), photos=("coffee",))
    monkeypatch.setattr(predictor, "load_split", lambda *a, **kw: pytest.fail("read data before the check"))
    args = build_parser().parse_args(["--data_root", str(root), "--output_dir", str(read_only / "p"), "--cpu"])
    with pytest.raises(EmoEditorError, match=f"--output_dir {read_only / 'p'}: cannot write there"):
        predictor.train_predictor(args)


# ------------------------------------------------------------------------------- incomplete checkpoints
def _two_checkpoints(tmp_path):
    root = ckpt.checkpoint_root(tmp_path)
    for step in (1, 2):
        ckpt.save_checkpoint(root, step, {"w": torch.ones(2) * step}, {"step": step}, {"n": 1})
    return root / "step_00000001", root / "step_00000002"


def test_incomplete_checkpoint_names_what_is_missing_and_what_to_do(tmp_path, caplog):
    first, second = _two_checkpoints(tmp_path)
    (second / ckpt.MODEL_FILE).unlink()  # e.g. copied by hand without the weights
    for call in (lambda: ckpt.resolve_checkpoint(str(second), tmp_path), lambda: ckpt.load_checkpoint(second)):
        with pytest.raises(MissingWeightsError) as exc:
            call()
        message = str(exc.value)
        assert "None" not in message and f"{ckpt.MODEL_FILE} missing" in message, message
        assert f"resume from the newest complete one, --resume {first}" in message

    # `latest` points at the incomplete one: the newest complete checkpoint is used, with a warning.
    with caplog.at_level("WARNING", logger="emoeditor"):
        assert ckpt.resolve_checkpoint("latest", tmp_path) == first
    assert f"{second} is incomplete ({ckpt.MODEL_FILE} missing)" in caplog.text

    (first / ckpt.STATE_FILE).unlink()
    with pytest.raises(MissingWeightsError) as exc:
        ckpt.resolve_checkpoint("latest", tmp_path)
    assert "no complete checkpoint" in str(exc.value) and "step_00000001, step_00000002 incomplete" in str(exc.value)
    with pytest.raises(MissingWeightsError, match="train without --resume to start over"):
        ckpt.load_checkpoint(second)


def test_resume_from_an_incomplete_checkpoint_stops_before_loading(tmp_path, tiny_base_dir, toy_emopair,
                                                                   no_model_load):
    _, second = _two_checkpoints(tmp_path / "models")
    (second / ckpt.STATE_FILE).unlink()
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, resume=str(second))
    with pytest.raises(MissingWeightsError, match=f"checkpoint {second} is incomplete: {ckpt.STATE_FILE} missing"):
        training.train(args)
    with pytest.raises(MissingWeightsError, match="--resume .*nowhere: no such folder"):
        training.train(make_args(tmp_path, tiny_base_dir, toy_emopair, resume=str(tmp_path / "nowhere")))


def test_probe_leaves_nothing_behind(tmp_path):
    assert unwritable({"--a": tmp_path, "--b": tmp_path / "new" / "deeper", "--c": None}) == []
    assert os.listdir(tmp_path) == []
