"""The miniature world's tiny VAE: it learns to reconstruct, its latent scale is folded into the weights,
it is deterministic in the seed, loads like any diffusers VAE, and a finished stage is not retrained."""

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL

from emoeditor.constants import LATENT_SCALE
from emoeditor.data.toy import TOY_PHOTOS
from emoeditor.models.latents import latent_dist
from emoeditor.models.tiny import tiny_vae
from emoeditor.training import vae as vae_training
from emoeditor.training.vae import fold_latent_scale, heldout_batch, load_photos, reconstruct, train_tiny_vae

QUICK = dict(steps=40, batch_size=4, lr=3e-3, progress=False)
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(out_dir, summary) of one quick run with seed 0."""
    out = tmp_path_factory.mktemp("tiny_vae") / "vae"
    return out, train_tiny_vae(out, seed=0, **QUICK)


@pytest.fixture(scope="module")
def photos():
    return load_photos(TOY_PHOTOS)


def test_training_lowers_reconstruction_error(trained):
    out, summary = trained
    assert summary["heldout_l1"] < 0.8 * summary["heldout_l1_before"]
    assert summary["heldout_psnr"] > summary["heldout_psnr_before"] + 2
    assert summary["steps"] == QUICK["steps"] and summary["fold_k"] > 0
    assert json.loads((out / "training_summary.json").read_text()) == summary
    assert not list(out.parent.glob(".*.tmp"))  # the temporary folder was renamed into place


def test_fold_latent_scale_gives_unit_std_and_keeps_reconstructions(photos):
    vae = tiny_vae(3).eval()
    images = heldout_batch(photos, 64, n=16)
    before = reconstruct(vae, images)
    k = fold_latent_scale(vae, images)
    assert k > 0 and abs(k - 1) > 0.1  # a random-init VAE is far from the SD scale, so this is a real test
    with torch.no_grad():
        std = float(latent_dist(vae, images).mean.std())
    assert std * LATENT_SCALE == pytest.approx(1.0, rel=1e-3)
    torch.testing.assert_close(reconstruct(vae, images), before, atol=1e-4, rtol=0)


def test_saved_vae_has_the_sd_latent_scale(trained, photos):
    out, _ = trained
    vae = AutoencoderKL.from_pretrained(out).eval()
    with torch.no_grad():
        std = float(torch.cat([latent_dist(vae, c).mean for c in heldout_batch(photos, 64).split(16)]).std())
    assert std * LATENT_SCALE == pytest.approx(1.0, rel=1e-3)


def test_same_seed_same_bytes_other_seed_differs(trained, tmp_path):
    out, _ = trained
    again = tmp_path / "again"
    train_tiny_vae(again, seed=0, **QUICK)
    assert (again / WEIGHTS).read_bytes() == (out / WEIGHTS).read_bytes()
    other = tmp_path / "other"
    train_tiny_vae(other, seed=1, **QUICK)
    assert (other / WEIGHTS).read_bytes() != (out / WEIGHTS).read_bytes()


def test_loads_with_diffusers_and_as_the_base_models_vae(trained, tiny_base_dir, tmp_path):
    from emoeditor.models.components import load_base_components

    out, _ = trained
    vae = AutoencoderKL.from_pretrained(out)
    base = shutil.copytree(tiny_base_dir, tmp_path / "base")
    shutil.rmtree(base / "vae")
    shutil.copytree(out, base / "vae")
    loaded = load_base_components(base, text=False)["vae"]
    for name, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_finished_folder_is_not_retrained(trained, monkeypatch):
    out, summary = trained
    mtime = (out / WEIGHTS).stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("retrained a finished VAE")

    monkeypatch.setattr(vae_training, "make_batch", no_training)
    monkeypatch.setattr(vae_training, "tiny_vae", no_training)
    assert train_tiny_vae(out, seed=0, **QUICK) == summary
    assert (out / WEIGHTS).stat().st_mtime_ns == mtime


def test_refuses_to_replace_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(vae_training.EmoEditorError, match="other files"):
        train_tiny_vae(tmp_path, **QUICK)
    assert (tmp_path / "notes.txt").read_text() == "mine"
