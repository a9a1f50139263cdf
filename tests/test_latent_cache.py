"""The latent cache: contents equal a direct encode, resumable shards, settings checked."""

from pathlib import Path

import pytest
import torch
from repo_scripts import load_script

from emoeditor.cli import train as train_cli
from emoeditor.data import latent_cache as lc
from emoeditor.data.emopair import EmoPairDataset, load_emopair
from emoeditor.models.components import load_base_components
from emoeditor.models.tiny import TINY_ENCODER_HIDDEN
from emoeditor.training import trainer as training


def cache_args(tmp_path, tiny_base_dir, toy_emopair, **kw):
    root, json_path = toy_emopair
    base = dict(base_model=str(tiny_base_dir), json_path=str(json_path), data_root=str(root), image_size=64,
                encoder_hidden=list(TINY_ENCODER_HIDDEN), num_workers=0, cpu=True, mixed_precision="no",
                latent_cache=str(tmp_path / "cache"), cache_shard_size=10, cache_batch_size=4, no_progress=True)
    base.update(kw)
    return train_cli.default_args(**base)


def run_script(argv):
    load_script("scripts/cache_latents.py").main(argv)


def test_cache_matches_direct_encoding_and_resumes(tmp_path, tiny_base_dir, toy_emopair):
    root, json_path = toy_emopair
    args = cache_args(tmp_path, tiny_base_dir, toy_emopair)
    run_script(["--base_model", args.base_model, "--json_path", args.json_path, "--data_root", args.data_root,
                "--image_size", "64", "--cpu", "--mixed_precision", "no", "--num_workers", "0",
                "--latent_cache", args.latent_cache, "--cache_shard_size", "10", "--no_progress"])
    cache = lc.LatentCacheDataset(args.latent_cache)
    images = EmoPairDataset(load_emopair(json_path, root), root, 64)
    assert len(cache) == len(images) == 24
    assert sorted(p.name for p in Path(args.latent_cache).glob("shard_*")) == [
        "shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors"]

    base = load_base_components(tiny_base_dir)
    for i in (0, 13, 23):
        item, ref = cache[i], images[i]
        batch = {"source": ref["source"][None], "target": ref["target"][None], "prompt": [ref["prompt"]]}
        direct = lc.encode_batch(batch, base["vae"], base["text_encoder"], base["tokenizer"], "minus_one_one")
        for key in lc.TENSOR_KEYS:
            torch.testing.assert_close(item[key], direct[key][0], rtol=1e-5, atol=1e-5)
        assert item["target_moments"].shape == (8, 16, 16) and item["text_embedding"].shape == (77, 32)
        assert (item["prompt"], item["transition"], item["index"]) == (ref["prompt"], ref["transition"], i)
        assert torch.equal(item["target_vec"], ref["target_vec"])
        torch.testing.assert_close(item["source_softmax"], ref["source_softmax"])
    # The posterior's mode is its mean, and the source latent is the mode of the source image.
    torch.testing.assert_close(lc.target_posterior(cache[0]["target_moments"][None]).mode()[0],
                               cache[0]["target_moments"][:4])

    # An interrupted build resumes: only the missing shard is written again, with the same content.
    shard1 = Path(args.latent_cache) / "shard_00001.safetensors"
    before = {k: v.clone() for k, v in cache[15].items() if torch.is_tensor(v)}
    kept = Path(args.latent_cache) / "shard_00000.safetensors"
    mtime = kept.stat().st_mtime_ns
    shard1.unlink()
    (Path(args.latent_cache) / lc.COMPLETE_FILE).unlink()
    with pytest.raises(lc.LatentCacheError, match="not a complete latent cache"):
        lc.LatentCacheDataset(args.latent_cache)
    training.cache_latents(args)
    assert shard1.exists() and kept.stat().st_mtime_ns == mtime
    after = lc.LatentCacheDataset(args.latent_cache)[15]
    assert all(torch.equal(before[k], after[k]) for k in before)

    # A cache built with other settings is refused, not silently reused.
    (Path(args.latent_cache) / lc.COMPLETE_FILE).unlink()
    with pytest.raises(lc.LatentCacheError, match="other data or settings"):
        training.cache_latents(cache_args(tmp_path, tiny_base_dir, toy_emopair, vae_input_range="zero_one"))
    # So is one built from the same annotations over another image folder.
    import shutil
    other_root = shutil.copytree(root, tmp_path / "other_root")
    with pytest.raises(lc.LatentCacheError, match="other data or settings"):
        training.cache_latents(cache_args(tmp_path, tiny_base_dir, toy_emopair, data_root=str(other_root)))
