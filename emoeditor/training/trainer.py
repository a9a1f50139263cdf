"""Training EmoEditor (paper Sec. 3.2, official train.py), one readable loop on accelerate.

The UNet (from InstructPix2Pix) and the emotion encoder are trained; the VAE and the CLIP text
encoder stay frozen. Per step: the target latent is a posterior sample, the source latent the
posterior mode (the Ip2p condition), t ~ U{0..999} (or the official code's bound, see
`official_timestep_bound`), and

    L = MSE(eps, eps_theta(z_t, t, z_src, e)) + lambda * (1 - cos(e, c))

with e the emotion embedding and c the CLIP embedding of the pair's instruction (both 77xD,
flattened). Randomness is a pure function of (seed, step, rank, micro-batch): the data order is
a seeded permutation per epoch and the step's draws come from a generator seeded per step, so a
resumed run continues bit-exactly from the checkpoint's step.

`train` reads as its steps: `setup` (accelerator, models, data, optimizer, resume -> a `TrainRun`),
then per optimizer step `train_step` (which scripts/bench_train.py times too), `log_step`,
`save_preview`, `write_checkpoint`, and at the end `export`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from emoeditor.constants import (
    DEMO_DIR,
    EMOTION_INPUTS,
    IP2P_HUB_ID,
    LAMBDA_EMB,
    LATENT_SCALE,
    NOISE_START_RANGE,
    NUM_TRAIN_TIMESTEPS,
    OFFICIAL_DOWNLOADS,
    OFFICIAL_PREVIEW_EVERY,
    TEXT_SEQ_LEN,
)
from emoeditor.data import latent_cache as lc
from emoeditor.data.emopair import EmoPairDataset, SkipBadItems, bad_pair_error, bad_pairs_in, read_emopair
from emoeditor.data.latent_cache import LatentCacheDataset, encode_batch, target_posterior
from emoeditor.editing.loading import load_model
from emoeditor.editing.pipeline import EmoEditorPipeline
from emoeditor.emotions import emotion_input
from emoeditor.errors import TrainingError
from emoeditor.fileio import missing_path, sha256sum, unwritable, written_by_demo
from emoeditor.imageio import save_image
from emoeditor.models.components import BASE_SUBFOLDERS, load_base_components, looks_like_hub_id, sd_v1_ddim_scheduler
from emoeditor.models.emotion_encoder import EmotionEncoder
from emoeditor.models.latents import decode_latents, sample_latents
from emoeditor.seeding import mix_seed
from emoeditor.training import checkpoint as ckpt

logger = logging.getLogger(__name__)


MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
# diffusers' schedules that need nothing beyond warmup and total steps (piecewise_constant needs step rules).
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
NULL_EMBEDDINGS = ("learned", "zero")
# t ~ U{0..999} (paper), or below the T the official code's preview edit leaves in the scheduler.
TRAIN_TIMESTEPS = ("uniform", "official")
# What the UNet predicts: the noise (SD v1 and so Ip2p and the paper), or v (SD 2.x-style bases).
PREDICTION_TYPES = ("epsilon", "v_prediction")
SUMMARY_FILE = "training_summary.json"  # in the exported folder: steps, counts, where everything went
# Args that change the model itself: a resumed run must use the checkpoint's values.
MODEL_ARGS = ("emotion_input", "encoder_hidden", "null_embedding", "cond_dropout", "vae_input_range", "image_size",
              "prediction_type")


# -------------------------------------------------------------------------------------- the model
class EmoEditorDenoiser(nn.Module):
    """UNet + emotion encoder as one module, so DDP/accelerate see one set of trainable weights."""

    def __init__(self, unet, emotion_encoder):
        super().__init__()
        self.unet = unet
        self.emotion_encoder = emotion_encoder

    def forward(self, noisy_latents, timesteps, source_latent, emotion, drop_mask=None):
        """(eps prediction, emotion embedding e before any cond-dropout replacement)."""
        embedding = self.emotion_encoder(emotion)
        cond = embedding
        if drop_mask is not None:
            null = self.emotion_encoder.null(embedding.shape[0]).to(embedding.dtype)
            cond = torch.where(drop_mask[:, None, None], null, embedding)
        # In the UNet's dtype: fp32 under autocast, fp16 for the official pure-fp16 setup (bench).
        x = torch.cat([noisy_latents, source_latent.to(noisy_latents.dtype)], dim=1).to(self.unet.dtype)
        eps = self.unet(x, timesteps, encoder_hidden_states=cond.to(x.dtype)).sample
        return eps, embedding


class LossTerms(NamedTuple):
    loss: torch.Tensor
    l_noise: torch.Tensor
    l_emb: torch.Tensor


def compute_loss(model, noise_scheduler, target_moments: torch.Tensor, source_latent: torch.Tensor,
                 emotion: torch.Tensor, text_embedding: torch.Tensor, generator: torch.Generator,
                 lambda_emb: float = LAMBDA_EMB, cond_dropout: float = 0.0,
                 num_timesteps: Optional[int] = None, noise_offset: float = 0.0) -> LossTerms:
    """One micro-batch's loss. Draws, in order: posterior sample, noise, timesteps, dropout mask, offset.

    t ~ U{0 .. num_timesteps - 1}, by default all of the scheduler's training timesteps. `noise_offset` > 0
    adds a per-image, per-channel constant to the noise (diffusers' --noise_offset): the mean colour of
    a noisy latent then no longer reveals the target's, so global colour must come from the condition."""
    latents = sample_latents(target_posterior(target_moments.float()), generator)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    num_t = noise_scheduler.config.num_train_timesteps if num_timesteps is None else num_timesteps
    timesteps = torch.randint(0, num_t, (latents.shape[0],), generator=generator, device=latents.device)
    drop = None
    if cond_dropout > 0:
        drop = torch.rand(latents.shape[0], generator=generator, device=latents.device) < cond_dropout
    if noise_offset > 0:  # drawn last, so the other draws match a run without it
        noise = noise + noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator,
                                                   device=latents.device, dtype=latents.dtype)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    pred, embedding = model(noisy, timesteps, source_latent, emotion, drop)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    l_noise = F.mse_loss(pred.float(), target.float())
    cos = F.cosine_similarity(embedding.float().flatten(1), text_embedding.float().flatten(1), dim=1)
    l_emb = (1 - cos).mean()
    loss = l_noise + lambda_emb * l_emb if lambda_emb else l_noise  # lambda=0: no L_emb gradient at all
    return LossTerms(loss, l_noise, l_emb)


# ------------------------------------------------------------------------------------- randomness
def step_generator(seed: int, step: int, rank: int, micro: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(mix_seed(seed, 1, step, rank, micro))


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(mix_seed(seed, 0, epoch)))


def rank_micro_batches(perm: torch.Tensor, step_in_epoch: int, batch_size: int, world: int, rank: int,
                       accum: int) -> list[list[int]]:
    """This rank's `accum` micro-batches of one optimizer step: the global batch split (micro, rank)-major."""
    micro = batch_size // (world * accum)
    chunk = perm[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size].tolist()
    return [chunk[(a * world + rank) * micro:(a * world + rank + 1) * micro] for a in range(accum)]


# ---------------------------------------------------------------------------- training timesteps
def official_timestep_bound(step: int, preview_T: Callable[[int], int], every: int = OFFICIAL_PREVIEW_EVERY,
                            num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> int:
    """The exclusive bound of t at (0-based) iteration `step` of the official train.py.

    Its loop draws `t ~ U{0 .. scheduler.config.num_train_timesteps - 1}` and, after that draw, at
    iteration 0 and every `every` iterations runs a preview edit (ip2p.forward) on the same
    scheduler, which sets `scheduler.config.num_train_timesteps = T`, T ~ U{700..980}. diffusers'
    FrozenDict lets that attribute write through (`config["num_train_timesteps"]` stays 1000), so
    iteration 0 draws below 1000 and iterations w*every+1 .. (w+1)*every below the T of preview w.
    `preview_T(w)` gives that T.
    """
    if step == 0:
        return num_train_timesteps
    return preview_T((step - 1) // every)


def official_preview_T(seed: int, window: int) -> int:
    """Our draw of preview `window`'s T in [700, 980] (inclusive, as ip2p.forward): a pure function of
    (seed, window), so a resumed run draws the same T without storing it."""
    lo, hi = NOISE_START_RANGE
    generator = torch.Generator().manual_seed(mix_seed(seed, 3, window))
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))


def training_scheduler(scheduler, prediction_type: str):
    """The base's DDIM scheduler predicting `prediction_type`; exported with the model, so inference
    reads the prediction type from the model folder."""
    if scheduler.config.prediction_type == prediction_type:
        return scheduler
    return type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)


def timestep_bound(mode: str, step: int, seed: int, num_train_timesteps: int) -> int:
    """--train_timesteps: t ~ U{0 .. bound - 1} at optimizer step `step`."""
    if mode == "uniform":
        return num_train_timesteps
    if mode == "official":
        return official_timestep_bound(step, lambda window: official_preview_T(seed, window),
                                       every=OFFICIAL_PREVIEW_EVERY, num_train_timesteps=num_train_timesteps)
    raise TrainingError(f"--train_timesteps {mode!r}: choose one of {', '.join(TRAIN_TIMESTEPS)}")


# ------------------------------------------------------------------------------------------- data
def _cache_fingerprint(args) -> tuple[dict, Optional[str]]:

    settings = lc.cache_settings(args.image_size, args.vae_input_range, args.base_model, args.cache_dtype)
    json_path = Path(args.json_path)
    # The image root too: the same annotation file over other images must not reuse the cache.
    fp = (lc.fingerprint([sha256sum(json_path), str(Path(args.data_root).resolve()), args.subset,
                          bool(args.skip_bad)], settings)
          if json_path.exists() else None)
    return settings, fp


DEMO_NOTE = "; `make demo` writes it"


def _demo_hint(path) -> str:
    return DEMO_NOTE if written_by_demo(path) else ""


def _hub_unavailable(repo_id: str) -> bool:
    """The hub is switched off (HF_HUB_OFFLINE) and holds no cached copy of `repo_id`: loading must fail."""
    from huggingface_hub import constants, try_to_load_from_cache

    return bool(constants.HF_HUB_OFFLINE) and not isinstance(try_to_load_from_cache(repo_id, "unet/config.json"), str)


def _input_problems(args) -> list[str]:
    """One line per input the run reads that is not there, with how to get it."""

    problems = []
    base = str(args.base_model)
    local_copy = "model/instruct-pix2pix"
    if looks_like_hub_id(base):
        if _hub_unavailable(base):
            # "model/instruct-pix2pix" reads as a hub id too: a path if its first folder exists here
            path_meant = Path(base).parent.is_dir()
            repo, target = (IP2P_HUB_ID, base) if path_meant else (base, local_copy)
            problems.append(f"{missing_path(base, '--base_model')} as a local folder, and as a hub id it is "
                            f"not cached while the hub is offline (HF_HUB_OFFLINE); on a machine with network run "
                            f"`huggingface-cli download {repo} --local-dir {target}` and pass --base_model {target}")
    elif not Path(base).exists():
        problems.append(f"{missing_path(base, '--base_model')}" + (
            _demo_hint(base) or f"; pass a local InstructPix2Pix folder (`huggingface-cli download {IP2P_HUB_ID} "
                                f"--local-dir {local_copy}`) or the hub id {IP2P_HUB_ID} on a machine with network"))
    elif missing := [sub for sub in BASE_SUBFOLDERS if not (Path(base) / sub).is_dir()]:
        problems.append(f"--base_model {base} is not a diffusers InstructPix2Pix folder (missing "
                        f"{', '.join(missing)}/){_demo_hint(base)}")
    if args.init_model and not Path(args.init_model).exists():
        problems.append(f"{missing_path(args.init_model, '--init_model')}; pass an exported model "
                        f"folder (train.py's SAVE_MODEL_DIR/model) or the official release folder (model/)")
    if args.latent_cache and lc.is_complete(args.latent_cache):
        return problems  # the images are not read; a cache built with other settings is reported later
    if not Path(args.json_path).is_file():
        problems.append(f"{missing_path(args.json_path, '--json_path')}" + (
            _demo_hint(args.json_path) or f"; download data_EmoPair.json from {OFFICIAL_DOWNLOADS['annotations']} "
                                          f"(see json/README.md)"))
    if not Path(args.data_root).is_dir():
        problems.append(f"{missing_path(args.data_root, '--data_root')}" + (
            _demo_hint(args.data_root) or "; put the EmoPair images there (see EmoPair/README.md)"))
    return problems


def check_paths(args, outputs: dict) -> None:
    """Every input the run reads exists and every output folder (flag -> path) is writable, checked before
    any work and reported together, so one look tells a user everything to fix."""
    problems = _input_problems(args) + unwritable(outputs)
    if not problems:
        return
    footer = ""
    if any(p.endswith(DEMO_NOTE) for p in problems):
        footer = (f"\nRun `make demo` first, from the repository root: it writes the tiny base model, the toy "
                  f"EmoPair and its annotations under {DEMO_DIR}/, which the tiny presets read.")
    elif any(p.startswith(("--json_path", "--data_root")) for p in problems):
        footer = ("\nTo try training on toy data with a tiny model first (CPU, minutes): "
                  "make demo && python train.py --config configs/tiny.yaml")
    raise TrainingError("cannot start; nothing was done:\n  " + "\n  ".join(problems) + footer)


def output_folders(args, export_dir: Path) -> dict:
    """The folders a training run writes, by flag (the latent cache only while it is still to be built)."""

    outputs = {"--save_model_dir": args.save_model_dir, "--train_save_dir": args.train_save_dir}
    if args.export_dir:  # else SAVE_MODEL_DIR/model, checked with it
        outputs["--export_dir"] = export_dir
    if args.latent_cache and not lc.is_complete(args.latent_cache):
        outputs["--latent_cache"] = args.latent_cache
    return outputs


class TrainingData(NamedTuple):
    """What validation found, before any model is loaded: the entries (None when a complete latent cache
    is used as it is), how many entries it dropped (--skip_bad) and how many it read."""

    entries: Optional[list]
    dropped: int
    total: int


def validate_training_data(args, progress: bool = True) -> TrainingData:
    """The annotations and images checked (and bad entries dropped with --skip_bad), unless a complete
    --latent_cache for these settings makes the images unnecessary; then its record of the validation."""

    if args.latent_cache:
        settings, fp = _cache_fingerprint(args)
        if lc.is_complete(args.latent_cache, settings, fp):
            record = lc.read_validation(args.latent_cache) or {}
            return TrainingData(None, int(record.get("dropped", 0)), int(record.get("total", 0)))
        if fp is None:
            raise TrainingError(f"--latent_cache {args.latent_cache} is incomplete or was built with other "
                                f"settings, and {args.json_path} is missing to rebuild it; pass --json_path")
    data = read_emopair(args.json_path, args.data_root, args.subset, skip_bad=args.skip_bad,
                        check_images=args.check_images, progress=progress)
    return TrainingData(data.entries, len(data.dropped), data.total)


def ensure_latent_cache(args, frozen: dict, accelerator=None, data: Optional[TrainingData] = None) -> Path:
    """Build (or finish) the --latent_cache unless complete for these settings; processes split the shards."""

    main = accelerator is None or accelerator.is_main_process
    if data is None:
        data = validate_training_data(args, progress=main and not args.no_progress)
    if data.entries is None:  # complete already
        return Path(args.latent_cache)
    settings, fp = _cache_fingerprint(args)
    barrier = accelerator.wait_for_everyone if accelerator is not None else (lambda: None)
    dataset = SkipBadItems(EmoPairDataset(data.entries, args.data_root, args.image_size))
    if main:
        lc.prepare_cache_dir(args.latent_cache, len(dataset), args.cache_shard_size, settings, fp,
                             validation={"total": data.total, "dropped": data.dropped})
    barrier()
    lc.build_shards(dataset, args.latent_cache, frozen["vae"], frozen["text_encoder"], frozen["tokenizer"],
                    batch_size=args.cache_batch_size, num_workers=args.num_workers,
                    rank=accelerator.process_index if accelerator is not None else 0,
                    world=accelerator.num_processes if accelerator is not None else 1,
                    show_progress=main and not args.no_progress, skip_bad=args.skip_bad,
                    check_images=args.check_images)
    barrier()
    if main:
        lc.finalize_cache(args.latent_cache)
    barrier()
    return Path(args.latent_cache)


def build_dataset(args, accelerator, frozen: dict, data: Optional[TrainingData] = None):
    """EmoPairDataset (pairs that fail to load mid-run reported per batch), or the latent cache of it
    (built first, shards split over the processes)."""

    if data is None:
        data = validate_training_data(args, progress=accelerator.is_main_process and not args.no_progress)
    if args.latent_cache:
        ensure_latent_cache(args, frozen, accelerator, data)
        return LatentCacheDataset(args.latent_cache)
    return SkipBadItems(EmoPairDataset(data.entries, args.data_root, args.image_size))


def frozen_components(base: dict, device, weight_dtype: torch.dtype) -> dict:
    """The frozen VAE + CLIP text encoder on `device` (in the autocast dtype, as the diffusers examples)."""
    frozen = {name: base[name].requires_grad_(False).eval().to(device) for name in ("vae", "text_encoder")}
    if weight_dtype != torch.float32:
        frozen = {name: module.to(dtype=weight_dtype) for name, module in frozen.items()}
    frozen["tokenizer"] = base["tokenizer"]
    return frozen


def cache_latents(args) -> Path:
    """scripts/cache_latents.py: the cache `train.py --latent_cache` would build, built up front.
    Paths and annotations are checked before the VAE and text encoder are loaded."""

    if not args.latent_cache:
        raise TrainingError("--latent_cache DIR is required: the folder to write the cache to")
    check_paths(args, outputs={} if lc.is_complete(args.latent_cache) else {"--latent_cache": args.latent_cache})
    data = validate_training_data(args, progress=not args.no_progress)
    if data.entries is None:
        logger.info("--latent_cache %s is complete for these settings; nothing to do", args.latent_cache)
        return Path(args.latent_cache)
    use_cuda = torch.cuda.is_available() and not args.cpu
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(_mixed_precision(args), torch.float32)
    frozen = frozen_components(load_base_components(args.base_model), "cuda" if use_cuda else "cpu", dtype)
    return ensure_latent_cache(args, frozen, data=data)


def to_model_inputs(batch: dict, frozen: dict, args, device) -> dict:
    """A DataLoader batch (images or cached tensors) -> the float32 tensors compute_loss needs."""

    if "target_moments" not in batch:
        batch = {**batch, **encode_batch({"source": batch["source"].to(device), "target": batch["target"].to(device),
                                          "prompt": batch["prompt"]},
                                         frozen["vae"], frozen["text_encoder"], frozen["tokenizer"],
                                         args.vae_input_range)}
    target_vec = batch["target_vec"].to(device).float()
    source_softmax = batch["source_softmax"].to(device).float()
    return {
        "target_moments": batch["target_moments"].to(device).float(),
        "source_latent": batch["source_latent"].to(device).float(),
        "text_embedding": batch["text_embedding"].to(device).float(),
        "emotion": emotion_input(target_vec, source_softmax, args.emotion_input),
    }


# ---------------------------------------------------------------------------------------- previews
@torch.no_grad()
def preview_strip(model, vae, batch: dict, inputs: dict, args, seed: int) -> torch.Tensor:
    """(3, S, 3S) source | edit | target for the first pair of a batch, as the official strips.

    The edit is one EmoEditorPipeline call (the inference edit, no iterative critic) with the
    weights being trained; from cached latents the source and target shown are VAE reconstructions.
    """

    device = inputs["source_latent"].device
    if "source" in batch:
        source, target = batch["source"][:1].float().to(device), batch["target"][:1].float().to(device)
    else:
        size = (args.image_size, args.image_size)
        source = F.interpolate(decode_latents(vae, inputs["source_latent"][:1] * LATENT_SCALE), size=size)
        target = F.interpolate(decode_latents(vae, target_posterior(inputs["target_moments"][:1]).mode()
                                              * LATENT_SCALE), size=size)
    pipe = EmoEditorPipeline(unet=model.unet, vae=vae,
                             scheduler=training_scheduler(sd_v1_ddim_scheduler(), args.prediction_type),
                             emotion_encoder=model.emotion_encoder, emotion_input=args.emotion_input,
                             vae_input_range=args.vae_input_range, lambda_emb=args.lambda_emb,
                             cond_dropout=args.cond_dropout)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device=device).manual_seed(mix_seed(seed, 2))
    edit = pipe(source, inputs["emotion"][:1], generator=generator,
                num_inference_steps=args.preview_steps).images.float()
    return torch.cat([source.clamp(0, 1), edit.to(device), target.clamp(0, 1)], dim=3)[0].cpu()


# ------------------------------------------------------------------------------------------ export
def weights_digest(state_dict: dict) -> str:
    """sha256 of the weights' bytes: ranks of a multi-process run must end with the same one."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_ranks_agree(accelerator, digest: str) -> list[str]:
    words = torch.tensor([int(digest[i:i + 8], 16) for i in range(0, 64, 8)], dtype=torch.int64,
                         device=accelerator.device)
    gathered = accelerator.gather(words.unsqueeze(0)).cpu()
    digests = ["".join(f"{int(w):08x}" for w in row) for row in gathered]
    if any(d != digests[0] for d in digests):
        raise TrainingError(f"processes ended with different weights ({digests}); a distributed setup "
                            f"problem (not all ranks saw the same gradients)")
    return digests


def check_export_dir(export_dir: Path) -> None:
    """Refuse, before training, to replace a folder that is not an earlier export (e.g. official .pt files)."""
    from diffusers import DiffusionPipeline

    marker = DiffusionPipeline.config_name  # model_index.json: an earlier export, which may be replaced
    if export_dir.is_dir() and any(export_dir.iterdir()) and not (export_dir / marker).exists():
        raise TrainingError(f"--export_dir {export_dir} holds other files and is not an earlier export "
                            f"(no {marker}); the export replaces the whole folder, so choose another one")


def export_pipeline(model: EmoEditorDenoiser, args, export_dir: Path, summary: Optional[dict] = None) -> Path:
    """The trained UNet + encoder with the frozen base parts, in the diffusers layout test.py loads.

    Written to a temporary sibling and renamed into place, so test.py never loads a half-written
    export; training_summary.json (`summary`) goes in with it."""

    base = load_base_components(args.base_model)  # frozen parts reloaded so they are saved in full precision
    pipe = EmoEditorPipeline(
        unet=model.unet, vae=base["vae"], scheduler=training_scheduler(base["scheduler"], args.prediction_type),
        emotion_encoder=model.emotion_encoder,
        text_encoder=base["text_encoder"], tokenizer=base["tokenizer"], emotion_input=args.emotion_input,
        vae_input_range=args.vae_input_range, lambda_emb=args.lambda_emb, cond_dropout=args.cond_dropout)
    check_export_dir(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = export_dir.with_name(f".{export_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    (tmp / "training_args.json").write_text(json.dumps(ckpt.plain(vars(args)), indent=2, sort_keys=True))
    if summary is not None:
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return ckpt.replace_dir(tmp, export_dir)


# -------------------------------------------------------------------------------------------- setup
def initial_weights(args, base: dict, embed_dim: int):
    """(UNet, emotion encoder) to train: Ip2p's UNet + a fresh encoder, or those of --init_model."""

    learned_null = args.cond_dropout > 0 and args.null_embedding == "learned"
    if not args.init_model:
        encoder = EmotionEncoder(hidden_dims=tuple(args.encoder_hidden), seq_len=TEXT_SEQ_LEN,
                                 embed_dim=embed_dim, learned_null=learned_null)
        return base["unet"], encoder

    init = load_model(args.init_model, args.base_model)
    predicts = init.scheduler.config.prediction_type
    if predicts != args.prediction_type:
        raise TrainingError(f"--init_model {args.init_model} was trained to predict {predicts}; pass "
                            f"--prediction_type {predicts} to fine-tune it")
    loaded = init.emotion_encoder
    config = {**dict(loaded.config), "learned_null": learned_null}
    encoder = EmotionEncoder(**{k: config[k] for k in ("num_emotions", "hidden_dims", "seq_len", "embed_dim",
                                                       "learned_null")})
    if config["embed_dim"] != embed_dim:
        raise TrainingError(f"--init_model {args.init_model}: its emotion encoder outputs {config['embed_dim']}-d "
                            f"embeddings but the text encoder of --base_model is {embed_dim}-d")
    state = {k: v for k, v in loaded.state_dict().items() if k != "null_embedding" or learned_null}
    result = encoder.load_state_dict(state, strict=False)  # a null embedding absent from the init starts at zero
    if result.unexpected_keys or set(result.missing_keys) - {"null_embedding"}:
        raise TrainingError(f"--init_model {args.init_model}: emotion encoder keys do not match "
                            f"(missing {result.missing_keys}, unexpected {result.unexpected_keys})")
    args.encoder_hidden = list(config["hidden_dims"])  # recorded in checkpoints as what was trained
    return init.unet.float(), encoder.float()


def _check_args(args, world: int) -> int:
    if args.emotion_input not in EMOTION_INPUTS:
        raise TrainingError(f"--emotion_input {args.emotion_input!r}: choose one of {', '.join(EMOTION_INPUTS)}")
    if not 0.0 <= args.cond_dropout < 1.0:
        raise TrainingError(f"--cond_dropout {args.cond_dropout} must be in [0, 1)")
    if args.lambda_emb < 0:
        raise TrainingError(f"--lambda_emb {args.lambda_emb} must be >= 0")
    if args.prediction_type not in PREDICTION_TYPES:
        raise TrainingError(f"--prediction_type {args.prediction_type!r}: choose one of {', '.join(PREDICTION_TYPES)}")
    if args.noise_offset < 0:
        raise TrainingError(f"--noise_offset {args.noise_offset} must be >= 0 (0: the paper's plain noise)")
    if args.train_timesteps not in TRAIN_TIMESTEPS:
        raise TrainingError(f"--train_timesteps {args.train_timesteps!r}: choose one of {', '.join(TRAIN_TIMESTEPS)}")
    if not 0.0 <= args.ema_decay < 1.0:
        raise TrainingError(f"--ema_decay {args.ema_decay} must be in [0, 1) (0 = no EMA)")
    for flag in ("gradient_accumulation_steps", "image_size", "max_nonfinite"):
        if getattr(args, flag) < 1:
            raise TrainingError(f"--{flag} {getattr(args, flag)} must be >= 1")
    per = world * args.gradient_accumulation_steps
    if args.batch_size < per or args.batch_size % per:
        raise TrainingError(f"--batch_size {args.batch_size} must be a multiple of processes ({world}) x "
                            f"--gradient_accumulation_steps ({args.gradient_accumulation_steps})")
    return args.batch_size // per


def _mixed_precision(args) -> str:
    if args.mixed_precision != "auto":
        return args.mixed_precision
    if not args.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _optimizer(args, params):
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_eps,
                  weight_decay=args.weight_decay)
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise TrainingError("--use_8bit_adam needs bitsandbytes: pip install 'emoeditor[bnb]'") from None
        return bnb.optim.Adam8bit(params, **kwargs)
    if args.adam_fused:
        kwargs["fused"] = True
    return torch.optim.Adam(params, **kwargs)


@dataclass
class StepParts:
    """What one optimizer step (`train_step`) uses: `setup` builds it from the flags, scripts/bench_train.py its own.

    `accelerator` is an accelerate.Accelerator, or any object with its `device`, `process_index`,
    `mixed_precision`, `no_sync`, `backward`, `clip_grad_norm_` and `gather`."""

    model: nn.Module  # called as EmoEditorDenoiser is; as prepared (DDP, compiled, autocast)
    optimizer: Any
    noise_scheduler: Any  # add_noise and config.num_train_timesteps
    accelerator: Any
    seed: int = 0  # --random_seed: every step's draws
    accum: int = 1  # --gradient_accumulation_steps: micro-batches per step on each process
    lambda_emb: float = LAMBDA_EMB
    cond_dropout: float = 0.0
    noise_offset: float = 0.0
    max_grad_norm: Optional[float] = None  # None: no clipping (the norm still feeds the non-finite check)
    train_timesteps: str = "uniform"  # TRAIN_TIMESTEPS
    lr_scheduler: Any = None
    ema: Any = None  # a diffusers EMAModel following ema_model's parameters
    ema_model: Optional[nn.Module] = None


@dataclass
class TrainRun:
    """A training run between two steps: what `setup` builds and the loop in `train` advances."""

    args: argparse.Namespace
    accelerator: Any
    parts: StepParts
    raw_model: EmoEditorDenoiser  # unwrapped from DDP/compile: checkpoints, previews, export
    frozen: dict  # the frozen VAE + text encoder + tokenizer
    dataset: Any
    steps_per_epoch: int
    total_steps: int
    export_dir: Path
    step: int = 0  # optimizer steps done
    nonfinite_total: int = 0
    nonfinite_run: int = 0  # skipped steps in a row
    bad_pairs: int = 0  # pairs --skip_bad replaced on this process (rank 0 carries the total of earlier runs)
    last_saved: int = -1
    writer: Any = None  # TensorBoard, rank 0 only
    bar: Any = None
    last_batch: Optional[dict] = None  # the last micro-batch read and its model inputs, for the preview strip
    last_inputs: Optional[dict] = None
    t_last: float = 0.0  # samples/s since the last log
    samples_since: int = 0
    resumed_from: Optional[int] = None  # the checkpoint's step when resumed
    data: Optional[TrainingData] = None  # what validation found, for the summary


def _load_resume(args) -> tuple[Optional[dict], Optional[dict]]:
    """--resume's (weights, state), or (None, None); refused if the checkpoint's model settings differ."""
    resume = args.resume
    if resume == "auto":  # a job that may be preempted: resume if there is anything to resume
        resume = "latest" if ckpt.list_checkpoints(ckpt.checkpoint_root(args.save_model_dir)) else None
    if not resume:
        return None, None
    resume_path = ckpt.resolve_checkpoint(resume, args.save_model_dir)
    weights, state = ckpt.load_checkpoint(resume_path)
    state["path"] = str(resume_path.resolve())
    saved = {"prediction_type": "epsilon", **state["args"]}  # checkpoints from before --prediction_type
    changed = {k: (saved.get(k), ckpt.plain(getattr(args, k))) for k in MODEL_ARGS
               if saved.get(k) != ckpt.plain(getattr(args, k))}
    if changed:
        raise TrainingError(f"--resume {resume_path}: the checkpoint was trained with different model "
                            f"settings {changed} (checkpoint, now); use the checkpoint's values")
    return weights, state


def _restore(state: dict, args, steps_per_epoch: int, num_items: int, optimizer, lr_scheduler, ema) -> None:
    """Optimizer, LR schedule and EMA from a checkpoint, after checking the data position still holds.

    No global RNG state is restored: every draw of a step comes from its own seeded generator. Checkpoints
    written before this was dropped still carry an "rng" entry, which is ignored."""
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if ema is not None:
        if "ema" not in state:
            raise TrainingError(f"--resume: the checkpoint has no EMA state but --ema_decay is {args.ema_decay}")
        ema.load_state_dict(state["ema"])
    if state["steps_per_epoch"] != steps_per_epoch or state["num_items"] != num_items:
        raise TrainingError(
            f"--resume: the data changed ({state['num_items']} pairs / {state['steps_per_epoch']} "
            f"steps per epoch at save time, now {num_items} / {steps_per_epoch}); the data position "
            f"cannot be restored. Use the same --json_path/--subset/--skip_bad/--batch_size")
    saved_seed = state["args"].get("random_seed")
    if saved_seed != args.random_seed:  # the seed fixes every epoch's data order
        raise TrainingError(f"--resume: the checkpoint was trained with --random_seed {saved_seed}, "
                            f"now {args.random_seed}; the data position cannot be restored. Use the checkpoint's seed")


def setup(args: argparse.Namespace) -> TrainRun:
    """Accelerator, models, data, optimizer, LR schedule and EMA (restored on --resume): a run ready to step."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    # 1. Checks before any work (flags, inputs, output folders, the resume checkpoint, the annotations),
    # so a mistake costs seconds, not a model load or the hours up to the first checkpoint.
    accelerator = Accelerator(mixed_precision=_mixed_precision(args), cpu=args.cpu,
                              dynamo_backend="inductor" if args.compile else None,
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=args.ddp_timeout))])
    device, world = accelerator.device, accelerator.num_processes
    micro_size = _check_args(args, world)
    export_dir = Path(args.export_dir) if args.export_dir else Path(args.save_model_dir) / "model"
    check_export_dir(export_dir)
    check_paths(args, output_folders(args, export_dir))
    resume_weights, resume_state = _load_resume(args)
    data = validate_training_data(args, progress=accelerator.is_main_process and not args.no_progress)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_seed(args.random_seed)  # initial weights of the emotion encoder; step randomness is seeded per step

    # 2. Models: trainable UNet + emotion encoder (fp32 master weights), frozen VAE + text encoder.
    base = load_base_components(args.base_model)
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    frozen = frozen_components(base, device, weight_dtype)
    noise_scheduler = base["scheduler"] = training_scheduler(base["scheduler"], args.prediction_type)
    if args.train_timesteps == "official" and NOISE_START_RANGE[1] >= noise_scheduler.config.num_train_timesteps:
        raise TrainingError(f"--train_timesteps official draws T up to {NOISE_START_RANGE[1]}, but the scheduler of "
                            f"--base_model has {noise_scheduler.config.num_train_timesteps} training timesteps")
    unet, encoder = initial_weights(args, base, frozen["text_encoder"].config.hidden_size)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    model = EmoEditorDenoiser(unet, encoder).train()

    # 3. Data (images, or the latent cache, built first if needed).
    dataset = build_dataset(args, accelerator, frozen, data)
    steps_per_epoch = len(dataset) // args.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"{len(dataset)} training pairs are fewer than --batch_size {args.batch_size}")
    total_steps = args.max_steps if args.max_steps is not None else args.max_epoch * steps_per_epoch

    # 4. Optimizer, LR schedule, EMA; restore them on resume.
    optimizer = _optimizer(args, model.parameters())
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
                                 num_training_steps=total_steps)
    ema = None
    if args.ema_decay > 0:
        from diffusers.training_utils import EMAModel
        ema = EMAModel(model.parameters(), decay=args.ema_decay)
    step = nonfinite_total = bad_pairs = 0
    if resume_state is not None:
        model.load_state_dict(resume_weights)
        _restore(resume_state, args, steps_per_epoch, len(dataset), optimizer, lr_scheduler, ema)
        step = int(resume_state["step"])
        nonfinite_total = int(resume_state.get("nonfinite_total", 0))
        bad_pairs = int(resume_state.get("bad_pairs_skipped", 0)) if accelerator.is_main_process else 0
        if accelerator.is_main_process:
            logger.info("resumed from step %d (%s); %d of %d steps to go", step, resume_state["path"],
                        max(total_steps - step, 0), total_steps)
    if ema is not None:
        ema.to(device)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)
    parts = StepParts(model=model, optimizer=optimizer, noise_scheduler=noise_scheduler, accelerator=accelerator,
                      seed=args.random_seed, accum=args.gradient_accumulation_steps, lambda_emb=args.lambda_emb,
                      cond_dropout=args.cond_dropout, noise_offset=args.noise_offset,
                      max_grad_norm=args.max_grad_norm,
                      train_timesteps=args.train_timesteps, lr_scheduler=lr_scheduler, ema=ema, ema_model=raw_model)

    # 5. Logging (rank 0 only).
    writer = None
    if accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(Path(args.train_save_dir) / "tensorboard"))
        logger.info("training %d steps (%d per epoch, %d pairs), %d process(es) x %d accumulation x %d per "
                    "micro-batch, mixed precision %s", total_steps, steps_per_epoch, len(dataset), world,
                    args.gradient_accumulation_steps, micro_size, accelerator.mixed_precision)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step",
               disable=not accelerator.is_main_process or args.no_progress)
    return TrainRun(args=args, accelerator=accelerator, parts=parts, raw_model=raw_model, frozen=frozen,
                    dataset=dataset, steps_per_epoch=steps_per_epoch, total_steps=total_steps, export_dir=export_dir,
                    step=step, nonfinite_total=nonfinite_total, bad_pairs=bad_pairs,
                    last_saved=step if resume_state is not None else -1, writer=writer, bar=bar,
                    t_last=time.perf_counter(), resumed_from=step if resume_state is not None else None,
                    data=data)


# --------------------------------------------------------------------------------------- one step
class StepResult(NamedTuple):
    losses: torch.Tensor  # (3,): loss, l_noise, l_emb, each the mean over this process's micro-batches
    grad_norm: torch.Tensor  # before clipping
    updated: bool  # False: a loss or gradient was non-finite on some process and the update was skipped


def train_step(parts: StepParts, micro_batches: Iterable[dict], step: int) -> StepResult:
    """One optimizer step: `parts.accum` micro-batches forward + backward, gradient clipping, then the
    optimizer, LR schedule and EMA update, skipped on every process if any loss or gradient is not finite.

    `micro_batches` yields compute_loss's inputs (target_moments, source_latent, emotion, text_embedding)
    one micro-batch at a time, so reading and encoding the data is part of the step. `step` (0-based)
    seeds the step's draws and sets the timestep bound (--train_timesteps).
    """
    accelerator = parts.accelerator
    device, rank = accelerator.device, accelerator.process_index
    num_t = timestep_bound(parts.train_timesteps, step, parts.seed, parts.noise_scheduler.config.num_train_timesteps)
    sums = torch.zeros(3, device=device)
    finite, done = True, 0
    for a, inputs in zip(range(parts.accum), micro_batches):
        sync = accelerator.no_sync(parts.model) if a < parts.accum - 1 else nullcontext()
        with sync:  # gradients are all-reduced on the last micro-batch only
            terms = compute_loss(parts.model, parts.noise_scheduler, inputs["target_moments"], inputs["source_latent"],
                                 inputs["emotion"], inputs["text_embedding"],
                                 step_generator(parts.seed, step, rank, a, device), parts.lambda_emb,
                                 parts.cond_dropout, num_timesteps=num_t, noise_offset=parts.noise_offset)
            accelerator.backward(terms.loss / parts.accum)
        finite = finite and bool(torch.isfinite(terms.loss))
        sums += torch.stack([t.detach().float() for t in terms]) / parts.accum
        done += 1
    if done != parts.accum:
        raise TrainingError(f"step {step}: {done} micro-batches for {parts.accum} accumulation steps")
    params = [p for p in parts.model.parameters() if p.requires_grad]
    grad_norm = accelerator.clip_grad_norm_(params, parts.max_grad_norm or math.inf)
    flag = torch.tensor([float(finite and bool(torch.isfinite(grad_norm)))], device=device)
    updated = bool(accelerator.gather(flag).min() > 0)
    if updated or accelerator.mixed_precision == "fp16":
        parts.optimizer.step()  # under fp16 the grad scaler skips inf steps itself and lowers its scale
        updated = not getattr(parts.optimizer, "step_was_skipped", False)
    if updated:
        if parts.lr_scheduler is not None:
            parts.lr_scheduler.step()
        if parts.ema is not None:
            parts.ema.step(parts.ema_model.parameters())
    parts.optimizer.zero_grad(set_to_none=True)  # a skipped step's data is consumed all the same
    return StepResult(sums, grad_norm, updated)


# ------------------------------------------------------------------------------------------- loop
def _micro_batches(run: TrainRun, batches: Iterator[dict]) -> Iterator[dict]:
    """The step's micro-batches from the DataLoader as model inputs. A pair that failed to load stops the
    run naming it, or with --skip_bad is named in a warning and counted."""
    for _ in range(run.parts.accum):
        batch = next(batches)
        bad = bad_pairs_in(batch)
        if bad and not run.args.skip_bad:
            raise bad_pair_error(bad, run.args.check_images)
        for problem in bad:
            logger.warning("skipped a pair that fails to load (--skip_bad): %s", problem)
        if "skipped" in batch:
            run.bad_pairs += int(batch["skipped"].sum())
        inputs = to_model_inputs(batch, run.frozen, run.args, run.accelerator.device)
        run.last_batch, run.last_inputs = batch, inputs
        yield inputs


def _count_update(run: TrainRun, updated: bool) -> None:
    """Non-finite bookkeeping after a step; --max_nonfinite skipped steps in a row stop the run."""
    if updated:
        run.nonfinite_run = 0
        return
    run.nonfinite_run += 1
    run.nonfinite_total += 1
    logger.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", run.step, run.nonfinite_run)
    if run.nonfinite_run >= run.args.max_nonfinite:
        raise TrainingError(
            f"{run.nonfinite_run} non-finite losses in a row (last at step {run.step}); stopping. Lower "
            f"--learning_rate, set --max_grad_norm, use --mixed_precision bf16 or no, or resume from "
            f"an earlier checkpoint in {ckpt.checkpoint_root(run.args.save_model_dir)}")


def bad_pairs_total(run: TrainRun) -> int:
    """Pairs --skip_bad replaced, over all processes (a collective: every process calls it)."""
    device = run.accelerator.device
    return int(run.accelerator.reduce(torch.tensor([run.bad_pairs], device=device), reduction="sum")[0])


def log_step(run: TrainRun, result: StepResult) -> None:
    """Every --log_every steps: the losses averaged over processes, LR, grad norm, samples/s (TensorBoard, tqdm)."""
    args = run.args
    if not (args.log_every and run.step % args.log_every == 0):
        return
    mean = run.accelerator.reduce(result.losses, reduction="mean")
    skipped = bad_pairs_total(run) if args.skip_bad else 0
    now = time.perf_counter()
    if run.writer is not None:
        scalars = {"loss": mean[0], "l_noise": mean[1], "l_emb": mean[2],
                   "lr": run.parts.lr_scheduler.get_last_lr()[0], "grad_norm": result.grad_norm,
                   "samples_per_s": run.samples_since / max(now - run.t_last, 1e-9),
                   "nonfinite_total": run.nonfinite_total, "bad_pairs_skipped": skipped}
        for name, value in scalars.items():
            run.writer.add_scalar(f"train/{name}", float(value), run.step)
        run.bar.set_postfix(loss=f"{float(mean[0]):.4f}", l_noise=f"{float(mean[1]):.4f}",
                            l_emb=f"{float(mean[2]):.4f}")
    run.t_last, run.samples_since = now, 0


def save_preview(run: TrainRun, epoch: int) -> None:
    """Rank 0: the image strip (source | edit | target) of the step's last micro-batch, to disk and TensorBoard."""

    run.raw_model.eval()
    strip = preview_strip(run.raw_model, run.frozen["vae"], run.last_batch, run.last_inputs, run.args,
                          run.args.random_seed)
    run.raw_model.train()
    name = f"epoch{epoch:03d}_iter{run.step}_{run.last_batch['transition'][0]}.png".replace(" ", "_")
    save_image(strip, Path(run.args.train_save_dir) / "images" / name)
    run.writer.add_image("train/source_edit_target", strip, run.step)


def write_checkpoint(run: TrainRun) -> None:
    """The run at its current step (weights, optimizer, schedule, EMA, data position, flags), atomically."""
    skipped = bad_pairs_total(run)
    if run.accelerator.is_main_process:
        parts = run.parts
        state = {"optimizer": parts.optimizer.state_dict(), "lr_scheduler": parts.lr_scheduler.state_dict(),
                 "step": run.step, "epoch": run.step // run.steps_per_epoch,
                 "batch_in_epoch": run.step % run.steps_per_epoch, "steps_per_epoch": run.steps_per_epoch,
                 "num_items": len(run.dataset), "nonfinite_total": run.nonfinite_total, "bad_pairs_skipped": skipped}
        if parts.ema is not None:
            state["ema"] = parts.ema.state_dict()
        ckpt.save_checkpoint(ckpt.checkpoint_root(run.args.save_model_dir), run.step, run.raw_model.state_dict(),
                             state, vars(run.args), keep_last=run.args.keep_last or None)
    run.accelerator.wait_for_everyone()
    run.last_saved = run.step


def export(run: TrainRun) -> Path:
    """The final checkpoint, then the exported pipeline folder (EMA weights if EMA is on)."""
    accelerator = run.accelerator
    run.bar.close()
    if run.last_saved != run.step:
        write_checkpoint(run)
    digests = _check_ranks_agree(accelerator, weights_digest(run.raw_model.state_dict()))
    skipped = bad_pairs_total(run)
    if accelerator.is_main_process:
        ema = run.parts.ema
        if ema is not None:
            ema.copy_to(run.raw_model.parameters())
        data = run.data or TrainingData(None, 0, 0)
        summary = {"steps": run.step, "resumed_from_step": run.resumed_from, "nonfinite_total": run.nonfinite_total,
                   "bad_pairs_skipped": skipped, "entries_validated": data.total,
                   "invalid_entries_dropped": data.dropped, "training_pairs": len(run.dataset),
                   "num_processes": accelerator.num_processes, "rank_weight_digests": digests, "ema": ema is not None,
                   "export_dir": str(run.export_dir.resolve()),
                   "checkpoint": str(ckpt.resolve_checkpoint("latest", run.args.save_model_dir).resolve()),
                   "train_save_dir": str(Path(run.args.train_save_dir).resolve())}
        export_pipeline(run.raw_model, run.args, run.export_dir, summary)
        run.writer.close()
        logger.info("exported %s (%d non-finite steps skipped, %d bad pairs replaced)", run.export_dir,
                    run.nonfinite_total, skipped)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run.export_dir


def summary_text(summary: dict) -> str:
    """The lines train.py ends with: what the run did and where everything is, with full paths."""
    resumed = summary.get("resumed_from_step")
    model = summary["export_dir"]
    return "\n".join([
        f"training done: {summary['steps']} steps" + (f" (resumed from step {resumed})" if resumed is not None
                                                      else ""),
        f"  exported model:   {model}",
        f"  run summary:      {Path(model) / SUMMARY_FILE}",
        f"  last checkpoint:  {summary['checkpoint']}",
        f"  logs and strips:  {summary['train_save_dir']} (tensorboard --logdir "
        f"{Path(summary['train_save_dir']) / 'tensorboard'})",
        f"  data: {summary['training_pairs']} pairs; {summary['invalid_entries_dropped']} of "
        f"{summary['entries_validated']} entries dropped by validation, {summary['bad_pairs_skipped']} pairs "
        f"skipped mid-run, {summary['nonfinite_total']} steps skipped for a non-finite loss",
    ])


def train(args: argparse.Namespace) -> Optional[Path]:
    """Train, checkpoint, export. Returns the exported pipeline folder (None after --stop_at_step)."""
    from torch.utils.data import DataLoader

    run = setup(args)
    accelerator = run.accelerator
    world, rank, accum = accelerator.num_processes, accelerator.process_index, args.gradient_accumulation_steps
    # One optimizer step = `accum` micro-batches on each of `world` processes; each epoch's order is seeded.
    while run.step < run.total_steps:
        epoch, first = divmod(run.step, run.steps_per_epoch)
        perm = epoch_permutation(len(run.dataset), args.random_seed, epoch)
        last = min(run.steps_per_epoch, first + run.total_steps - run.step)
        sampler = [mb for s in range(first, last)
                   for mb in rank_micro_batches(perm, s, args.batch_size, world, rank, accum)]
        loader = DataLoader(run.dataset, batch_sampler=sampler, num_workers=args.num_workers,
                            pin_memory=accelerator.device.type == "cuda")
        batches = iter(loader)
        for _ in range(first, last):
            result = train_step(run.parts, _micro_batches(run, batches), run.step)
            _count_update(run, result.updated)
            run.step += 1
            run.samples_since += args.batch_size
            run.bar.update(1)
            log_step(run, result)
            if args.image_every and run.step % args.image_every == 0 and accelerator.is_main_process:
                save_preview(run, epoch)
            if args.checkpoint_every and run.step % args.checkpoint_every == 0:
                write_checkpoint(run)
            if args.stop_at_step is not None and run.step >= args.stop_at_step:
                if run.last_saved != run.step:
                    write_checkpoint(run)
                run.bar.close()
                if run.writer is not None:
                    run.writer.close()
                return None
    return export(run)
