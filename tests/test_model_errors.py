"""Clear errors for the wrong model files and bad evaluation flags (issue 9, items 7-9): one message naming
the input and the fix, exit code 2 from the entry points, never a traceback or torch's own advice."""

import shutil

import pytest
import torch
from repo_scripts import load_script
from safetensors.torch import load_file

from emoeditor.config import run_cli
from emoeditor.editing.loading import load_model
from emoeditor.errors import CheckpointMismatchError, MissingWeightsError
from emoeditor.models.predictor import load_predictor
from emoeditor.models.weights import load_state_dict


class Payload:
    """Any class: a pickle of it can only be loaded by running code."""


@pytest.fixture(scope="module")
def exported_model(tiny_base_dir, tmp_path_factory):
    """A tiny exported EmoEditor folder, as train.py writes it."""
    from emoeditor.editing.pipeline import EmoEditorPipeline
    from emoeditor.models.components import load_base_components
    from emoeditor.models.tiny import tiny_emotion_encoder

    parts = load_base_components(tiny_base_dir, text=False)
    pipe = EmoEditorPipeline(emotion_encoder=tiny_emotion_encoder(0), **parts)
    folder = tmp_path_factory.mktemp("exported") / "model"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def cli_error(main, argv, capsys) -> str:
    """An entry point run as its script runs it: exit code 2, one "error:" message, no traceback."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------- item 7: wrong model folders
def test_a_base_instructpix2pix_folder_is_named_as_such(tiny_base_dir):
    with pytest.raises(MissingWeightsError) as info:
        load_model(tiny_base_dir)
    message = str(info.value)
    assert f"{tiny_base_dir} is a base InstructPix2Pix folder" in message and "not an EmoEditor model" in message
    assert "--base_model" in message and "train.py" in message


def test_pickled_weights_in_a_model_folder_are_refused_by_name(exported_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(exported_model, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    weights.unlink()
    torch.save({**state, "extra": Payload()}, model / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(model)
    message = str(info.value)
    assert str(model / "unet" / "diffusion_pytorch_model.bin") in message and "code-bearing" in message
    assert "Payload" in message and "weights_only" not in message

    torch.save(state, model / "unet" / "diffusion_pytorch_model.bin")  # tensors only: loads as before
    assert load_model(model).unet.conv_in.weight.shape == state["conv_in.weight"].shape


def test_a_truncated_safetensors_file_is_named(exported_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(exported_model, model)
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(CheckpointMismatchError, match="vae/diffusion_pytorch_model.safetensors.*truncated"):
        load_model(model)


def test_official_weights_with_an_unreachable_hub_base_say_what_to_pass(tmp_path, monkeypatch):
    from emoeditor.models.tiny import tiny_emotion_encoder, tiny_unet, tiny_vae

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = {f"unet.{k}": v for k, v in tiny_unet(1).state_dict().items()}
    state.update({f"auto_encoder.{k}": v for k, v in tiny_vae(1).state_dict().items()})
    torch.save(state, tmp_path / "model_ip2p.pt")
    torch.save(tiny_emotion_encoder(1).state_dict(), tmp_path / "model_emoenc.pt")
    with pytest.raises(MissingWeightsError) as info:
        load_model(tmp_path, base_model="timbrooks/instruct-pix2pix")
    message = str(info.value)
    assert "base model timbrooks/instruct-pix2pix (HF_HUB_OFFLINE is set)" in message
    assert "--base_model a local InstructPix2Pix folder" in message and "--base_config_only" in message


# ------------------------------------------------------------------------ item 8: refused pickles
@pytest.mark.parametrize("loader", ["state_dict", "predictor"])
def test_a_refused_pickle_says_what_it_is_and_never_to_disable_the_check(tmp_path, loader):
    path = tmp_path / "emo_predictor.pt"
    torch.save({"fc.weight": torch.zeros(8, 512), "hook": Payload()}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict(path, "emotion predictor", "emo_predictor") if loader == "state_dict" else load_predictor(path)
    message = str(info.value)
    assert message.startswith(f"{path} was not loaded") and "code-bearing" in message and "Payload" in message
    for advice in ("weights_only", "re-download", "download it again", "trust"):
        assert advice not in message, advice


def test_a_truncated_pt_is_told_apart_from_a_refused_pickle(tmp_path):
    path = tmp_path / "model_emoenc.pt"
    torch.save({"fc.0.weight": torch.zeros(4, 8)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict(path, "official emotion encoder")
    message = str(info.value)
    assert "truncated" in message and "code-bearing" not in message and "weights_only" not in message


# -------------------------------------------------------------------- item 9: a mistyped model folder
def test_a_mistyped_model_folder_says_first_that_it_does_not_exist(exported_model):
    typo = exported_model.parent / "modle"
    with pytest.raises(MissingWeightsError) as info:
        load_model(typo)
    message = str(info.value)
    assert message.startswith(f"model folder {typo} does not exist (its folder {typo.parent}/ does; "
                              f"did you mean {exported_model}?)")
    assert message.index("does not exist") < message.index("download")

    deeper = exported_model.parent / "no_such_run" / "model"
    with pytest.raises(MissingWeightsError, match=f"{deeper} does not exist, nor does its folder"):
        load_model(deeper)


def test_a_mistyped_predictor_says_first_that_it_does_not_exist(tiny_predictor_dir):
    typo = tiny_predictor_dir.parent / (tiny_predictor_dir.name + "x")
    with pytest.raises(MissingWeightsError) as info:
        load_predictor(typo)
    assert str(info.value).startswith(f"emotion predictor {typo} does not exist (its folder {typo.parent}/ does; "
                                      f"did you mean {tiny_predictor_dir}?)")


# ---------------------------------------------------- item 7: evaluate.py's flags, checked before any work
@pytest.fixture(scope="module")
def toy_split(tmp_path_factory):
    from emoeditor.data.toy_emoset import write_toy_emoset
    from emoeditor.evaluation.split import make_test_split, save_split

    tmp = tmp_path_factory.mktemp("errors_emoset")
    root = write_toy_emoset(tmp / "EmoSet", layout="release", per_class=(0, 0, 1), image_size=64, seed=0)
    return save_split(make_test_split(root, None, per_class=1, seed=0), tmp / "test_split.json")


def evaluate_argv(split, predictor, out, *extra):
    return ["--split", str(split), "--predictor", str(predictor), "--out", str(out), "--per_class", "1",
            "--targets", "awe", "--image_size", "64", "--metric_size", "64", "--device", "cpu", "--bootstrap", "0",
            "--no_grid", "--num_loop", "1", "--num_inference_steps", "2", *extra]


@pytest.mark.parametrize("spec, expected", [
    ("ours:modle=x", "unknown option 'modle' (did you mean model?)"),
    ("ours:num_loop=many", "option num_loop='many' is not valid"),
    ("ours:critic=strict", "choose one of paper, official, none"),
    ("identity:strength=2", "unknown option 'strength'; identity takes no options"),
])
def test_a_bad_method_option_is_exit_2_before_any_work(toy_split, tiny_predictor_dir, tmp_path, capsys, spec,
                                                       expected):
    main = load_script("scripts/evaluate.py").main
    out = tmp_path / "out"
    err = cli_error(main, evaluate_argv(toy_split, tiny_predictor_dir, out, "--methods", spec), capsys)
    assert spec in err and expected in err
    assert not out.exists()  # nothing was done


def test_a_missing_model_of_a_method_is_exit_2_before_any_work(toy_split, tiny_predictor_dir, tmp_path, capsys):
    main = load_script("scripts/evaluate.py").main
    out = tmp_path / "out"
    model = tmp_path / "runs" / "demo" / "model"
    err = cli_error(main, evaluate_argv(toy_split, tiny_predictor_dir, out, "--methods", "ours", "--model",
                                        str(model)), capsys)
    assert f"model of method 'ours' {model} does not exist" in err and "run `make demo` first" in err
    assert not out.exists()


def test_a_base_folder_passed_as_model_is_exit_2(toy_split, tiny_predictor_dir, tiny_base_dir, tmp_path, capsys):
    main = load_script("scripts/evaluate.py").main
    err = cli_error(main, evaluate_argv(toy_split, tiny_predictor_dir, tmp_path / "out", "--methods", "ours",
                                        "--model", str(tiny_base_dir)), capsys)
    assert "is a base InstructPix2Pix folder" in err



def test_a_read_only_output_folder_is_exit_2_before_any_work(toy_split, tiny_predictor_dir, read_only, monkeypatch,
                                                            capsys):
    from emoeditor.evaluation import runner

    monkeypatch.setattr(runner, "load_jobs", lambda *a: pytest.fail("the jobs were loaded before the check"))
    main = load_script("scripts/evaluate.py").main
    err = cli_error(main, evaluate_argv(toy_split, tiny_predictor_dir, read_only / "eval", "--methods", "identity"),
                    capsys)
    assert f"--out {read_only / 'eval'}" in err and "not writable" in err


def test_an_output_folder_that_is_a_file_is_exit_2(toy_split, tiny_predictor_dir, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should go")
    main = load_script("scripts/evaluate.py").main
    err = cli_error(main, evaluate_argv(toy_split, tiny_predictor_dir, blocker / "eval", "--methods", "identity"),
                    capsys)
    assert f"--out {blocker / 'eval'}" in err and "is a file, not a folder" in err
