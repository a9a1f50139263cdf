"""Run the frozen VAE and CLIP text encoder over EmoPair once, so training reads tensors, not images.

The cache keeps what lets training stay *identical* to the uncached path: the target image's
posterior parameters (mean and log-variance, so the latent is still sampled every step with
the training generator), the source image's posterior mode (the Ip2p condition, deterministic)
and the prompt's CLIP embedding (the L_emb target). `encode_batch` is the one function both
paths call, so cached and uncached training see the same numbers.

Layout: ``meta.json`` (what was encoded and how) + ``shard_00000.safetensors`` ... each holding
`shard_size` pairs, each written atomically (temp file + rename), so an interrupted build resumes
at the missing shards and several processes can split them. ``COMPLETE`` marks a finished cache.
Size per 224px pair in float32: ~37 KB of latents + 236 KB of text embedding (77x768);
``--cache_dtype float16`` halves it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from emoeditor.errors import LatentCacheError
from emoeditor.fileio import atomic_write, atomic_write_text
from emoeditor.models.latents import encode_condition, latent_dist

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
META_FILE = "meta.json"
COMPLETE_FILE = "COMPLETE"
TENSOR_KEYS = ("target_moments", "source_latent", "text_embedding")
CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """(B, 77, D) CLIP last hidden states, padded to the tokenizer's max length (as Ip2p's _encode_prompt)."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


@torch.no_grad()
def encode_batch(batch: dict, vae, text_encoder, tokenizer, vae_input_range: str) -> dict:
    """Images + prompts of a batch -> the float32 tensors training needs (cached or not)."""
    return {
        "target_moments": latent_dist(vae, batch["target"], vae_input_range).parameters.float(),
        "source_latent": encode_condition(vae, batch["source"], vae_input_range).float(),
        "text_embedding": encode_prompts(text_encoder, tokenizer, batch["prompt"]).float(),
    }


def target_posterior(moments: torch.Tensor) -> DiagonalGaussianDistribution:
    return DiagonalGaussianDistribution(moments)


def fingerprint(entries: list, settings: dict) -> str:
    blob = json.dumps({"entries": entries, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_settings(image_size: int, vae_input_range: str, base_model: str, dtype: str) -> dict:
    return {"image_size": int(image_size), "vae_input_range": vae_input_range,
            "base_model": str(base_model), "dtype": dtype}


def _shard_path(cache_dir: Path, k: int) -> Path:
    return cache_dir / f"shard_{k:05d}.safetensors"


def prepare_cache_dir(cache_dir: str | Path, num_items: int, shard_size: int, settings: dict,
                      entries_fingerprint: str, validation: Optional[dict] = None) -> Path:
    """Write meta.json, or check that an existing one describes the same data and settings.

    `validation` (how many annotation entries validation read and dropped) is kept in meta.json for a
    later run from the finished cache, which reads no annotations; it is not part of the comparison."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {"version": CACHE_VERSION, "num_items": int(num_items), "shard_size": int(shard_size),
            "settings": settings, "fingerprint": entries_fingerprint}
    meta_path = cache_dir / META_FILE
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: v for k, v in old.items() if k != "validation"} != meta:
            raise LatentCacheError(
                f"{cache_dir} holds a cache built from other data or settings ({old.get('settings')}, "
                f"{old.get('num_items')} items); delete it or choose another --latent_cache folder")
    else:
        if validation is not None:
            meta["validation"] = validation
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return cache_dir


def read_validation(cache_dir: str | Path) -> Optional[dict]:
    """{"total": entries read, "dropped": entries dropped} as recorded by the build, if it recorded them."""
    meta = read_meta(cache_dir)
    return meta.get("validation") if meta else None


def build_shards(dataset: Dataset, cache_dir: str | Path, vae, text_encoder, tokenizer, *, batch_size: int = 16,
                 num_workers: int = 0, rank: int = 0, world: int = 1, show_progress: bool = True,
                 skip_bad: bool = True, check_images: str = "header") -> list[int]:
    """Encode the missing shards k with k % world == rank (processes split the work); returns them.

    Pairs that failed to load (named by emopair.SkipBadItems) stop the build, or with `skip_bad` are warned
    about and their replacements cached."""
    from emoeditor.data.emopair import bad_pair_error, bad_pairs_in

    cache_dir = Path(cache_dir)
    meta = read_meta(cache_dir)
    shard_size, settings = meta["shard_size"], meta["settings"]
    dtype = CACHE_DTYPES[settings["dtype"]]
    num_shards = (len(dataset) + shard_size - 1) // shard_size
    todo = [k for k in range(rank, num_shards, world) if not _shard_path(cache_dir, k).exists()]
    bar = tqdm(total=sum(min(shard_size, len(dataset) - k * shard_size) for k in todo), desc="caching latents",
               unit="pair", disable=not show_progress)
    for k in todo:
        indices = list(range(k * shard_size, min((k + 1) * shard_size, len(dataset))))
        loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                            num_workers=num_workers, shuffle=False)
        parts: dict[str, list] = {key: [] for key in (*TENSOR_KEYS, "target_vec", "source_softmax", "index")}
        prompts: list[str] = []
        transitions: list[str] = []
        for batch in loader:
            bad = bad_pairs_in(batch)
            if bad and not skip_bad:
                raise bad_pair_error(bad, check_images)
            for problem in bad:
                logger.warning("skipped a pair that fails to load (--skip_bad): %s", problem)
            for key, value in encode_batch(batch, vae, text_encoder, tokenizer, settings["vae_input_range"]).items():
                parts[key].append(value.to(dtype).cpu())
            parts["target_vec"].append(batch["target_vec"].float())
            parts["source_softmax"].append(batch["source_softmax"].float())
            parts["index"].append(torch.as_tensor(batch["index"]).long())
            prompts += list(batch["prompt"])
            transitions += list(batch["transition"])
            bar.update(len(batch["prompt"]))
        tensors = {key: torch.cat(value).contiguous() for key, value in parts.items()}
        metadata = {"prompts": json.dumps(prompts), "transitions": json.dumps(transitions)}
        _write_shard(_shard_path(cache_dir, k), tensors, metadata, tag=str(rank))
    bar.close()
    return todo


def _write_shard(path: Path, tensors: dict, metadata: dict, tag: str) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), tag=tag)


def finalize_cache(cache_dir: str | Path) -> Path:
    """Mark the cache complete once every shard is there."""
    cache_dir = Path(cache_dir)
    meta = read_meta(cache_dir)
    num_shards = (meta["num_items"] + meta["shard_size"] - 1) // meta["shard_size"]
    missing = [k for k in range(num_shards) if not _shard_path(cache_dir, k).exists()]
    if missing:
        raise LatentCacheError(f"{cache_dir}: shards {missing[:5]} are missing; run the cache build again "
                               f"(it resumes)")
    atomic_write_text(cache_dir / COMPLETE_FILE, "ok\n")
    return cache_dir


def read_meta(cache_dir: str | Path) -> Optional[dict]:
    path = Path(cache_dir) / META_FILE
    return json.loads(path.read_text()) if path.exists() else None


def is_complete(cache_dir: str | Path, settings: Optional[dict] = None,
                entries_fingerprint: Optional[str] = None) -> bool:
    meta = read_meta(cache_dir)
    if meta is None or not (Path(cache_dir) / COMPLETE_FILE).exists():
        return False
    if settings is not None and meta["settings"] != settings:
        return False
    return entries_fingerprint is None or meta["fingerprint"] == entries_fingerprint


class LatentCacheDataset(Dataset):
    """Items like EmoPairDataset's, with the encoded tensors in place of the images."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        meta = read_meta(self.cache_dir)
        if meta is None or not (self.cache_dir / COMPLETE_FILE).exists():
            raise LatentCacheError(f"{self.cache_dir} is not a complete latent cache; build it with "
                                   f"scripts/cache_latents.py (it resumes where it stopped)")
        self.meta = meta
        self.shard_size = meta["shard_size"]
        self._handles: dict[int, object] = {}
        self._text: dict[int, tuple[list, list]] = {}

    def __len__(self) -> int:
        return self.meta["num_items"]

    def _shard(self, k: int):
        if k not in self._handles:  # opened lazily so each DataLoader worker gets its own handle
            handle = safe_open(str(_shard_path(self.cache_dir, k)), framework="pt")
            md = handle.metadata()
            self._handles[k] = handle
            self._text[k] = (json.loads(md["prompts"]), json.loads(md["transitions"]))
        return self._handles[k], self._text[k]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        handle, (prompts, transitions) = self._shard(i // self.shard_size)
        j = i % self.shard_size
        item = {key: handle.get_slice(key)[j:j + 1][0].float()
                for key in (*TENSOR_KEYS, "target_vec", "source_softmax")}
        item["index"] = int(handle.get_slice("index")[j:j + 1][0])
        item["prompt"] = prompts[j]
        item["transition"] = transitions[j]
        return item
