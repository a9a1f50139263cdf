"""Official-release loading: tiny fake .pt files in the official key layout, converted and compared."""

import argparse
import fnmatch
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from repo_scripts import load_script as load_repo_script

from emoeditor.editing.loading import load_model, load_official
from emoeditor.editing.pipeline import EmoEditorPipeline
from emoeditor.errors import CheckpointMismatchError, MissingWeightsError
from emoeditor.models import release as official
from emoeditor.models.components import sd_v1_ddim_scheduler
from emoeditor.models.predictor import load_predictor
from emoeditor.models.release import (
    ReleaseFile,
    download_base,
    download_release,
    fetch_release_file,
    read_checksums,
    safetensors_problem,
)
from emoeditor.models.tiny import (
    TINY_ENCODER_HIDDEN,
    TINY_IMAGE_SIZE,
    TINY_TEXT_DIM,
    tiny_emotion_encoder,
    tiny_unet,
    tiny_vae,
)

SEED = 5  # fake "fine-tuned" weights differ from the tiny base (seed 0), so loading them is visible
STEPS = 3
ROOT = Path(__file__).resolve().parent.parent


def write_official(folder: Path, dtype=torch.float16):
    """What official train.py saves: the InstructPix2Pix module's state (.half()) and the encoder's."""
    unet, vae, encoder = tiny_unet(SEED), tiny_vae(SEED), tiny_emotion_encoder(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"unet.{k}": v.to(dtype) for k, v in unet.state_dict().items()}
    state.update({f"auto_encoder.{k}": v.to(dtype) for k, v in vae.state_dict().items()})
    torch.save(state, folder / "model_ip2p.pt")
    torch.save(encoder.state_dict(), folder / "model_emoenc.pt")
    return unet, vae, encoder


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official") / "model"
    write_official(folder, torch.float32)
    return folder


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=g), torch.randn(2, 8, generator=g)


def edit(pipe, inputs, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    images, emotions = inputs
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    return pipe(images, emotions, generator=gens, num_inference_steps=STEPS, **kwargs).images


def test_load_official_takes_every_weight_from_the_pt(official_dir, tiny_base_dir):
    unet, vae, encoder = tiny_unet(SEED), tiny_vae(SEED), tiny_emotion_encoder(SEED)
    pipe = load_official(official_dir, base=tiny_base_dir)
    for ours, theirs in ((pipe.unet, unet), (pipe.vae, vae), (pipe.emotion_encoder, encoder)):
        ref = theirs.state_dict()
        got = ours.state_dict()
        assert set(got) == set(ref)
        assert all(torch.equal(got[k], ref[k]) for k in ref)
    base_unet = tiny_unet(0).state_dict()
    assert not torch.equal(pipe.unet.state_dict()["conv_in.weight"], base_unet["conv_in.weight"])
    cfg = pipe.emotion_encoder.config
    assert tuple(cfg.hidden_dims) == TINY_ENCODER_HIDDEN and cfg.embed_dim == TINY_TEXT_DIM and cfg.seq_len == 77
    assert pipe.config.emotion_input == "direction" and pipe.config.vae_input_range == "zero_one"
    assert pipe.config.inference_vae_input_range == "minus_one_one"
    assert pipe.unet.dtype == torch.float32 and not any(p.requires_grad for p in pipe.unet.parameters())


def test_official_pipeline_edits_like_the_modules_it_was_saved_from(official_dir, tiny_base_dir, inputs):
    unet, vae, encoder = tiny_unet(SEED), tiny_vae(SEED), tiny_emotion_encoder(SEED)
    reference = EmoEditorPipeline(unet=unet.eval(), vae=vae.eval(), emotion_encoder=encoder.eval(),
                                  scheduler=sd_v1_ddim_scheduler())
    pipe = load_official(official_dir, base=tiny_base_dir)
    expected = edit(reference, inputs)
    assert torch.equal(edit(pipe, inputs), expected)
    # Official inference feeds the VAE 2x-1 although training fed [0, 1]: the config records both and
    # the edit reads the inference one, so feeding [0, 1] (the training convention) is visibly different.
    assert (pipe.config.vae_input_range, pipe.config.inference_vae_input_range) == ("zero_one", "minus_one_one")
    pipe.register_to_config(inference_vae_input_range="zero_one")
    assert not torch.equal(edit(pipe, inputs), expected)


def test_converted_folder_gives_identical_edits(official_dir, tiny_base_dir, inputs, tmp_path):
    convert = load_script("convert_official")
    out = tmp_path / "emoeditor"
    convert.main(["--model_dir", str(official_dir), "--base", str(tiny_base_dir), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["emotion_encoder", "model_index.json", "scheduler", "unet", "vae"]
    assert not list(out.rglob("*.bin")) and len(list(out.rglob("*.safetensors"))) == 3
    index = json.loads((out / "model_index.json").read_text())
    assert index["emotion_input"] == "direction" and index["vae_input_range"] == "zero_one"
    assert index["inference_vae_input_range"] == "minus_one_one"
    converted = EmoEditorPipeline.from_pretrained(out)
    direct = load_official(official_dir, base=tiny_base_dir)
    assert torch.equal(edit(converted, inputs), edit(direct, inputs))
    bf16 = load_model(out, torch_dtype=torch.bfloat16)  # test.py's loader, exported folder
    assert bf16.unet.dtype == torch.bfloat16 and bf16.emotion_encoder.dtype == torch.float32


def test_half_precision_pt_loads(tmp_path, tiny_base_dir, inputs):
    folder = tmp_path / "model"
    unet, _, _ = write_official(folder, torch.float16)
    assert torch.load(folder / "model_ip2p.pt", weights_only=True)["unet.conv_in.weight"].dtype == torch.float16
    pipe = load_official(folder, base=tiny_base_dir)
    assert pipe.unet.dtype == torch.float32
    torch.testing.assert_close(pipe.unet.conv_in.weight, unet.conv_in.weight.half().float(), rtol=0, atol=0)
    half = load_official(folder, base=tiny_base_dir, torch_dtype=torch.float16)
    assert half.unet.dtype == torch.float16 and half.vae.dtype == torch.float16
    assert half.emotion_encoder.dtype == torch.float32  # official test.py never halves the encoder
    assert torch.equal(half.unet.conv_in.weight, unet.conv_in.weight.half())
    bf16 = load_official(folder, base=tiny_base_dir, torch_dtype=torch.bfloat16)
    out = edit(bf16, inputs)  # CPU runs bfloat16 everywhere; float16 is for GPUs
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_missing_files_say_which_where_and_from_where(tmp_path, tiny_base_dir):
    with pytest.raises(MissingWeightsError) as info:
        load_official(tmp_path / "model", base=tiny_base_dir)
    msg = str(info.value)
    assert "model_ip2p.pt" in msg and str(tmp_path / "model") in msg and "drive.google.com" in msg
    assert "download_weights.py" in msg
    write_official(tmp_path / "model", torch.float16)
    (tmp_path / "model" / "model_emoenc.pt").unlink()
    with pytest.raises(MissingWeightsError, match="model_emoenc.pt"):
        load_official(tmp_path / "model", base=tiny_base_dir)
    write_official(tmp_path / "complete", torch.float16)
    with pytest.raises(MissingWeightsError, match="not a diffusers InstructPix2Pix folder"):
        load_official(tmp_path / "complete", base=tmp_path / "no_base")


def test_wrong_checkpoints_are_refused_with_a_message(tmp_path, tiny_base_dir):
    folder = tmp_path / "model"
    write_official(folder, torch.float16)
    state = torch.load(folder / "model_ip2p.pt", weights_only=True)
    torch.save({k.replace("auto_encoder.", "vae."): v for k, v in state.items()}, folder / "model_ip2p.pt")
    with pytest.raises(CheckpointMismatchError, match="auto_encoder"):
        load_official(folder, base=tiny_base_dir)
    state.pop("unet.conv_in.bias")
    torch.save(state, folder / "model_ip2p.pt")
    with pytest.raises(CheckpointMismatchError, match="1 missing"):
        load_official(folder, base=tiny_base_dir)
    torch.save({"args": argparse.Namespace(lr=1)}, folder / "model_ip2p.pt")  # needs unpickling: refused
    with pytest.raises(CheckpointMismatchError, match="code-bearing") as refused:
        load_official(folder, base=tiny_base_dir)
    assert "argparse.Namespace" in str(refused.value) and "weights_only" not in str(refused.value)


def test_predictor_conversion(tmp_path, tiny_predictor_dir, official_dir, tiny_base_dir):
    pt = tmp_path / "emo_predictor" / "emo_predictor.pt"
    pt.parent.mkdir()
    pt.write_bytes((Path(tiny_predictor_dir) / "emo_predictor.pt").read_bytes())
    load_script("convert_official").main(["--model_dir", str(official_dir), "--base", str(tiny_base_dir),
                                          "--out", str(tmp_path / "pipe"), "--predictor", str(pt)])
    assert (pt.parent / "model.safetensors").exists() and (pt.parent / "config.json").exists()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(load_predictor(pt.parent)(x), load_predictor(pt)(x), rtol=0, atol=0)


def load_script(name):
    return load_repo_script(f"scripts/{name}.py")


# ------------------------------------------------------------------ downloading (network mocked)
def small_checkpoint(path: Path, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    torch.save({"fc.weight": torch.randn(64, 64, generator=g), "fc.bias": torch.randn(64, generator=g)}, path)
    return path.read_bytes()


class FakeDrive:
    """Serves bytes like gdown: partial data in '<dest>.part' (kept across failures), then renamed."""

    def __init__(self, payload: bytes, fail_after: int | None = None):
        self.payload, self.fail_after, self.calls, self.resumed_from = payload, fail_after, 0, []

    def __call__(self, url, dest, name):
        self.calls += 1
        assert url.startswith("https://drive.google.com/")
        part = dest.with_name(dest.name + ".part")
        done = part.read_bytes() if part.exists() else b""
        self.resumed_from.append(len(done))
        if self.fail_after is not None:  # the first attempt breaks off, the next gets through
            part.write_bytes(self.payload[:self.fail_after])
            self.fail_after = None
            raise ConnectionError("connection reset")
        part.write_bytes(done + self.payload[len(done):])
        part.replace(dest)


def release_file(min_bytes=100):
    return ReleaseFile("model/model_emoenc.pt", "models", min_bytes)


def test_download_verifies_records_sha256_and_skips_when_present(tmp_path):
    payload = small_checkpoint(tmp_path / "src.pt")
    drive = FakeDrive(payload)
    root = tmp_path / "repo"
    status = download_release(root, ["models"], fetch=drive, files=[release_file()])
    assert status == {"model/model_emoenc.pt": "downloaded"}
    dest = root / "model" / "model_emoenc.pt"
    assert dest.read_bytes() == payload and not list(dest.parent.glob("*.download*"))
    assert read_checksums(dest.parent) == {"model_emoenc.pt": hashlib.sha256(payload).hexdigest()}
    line = (dest.parent / "SHA256SUMS").read_text()
    assert line == f"{hashlib.sha256(payload).hexdigest()}  model_emoenc.pt\n"  # `sha256sum -c` format
    status = download_release(root, ["models"], fetch=drive, files=[release_file()])
    assert status["model/model_emoenc.pt"] == "present"
    assert drive.calls == 1


def test_interrupted_download_resumes_from_partial_data(tmp_path):
    payload = small_checkpoint(tmp_path / "src.pt")
    drive = FakeDrive(payload, fail_after=len(payload) // 2)
    root = tmp_path / "repo"
    with pytest.raises(MissingWeightsError, match="connection reset.*Run the script again to resume"):
        fetch_release_file(release_file(), root, drive)  # the network library's error, said plainly
    assert not (root / "model" / "model_emoenc.pt").exists()
    assert fetch_release_file(release_file(), root, drive) == "downloaded"
    assert drive.resumed_from == [0, len(payload) // 2]
    assert (root / "model" / "model_emoenc.pt").read_bytes() == payload


def test_complete_stage_left_by_a_crash_is_promoted_without_fetching(tmp_path):
    root = tmp_path / "repo"
    (root / "model").mkdir(parents=True)
    payload = small_checkpoint(root / "model" / "model_emoenc.pt.download")
    drive = FakeDrive(b"never served")
    assert fetch_release_file(release_file(), root, drive) == "downloaded" and drive.calls == 0
    assert (root / "model" / "model_emoenc.pt").read_bytes() == payload


@pytest.mark.parametrize("damage, match", [
    (lambda b: b"<!DOCTYPE html><html>Google Drive - Quota exceeded</html>", "HTML page"),
    (lambda b: b[: len(b) - 40], "zip archive"),
    (lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:], "CRC|zip"),
])
def test_bad_downloads_are_rejected_and_never_installed(tmp_path, damage, match):
    payload = small_checkpoint(tmp_path / "src.pt")
    root = tmp_path / "repo"
    min_bytes = 1000  # the error page is smaller, the damaged checkpoints are not
    with pytest.raises(MissingWeightsError, match=match) as info:
        fetch_release_file(release_file(min_bytes), root, FakeDrive(damage(payload)))
    assert "drive.google.com" in str(info.value) and "model/model_emoenc.pt" in str(info.value)
    assert not (root / "model" / "model_emoenc.pt").exists()
    assert not (root / "model" / "model_emoenc.pt.download").exists()


def test_file_that_no_longer_matches_its_checksum_is_downloaded_again(tmp_path):
    payload = small_checkpoint(tmp_path / "src.pt")
    root = tmp_path / "repo"
    drive = FakeDrive(payload)
    fetch_release_file(release_file(), root, drive)
    dest = root / "model" / "model_emoenc.pt"
    small_checkpoint(dest, seed=1)  # a valid torch file, but not the one recorded
    assert fetch_release_file(release_file(), root, drive) == "downloaded" and drive.calls == 2
    assert dest.read_bytes() == payload


def fake_snapshot(source: Path):
    def hub_download(repo_id, local_dir, allow_patterns):
        assert repo_id == "timbrooks/instruct-pix2pix"
        for path in source.rglob("*"):
            rel = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, Path(local_dir) / rel)
    return hub_download


def test_base_download_is_checked_and_configs_suffice_for_official_weights(tmp_path, tiny_base_dir, official_dir,
                                                                          inputs):
    full = download_base(tmp_path / "full", hub_download=fake_snapshot(Path(tiny_base_dir)))
    assert not list(full.rglob("*.bin")) and (full / "unet" / "diffusion_pytorch_model.safetensors").exists()
    configs = download_base(tmp_path / "cfg", config_only=True, hub_download=fake_snapshot(Path(tiny_base_dir)))
    assert not list(configs.rglob("*.safetensors")) and (configs / "unet" / "config.json").exists()
    assert torch.equal(edit(load_official(official_dir, base=configs), inputs),
                       edit(load_official(official_dir, base=full), inputs))
    weights = full / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "truncated" in safetensors_problem(weights)
    with pytest.raises(MissingWeightsError, match="unet/diffusion_pytorch_model.safetensors"):
        download_base(tmp_path / "full", hub_download=lambda **kw: None)


def test_download_script_end_to_end(tmp_path, monkeypatch, capsys):
    payload = small_checkpoint(tmp_path / "src.pt")
    monkeypatch.setattr(official, "gdown_fetch", FakeDrive(payload))
    monkeypatch.setattr(official, "RELEASE_FILES", (release_file(),))
    load_script("download_weights").main(["--root", str(tmp_path / "repo"), "--parts", "models"])
    assert "model/model_emoenc.pt: downloaded" in capsys.readouterr().out
    assert (tmp_path / "repo" / "model" / "model_emoenc.pt").read_bytes() == payload


def test_gdown_fetch_finds_the_file_in_a_drive_folder(tmp_path, monkeypatch):
    calls = []

    class FakeGdown:
        @staticmethod
        def download_folder(url, skip_download, quiet):
            assert skip_download and url == official.OFFICIAL_DOWNLOADS["models"]
            item = type("Item", (), {})
            files = []
            for file_id, path in (("id-enc", "model/model_emoenc.pt"), ("id-unet", "model/model_ip2p.pt")):
                f = item()
                f.id, f.path = file_id, path
                files.append(f)
            return files

        @staticmethod
        def download(id, output, resume, quiet=False):
            calls.append((id, Path(output).name, resume))
            Path(output).write_bytes(b"x")
            return output

    monkeypatch.setitem(sys.modules, "gdown", FakeGdown)
    official.gdown_fetch(official.OFFICIAL_DOWNLOADS["models"], tmp_path / "a.download", "model_ip2p.pt")
    official.gdown_fetch(official.OFFICIAL_DOWNLOADS["emo_predictor"], tmp_path / "b.download", "emo_predictor.pt")
    assert calls == [("id-unet", "a.download", True), ("1LWcj-ENbgqefXjuz2aVB8ynzUpnQYnim", "b.download", True)]
    with pytest.raises(MissingWeightsError, match="model_emoenc.pt, model_ip2p.pt"):
        official.gdown_fetch(official.OFFICIAL_DOWNLOADS["models"], tmp_path / "c.download", "other.pt")
