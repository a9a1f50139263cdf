"""Training EmoEditor (paper Sec. 3.2, official train.py), one readable loop on accelerate.

The UNet (from InstructPix2Pix) and the emotion encoder are trained; the VAE and the CLIP text
encoder stay frozen. Per step: the target latent is a posterior sample, the source latent the
posterior mode (the Ip2p condition), t ~ U{0..999}, and

    L = MSE(eps, eps_theta(z_t, t, z_src, e)) + lambda * (1 - cos(e, c))

with e the emotion embedding and c the CLIP embedding of the pair's instruction (both 77xD,
flattened). Randomness is a pure function of (seed, step, rank, micro-batch): the data order is
a seeded permutation per epoch and the step's draws come from a generator seeded per step, so a
resumed run continues bit-exactly from the checkpoint's step.
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
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from emoeditor.training import checkpoint as ckpt
from emoeditor.constants import (EMOTION_INPUTS,
                        LAMBDA_EMB, LATENT_SCALE, TEXT_SEQ_LEN)
from emoeditor.emotions import emotion_input
from emoeditor.errors import TrainingError
from emoeditor.data.latent_cache import target_posterior
from emoeditor.models.latents import sample_latents

logger = logging.getLogger(__name__)


MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
# diffusers' schedules that need nothing beyond warmup and total steps (piecewise_constant needs step rules).
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
NULL_EMBEDDINGS = ("learned", "zero")
# Args that change the model itself: a resumed run must use the checkpoint's values.
MODEL_ARGS = ("emotion_input", "encoder_hidden", "null_embedding", "cond_dropout", "vae_input_range", "image_size")


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
                 lambda_emb: float = LAMBDA_EMB, cond_dropout: float = 0.0) -> LossTerms:
    """One micro-batch's loss. Draws, in order: posterior sample, noise, timesteps, dropout mask."""
    latents = sample_latents(target_posterior(target_moments.float()), generator)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    num_t = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_t, (latents.shape[0],), generator=generator, device=latents.device)
    drop = None
    if cond_dropout > 0:
        drop = torch.rand(latents.shape[0], generator=generator, device=latents.device) < cond_dropout
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    eps_pred, embedding = model(noisy, timesteps, source_latent, emotion, drop)
    l_noise = F.mse_loss(eps_pred.float(), noise.float())
    cos = F.cosine_similarity(embedding.float().flatten(1), text_embedding.float().flatten(1), dim=1)
    l_emb = (1 - cos).mean()
    loss = l_noise + lambda_emb * l_emb if lambda_emb else l_noise  # lambda=0: no L_emb gradient at all
    return LossTerms(loss, l_noise, l_emb)


# ------------------------------------------------------------------------------------- randomness
def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, so (seed, step, rank, micro) never collide like seed + step would."""
    digest = hashlib.sha256("/".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


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


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------- data
def _cache_fingerprint(args) -> tuple[dict, Optional[str]]:
    from emoeditor.data import latent_cache as lc
    from emoeditor.fileio import sha256sum

    settings = lc.cache_settings(args.image_size, args.vae_input_range, args.base_model, args.cache_dtype)
    json_path = Path(args.json_path)
    # The image root too: the same annotation file over other images must not reuse the cache.
    fp = (lc.fingerprint([sha256sum(json_path), str(Path(args.data_root).resolve()), args.subset,
                          bool(args.skip_bad)], settings)
          if json_path.exists() else None)
    return settings, fp


def ensure_latent_cache(args, frozen: dict, accelerator=None) -> Path:
    """Build (or finish) the --latent_cache unless complete for these settings; processes split the shards."""
    from emoeditor.data import latent_cache as lc
    from emoeditor.data.emopair import EmoPairDataset, load_emopair

    settings, fp = _cache_fingerprint(args)
    if lc.is_complete(args.latent_cache, settings, fp):
        return Path(args.latent_cache)
    if fp is None:
        raise TrainingError(f"--latent_cache {args.latent_cache} is incomplete or was built with other "
                            f"settings, and {args.json_path} is missing to rebuild it; pass --json_path")
    main = accelerator is None or accelerator.is_main_process
    barrier = accelerator.wait_for_everyone if accelerator is not None else (lambda: None)
    entries = load_emopair(args.json_path, args.data_root, args.subset, skip_bad=args.skip_bad,
                           check_images=args.check_images, progress=main and not args.no_progress)
    dataset = EmoPairDataset(entries, args.data_root, args.image_size)
    dataset = SkipBadItems(dataset) if args.skip_bad else dataset
    if main:
        lc.prepare_cache_dir(args.latent_cache, len(dataset), args.cache_shard_size, settings, fp)
    barrier()
    lc.build_shards(dataset, args.latent_cache, frozen["vae"], frozen["text_encoder"], frozen["tokenizer"],
                    batch_size=args.cache_batch_size, num_workers=args.num_workers,
                    rank=accelerator.process_index if accelerator is not None else 0,
                    world=accelerator.num_processes if accelerator is not None else 1,
                    show_progress=main and not args.no_progress)
    barrier()
    if main:
        lc.finalize_cache(args.latent_cache)
    barrier()
    return Path(args.latent_cache)


class SkipBadItems(torch.utils.data.Dataset):
    """With --skip_bad: a pair whose image fails to decode mid-run (validation reads only headers) is
    replaced by the next good one, with a warning, so batches keep their size and the run goes on.
    Each item's "skipped" says how many bad pairs it replaced: DataLoader workers are separate
    processes, so the count travels with the batch to the loop that totals it."""

    MAX_TRIES = 16

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        from emoeditor.errors import ImageLoadError

        for k in range(self.MAX_TRIES):
            try:
                return {**self.dataset[(i + k) % len(self.dataset)], "skipped": k}
            except ImageLoadError as exc:
                logger.warning("skipping a bad pair (--skip_bad): %s", exc)
        raise TrainingError(f"{self.MAX_TRIES} consecutive EmoPair pairs from index {i} failed to load; "
                            f"check the images under the data root")


def build_dataset(args, accelerator, frozen: dict):
    """EmoPairDataset, or the latent cache of it (built first, shards split over the processes)."""
    from emoeditor.data.emopair import EmoPairDataset, load_emopair
    from emoeditor.data.latent_cache import LatentCacheDataset

    if args.latent_cache:
        ensure_latent_cache(args, frozen, accelerator)
        return LatentCacheDataset(args.latent_cache)
    entries = load_emopair(args.json_path, args.data_root, args.subset, skip_bad=args.skip_bad,
                           check_images=args.check_images, progress=accelerator.is_main_process and not args.no_progress)
    dataset = EmoPairDataset(entries, args.data_root, args.image_size)
    return SkipBadItems(dataset) if args.skip_bad else dataset


def frozen_components(base: dict, device, weight_dtype: torch.dtype) -> dict:
    """The frozen VAE + CLIP text encoder on `device` (in the autocast dtype, as the diffusers examples)."""
    frozen = {name: base[name].requires_grad_(False).eval().to(device) for name in ("vae", "text_encoder")}
    if weight_dtype != torch.float32:
        frozen = {name: module.to(dtype=weight_dtype) for name, module in frozen.items()}
    frozen["tokenizer"] = base["tokenizer"]
    return frozen


def cache_latents(args) -> Path:
    """scripts/cache_latents.py: the cache `train.py --latent_cache` would build, built up front."""
    from emoeditor.models.components import load_base_components

    if not args.latent_cache:
        raise TrainingError("--latent_cache DIR is required: the folder to write the cache to")
    use_cuda = torch.cuda.is_available() and not args.cpu
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(_mixed_precision(args), torch.float32)
    frozen = frozen_components(load_base_components(args.base_model), "cuda" if use_cuda else "cpu", dtype)
    return ensure_latent_cache(args, frozen)


def to_model_inputs(batch: dict, frozen: dict, args, device) -> dict:
    """A DataLoader batch (images or cached tensors) -> the float32 tensors compute_loss needs."""
    from emoeditor.data.latent_cache import encode_batch

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
    from emoeditor.models.latents import decode_latents
    from emoeditor.models.components import sd_v1_ddim_scheduler
    from emoeditor.editing.pipeline import EmoEditorPipeline

    device = inputs["source_latent"].device
    if "source" in batch:
        source, target = batch["source"][:1].float().to(device), batch["target"][:1].float().to(device)
    else:
        size = (args.image_size, args.image_size)
        source = F.interpolate(decode_latents(vae, inputs["source_latent"][:1] * LATENT_SCALE), size=size)
        target = F.interpolate(decode_latents(vae, target_posterior(inputs["target_moments"][:1]).mode()
                                              * LATENT_SCALE), size=size)
    pipe = EmoEditorPipeline(unet=model.unet, vae=vae, scheduler=sd_v1_ddim_scheduler(),
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
    from emoeditor.models.components import load_base_components
    from emoeditor.editing.pipeline import EmoEditorPipeline

    base = load_base_components(args.base_model)  # frozen parts reloaded so they are saved in full precision
    pipe = EmoEditorPipeline(
        unet=model.unet, vae=base["vae"], scheduler=base["scheduler"], emotion_encoder=model.emotion_encoder,
        text_encoder=base["text_encoder"], tokenizer=base["tokenizer"], emotion_input=args.emotion_input,
        vae_input_range=args.vae_input_range, lambda_emb=args.lambda_emb, cond_dropout=args.cond_dropout)
    check_export_dir(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = export_dir.with_name(f".{export_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    (tmp / "training_args.json").write_text(json.dumps(ckpt.plain(vars(args)), indent=2, sort_keys=True))
    if summary is not None:
        (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2))
    return ckpt.replace_dir(tmp, export_dir)


# -------------------------------------------------------------------------------------------- train
def initial_weights(args, base: dict, embed_dim: int):
    """(UNet, emotion encoder) to train: Ip2p's UNet + a fresh encoder, or those of --init_model."""
    from emoeditor.models.emotion_encoder import EmotionEncoder

    learned_null = args.cond_dropout > 0 and args.null_embedding == "learned"
    if not args.init_model:
        encoder = EmotionEncoder(hidden_dims=tuple(args.encoder_hidden), seq_len=TEXT_SEQ_LEN,
                                 embed_dim=embed_dim, learned_null=learned_null)
        return base["unet"], encoder
    from emoeditor.editing.loading import load_model

    init = load_model(args.init_model, args.base_model)
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


def train(args: argparse.Namespace) -> Optional[Path]:
    """Train, checkpoint, export. Returns the exported pipeline folder (None after --stop_at_step)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from emoeditor.imageio import save_image
    from emoeditor.models.components import load_base_components

    # 1. Accelerator, resume state, argument checks.
    resume_weights = resume_state = None
    resume = args.resume
    if resume == "auto":  # a job that may be preempted: resume if there is anything to resume
        resume = "latest" if ckpt.list_checkpoints(ckpt.checkpoint_root(args.save_model_dir)) else None
    if resume:
        resume_path = ckpt.resolve_checkpoint(resume, args.save_model_dir)
        resume_weights, resume_state = ckpt.load_checkpoint(resume_path)
        saved = resume_state["args"]
        changed = {k: (saved.get(k), ckpt.plain(getattr(args, k))) for k in MODEL_ARGS
                   if saved.get(k) != ckpt.plain(getattr(args, k))}
        if changed:
            raise TrainingError(f"--resume {resume_path}: the checkpoint was trained with different model "
                                f"settings {changed} (checkpoint, now); use the checkpoint's values")
    accelerator = Accelerator(mixed_precision=_mixed_precision(args), cpu=args.cpu,
                              dynamo_backend="inductor" if args.compile else None,
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=args.ddp_timeout))])
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    micro_size = _check_args(args, world)
    export_dir = Path(args.export_dir) if args.export_dir else Path(args.save_model_dir) / "model"
    check_export_dir(export_dir)
    accum = args.gradient_accumulation_steps
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_seed(args.random_seed)  # initial weights of the emotion encoder; step randomness is seeded per step

    # 2. Models: trainable UNet + emotion encoder (fp32 master weights), frozen VAE + text encoder.
    base = load_base_components(args.base_model)
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    frozen = frozen_components(base, device, weight_dtype)
    noise_scheduler = base["scheduler"]
    unet, encoder = initial_weights(args, base, frozen["text_encoder"].config.hidden_size)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    model = EmoEditorDenoiser(unet, encoder).train()

    # 3. Data.
    dataset = build_dataset(args, accelerator, frozen)
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
    step = 0
    nonfinite_total = 0
    bad_pairs = 0  # pairs --skip_bad replaced, on this process (rank 0 carries the total of earlier runs)
    if resume_state is not None:
        model.load_state_dict(resume_weights)
        optimizer.load_state_dict(resume_state["optimizer"])
        lr_scheduler.load_state_dict(resume_state["lr_scheduler"])
        if ema is not None:
            if "ema" not in resume_state:
                raise TrainingError(f"--resume: the checkpoint has no EMA state but --ema_decay is {args.ema_decay}")
            ema.load_state_dict(resume_state["ema"])
        if resume_state["steps_per_epoch"] != steps_per_epoch or resume_state["num_items"] != len(dataset):
            raise TrainingError(
                f"--resume: the data changed ({resume_state['num_items']} pairs / {resume_state['steps_per_epoch']} "
                f"steps per epoch at save time, now {len(dataset)} / {steps_per_epoch}); the data position "
                f"cannot be restored. Use the same --json_path/--subset/--skip_bad/--batch_size")
        if saved.get("random_seed") != args.random_seed:  # the seed fixes every epoch's data order
            raise TrainingError(f"--resume: the checkpoint was trained with --random_seed {saved.get('random_seed')}, "
                                f"now {args.random_seed}; the data position cannot be restored. Use the checkpoint's seed")
        set_rng_state(resume_state["rng"])
        step = int(resume_state["step"])
        nonfinite_total = int(resume_state.get("nonfinite_total", 0))
        bad_pairs = int(resume_state.get("bad_pairs_skipped", 0)) if accelerator.is_main_process else 0
    if ema is not None:
        ema.to(device)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model, keep_torch_compile=False)

    def bad_pairs_total() -> int:  # a collective: every process calls it
        return int(accelerator.reduce(torch.tensor([bad_pairs], device=device), reduction="sum")[0])

    def save(at_step: int) -> None:
        skipped = bad_pairs_total()
        if accelerator.is_main_process:
            state = {"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                     "rng": rng_state(), "step": at_step, "epoch": at_step // steps_per_epoch,
                     "batch_in_epoch": at_step % steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                     "num_items": len(dataset), "nonfinite_total": nonfinite_total, "bad_pairs_skipped": skipped}
            if ema is not None:
                state["ema"] = ema.state_dict()
            ckpt.save_checkpoint(ckpt.checkpoint_root(args.save_model_dir), at_step, raw_model.state_dict(),
                                 state, vars(args), keep_last=args.keep_last or None)
        accelerator.wait_for_everyone()

    # 5. Logging (rank 0 only).
    writer = None
    train_save_dir = Path(args.train_save_dir)
    if accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(train_save_dir / "tensorboard"))
        logger.info("training %d steps (%d per epoch, %d pairs), %d process(es) x %d accumulation x %d per micro-batch, "
                    "mixed precision %s", total_steps, steps_per_epoch, len(dataset), world, accum, micro_size,
                    accelerator.mixed_precision)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step",
               disable=not accelerator.is_main_process or args.no_progress)

    # 6. The loop: one optimizer step = `accum` micro-batches on each of `world` processes.
    params = [p for p in model.parameters() if p.requires_grad]
    nonfinite_run = 0
    last_saved = step if resume_state is not None else -1
    t_last, samples_since = time.perf_counter(), 0
    while step < total_steps:
        epoch, first = divmod(step, steps_per_epoch)
        perm = epoch_permutation(len(dataset), args.random_seed, epoch)
        last = min(steps_per_epoch, first + total_steps - step)
        sampler = [mb for s in range(first, last)
                   for mb in rank_micro_batches(perm, s, args.batch_size, world, rank, accum)]
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers,
                            pin_memory=device.type == "cuda")
        batches = iter(loader)
        for _ in range(first, last):
            sums = torch.zeros(3, device=device)
            finite = True
            for a in range(accum):
                batch = next(batches)
                if "skipped" in batch:
                    bad_pairs += int(batch["skipped"].sum())
                inputs = to_model_inputs(batch, frozen, args, device)
                sync = accelerator.no_sync(model) if a < accum - 1 else nullcontext()
                with sync:
                    terms = compute_loss(model, noise_scheduler, inputs["target_moments"], inputs["source_latent"],
                                         inputs["emotion"], inputs["text_embedding"],
                                         step_generator(args.random_seed, step, rank, a, device),
                                         args.lambda_emb, args.cond_dropout)
                    accelerator.backward(terms.loss / accum)
                finite = finite and bool(torch.isfinite(terms.loss))
                sums += torch.stack([t.detach().float() for t in terms]) / accum
            grad_norm = accelerator.clip_grad_norm_(params, args.max_grad_norm or math.inf)
            flag = torch.tensor([float(finite and bool(torch.isfinite(grad_norm)))], device=device)
            updated = bool(accelerator.gather(flag).min() > 0)
            if updated or accelerator.mixed_precision == "fp16":
                optimizer.step()  # under fp16 the grad scaler skips inf steps itself and lowers its scale
                updated = not optimizer.step_was_skipped
            if updated:
                lr_scheduler.step()
                if ema is not None:
                    ema.step(raw_model.parameters())
                nonfinite_run = 0
            else:  # skip the update; the data of this step is consumed all the same
                nonfinite_run += 1
                nonfinite_total += 1
                logger.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step, nonfinite_run)
                if nonfinite_run >= args.max_nonfinite:
                    raise TrainingError(
                        f"{nonfinite_run} non-finite losses in a row (last at step {step}); stopping. Lower "
                        f"--learning_rate, set --max_grad_norm, use --mixed_precision bf16 or no, or resume from "
                        f"an earlier checkpoint in {ckpt.checkpoint_root(args.save_model_dir)}")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            samples_since += args.batch_size
            bar.update(1)

            if args.log_every and step % args.log_every == 0:
                mean = accelerator.reduce(sums, reduction="mean")
                skipped = bad_pairs_total() if args.skip_bad else 0
                now = time.perf_counter()
                if writer is not None:
                    scalars = {"loss": mean[0], "l_noise": mean[1], "l_emb": mean[2],
                               "lr": lr_scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                               "samples_per_s": samples_since / max(now - t_last, 1e-9),
                               "nonfinite_total": nonfinite_total, "bad_pairs_skipped": skipped}
                    for name, value in scalars.items():
                        writer.add_scalar(f"train/{name}", float(value), step)
                    bar.set_postfix(loss=f"{float(mean[0]):.4f}", l_noise=f"{float(mean[1]):.4f}",
                                    l_emb=f"{float(mean[2]):.4f}")
                t_last, samples_since = now, 0
            if args.image_every and step % args.image_every == 0 and accelerator.is_main_process:
                raw_model.eval()
                strip = preview_strip(raw_model, frozen["vae"], batch, inputs, args, args.random_seed)
                raw_model.train()
                name = f"epoch{epoch:03d}_iter{step}_{batch['transition'][0]}.png".replace(" ", "_")
                save_image(strip, train_save_dir / "images" / name)
                writer.add_image("train/source_edit_target", strip, step)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save(step)
                last_saved = step
            if args.stop_at_step is not None and step >= args.stop_at_step:
                if last_saved != step:
                    save(step)
                bar.close()
                if writer is not None:
                    writer.close()
                return None

    # 7. Final checkpoint and export (EMA weights if EMA is on).
    bar.close()
    if last_saved != step:
        save(step)
    digests = _check_ranks_agree(accelerator, weights_digest(raw_model.state_dict()))
    skipped = bad_pairs_total()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(raw_model.parameters())
        summary = {"steps": step, "nonfinite_total": nonfinite_total, "bad_pairs_skipped": skipped,
                   "num_processes": world, "rank_weight_digests": digests, "ema": ema is not None}
        export_pipeline(raw_model, args, export_dir, summary)
        writer.close()
        logger.info("exported %s (%d non-finite steps skipped, %d bad pairs replaced)", export_dir, nonfinite_total,
                    skipped)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return export_dir
