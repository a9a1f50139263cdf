#!/usr/bin/env python
"""Training throughput and peak memory of the full-size SD1.5-InstructPix2Pix EmoEditor, no download.

Builds the UNet (8 input channels), VAE and CLIP ViT-L/14 text encoder from their public configs
with random weights and times `emoeditor.training.trainer.train_step` (the optimizer step train.py
runs: accumulated micro-batches, backward, gradient-norm check, update; a non-finite step is skipped
as in training) at batch 32, 224x224 (the paper's setting) in several modes:

  official_fp16   the official script: every weight in fp16, Adam(eps=1e-3) on fp16 weights,
                  VAE + CLIP run every step, attention slicing on (its ip2p.py calls
                  enable_attention_slicing) (unsafe: most lr-1e-5 updates round away in fp16
                  weights, see changed_weight_fraction; no loss scaling)
  default         our default: fp32 master weights, bf16 autocast, frozen parts in bf16, VAE + CLIP every step
                  (train.py with no speed flags)
  default_gc      default + gradient checkpointing (--gradient_checkpointing)
  default_24gb    default + gradient checkpointing + 8-bit Adam (bitsandbytes): the paper's batch 32 within
                  20 GB (peak_reserved_gib is what the card must hold) (--gradient_checkpointing --use_8bit_adam)
  fastest         cached latents (no VAE/CLIP per step), torch.compile, fused Adam, TF32, bf16 autocast
                  (--latent_cache DIR --compile --adam_fused --allow_tf32: only what train.py can run)

    python scripts/bench_train.py --out bench.json            # on a GPU
    python scripts/bench_train.py --tiny --out bench.json     # tiny components, runs on CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from emoeditor.config import parse_args, run_cli
from emoeditor.constants import (
    ADAM_EPS,
    BATCH_SIZE,
    CLIP_VIT_L14_TEXT_CONFIG,
    IMAGE_SIZE,
    LAMBDA_EMB,
    LEARNING_RATE,
    OFFICIAL_ADAM_EPS,
    SD15_IP2P_UNET_CONFIG,
    SD15_VAE_CONFIG,
    TEXT_SEQ_LEN,
)
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.models.components import cast, sd_v1_ddim_scheduler
from emoeditor.models.emotion_encoder import EmotionEncoder
from emoeditor.training.trainer import EmoEditorDenoiser, StepParts, train_step

MODES = {
    "official_fp16": dict(precision="fp16_weights", cached=False, compile=False, fused=False, eps=OFFICIAL_ADAM_EPS,
                          attention_slicing=True),
    "default": dict(precision="bf16_autocast", cached=False, compile=False, fused=False, eps=ADAM_EPS),
    "default_gc": dict(precision="bf16_autocast", cached=False, compile=False, fused=False, eps=ADAM_EPS,
                       gradient_checkpointing=True),
    "default_24gb": dict(precision="bf16_autocast", cached=False, compile=False, fused=False, eps=ADAM_EPS,
                         gradient_checkpointing=True, adam_8bit=True),
    "fastest": dict(precision="bf16_autocast", cached=True, compile=True, fused=True, eps=ADAM_EPS, tf32=True),
}


class SingleProcess:
    """The part of accelerate.Accelerator that train_step uses, for one process. accelerate's state is
    global and its mixed precision fixed per process, so the modes here (each with its own) go without it."""

    process_index = 0
    mixed_precision = "no"  # a mode's autocast wraps the model instead (BF16Autocast), as accelerate's prepare does

    def __init__(self, device):
        self.device = device

    def no_sync(self, model):
        return nullcontext()

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def gather(self, tensor):
        return tensor


class BF16Autocast(torch.nn.Module):
    """The model's forward under bf16 autocast (what accelerate's prepare does for train.py's bf16)."""

    def __init__(self, model, device_type: str):
        super().__init__()
        self.model, self.device_type = model, device_type

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(*args, **kwargs)


def build_components(tiny: bool, device, seed: int = 0) -> dict:
    """Random-weight UNet, VAE, CLIP text encoder and emotion encoder (full SD1.5 sizes unless `tiny`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    if tiny:
        from emoeditor.models.tiny import tiny_emotion_encoder, tiny_text_encoder, tiny_unet, tiny_vae
        parts = dict(unet=tiny_unet(seed), vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed),
                     emotion_encoder=tiny_emotion_encoder(seed))
        return {k: v.to(device) for k, v in parts.items()}
    with torch.device(device):  # initialise in place: ~1.1B parameters
        return dict(unet=UNet2DConditionModel(**SD15_IP2P_UNET_CONFIG), vae=AutoencoderKL(**SD15_VAE_CONFIG),
                    text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L14_TEXT_CONFIG)),
                    emotion_encoder=EmotionEncoder())


def bench_mode(name: str, args, device) -> dict:
    cfg = MODES[name]
    cuda = device.type == "cuda"
    result = {"settings": dict(cfg)}
    if cfg.get("adam_8bit"):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return {**result, "error": "bitsandbytes not installed (pip install 'emoeditor[bnb]')"}
    use_compile = cfg["compile"] and cuda and not args.no_compile
    result["settings"].update(compile=use_compile, fused=cfg["fused"] and cuda, tf32=bool(cfg.get("tf32")) and cuda)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg.get("tf32")) and cuda

    parts = model = step_model = step_parts = optimizer = vae = text_encoder = None
    try:
        parts = build_components(args.tiny, device, args.seed)
        frozen_dtype = torch.float16 if cfg["precision"] == "fp16_weights" else torch.bfloat16
        vae = cast(parts["vae"], frozen_dtype).requires_grad_(False).eval()
        text_encoder = parts["text_encoder"].to(dtype=frozen_dtype).requires_grad_(False).eval()
        model = EmoEditorDenoiser(parts["unet"], parts["emotion_encoder"]).train()
        if cfg["precision"] == "fp16_weights":
            model = model.half()
        if cfg.get("gradient_checkpointing"):
            model.unet.enable_gradient_checkpointing()
        if cfg.get("attention_slicing"):
            model.unet.set_attention_slice("auto")  # what the official pipe.enable_attention_slicing() does
        result["attention_processor"] = type(next(iter(model.unet.attn_processors.values()))).__name__
        opt_kwargs = dict(lr=LEARNING_RATE, eps=cfg["eps"])
        if cfg.get("adam_8bit"):
            import bitsandbytes as bnb
            optimizer = bnb.optim.Adam8bit(model.parameters(), **opt_kwargs)
        else:
            optimizer = torch.optim.Adam(model.parameters(), fused=cfg["fused"] and cuda, **opt_kwargs)
        step_model = torch.compile(model) if use_compile else model
        scheduler = sd_v1_ddim_scheduler()

        # Fixed random data: images in [0, 1], token ids (no tokenizer download), emotion directions.
        g = torch.Generator(device="cpu").manual_seed(args.seed)
        size, batch = args.image_size, args.batch_size
        micro = batch // args.accum
        images = torch.rand(2, batch, 3, size, size, generator=g).to(device)
        vocab = text_encoder.config.vocab_size
        tokens = torch.randint(0, vocab, (batch, TEXT_SEQ_LEN), generator=g).to(device)
        emotion = (torch.rand(batch, 8, generator=g) - 0.5).to(device)
        if cfg["precision"] == "bf16_autocast":
            step_model = BF16Autocast(step_model, device.type)
        step_parts = StepParts(model=step_model, optimizer=optimizer, noise_scheduler=scheduler,
                               accelerator=SingleProcess(device), seed=args.seed, accum=args.accum,
                               lambda_emb=LAMBDA_EMB)

        @torch.no_grad()
        def encode(i0, i1):
            src, tgt = images[0, i0:i1], images[1, i0:i1]
            moments = vae.encode((tgt * 2 - 1).to(frozen_dtype)).latent_dist.parameters.float()
            cond = vae.encode((src * 2 - 1).to(frozen_dtype)).latent_dist.mode().float()
            text = text_encoder(tokens[i0:i1])[0].float()
            return moments, cond, text

        cached = encode(0, batch) if cfg["cached"] else None  # "fastest": the latent cache's tensors

        def micro_batches():  # encoded inside the step unless cached, as train.py does
            for a in range(args.accum):
                i0, i1 = a * micro, (a + 1) * micro
                moments, cond, text = ((cached[0][i0:i1], cached[1][i0:i1], cached[2][i0:i1]) if cached is not None
                                       else encode(i0, i1))
                yield dict(target_moments=moments, source_latent=cond, emotion=emotion[i0:i1], text_embedding=text)

        skipped = []

        def step(k: int) -> float:
            out = train_step(step_parts, micro_batches(), k)
            if not out.updated:  # a non-finite loss or gradient: train_step skips the update, as train.py
                skipped.append(k)
            return float(out.losses[0])

        def sync():
            if cuda:
                torch.cuda.synchronize(device)

        losses = [step(k) for k in range(args.warmup)]
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        losses += [step(args.warmup + k) for k in range(args.steps)]
        sync()
        elapsed = time.perf_counter() - t0
        result.update(samples_per_s=args.steps * batch / elapsed, step_time_s=elapsed / args.steps,
                      loss_first=losses[0], loss_last=losses[-1], losses_finite=all(math.isfinite(x) for x in losses),
                      skipped_steps=len(skipped),
                      trainable_params=sum(p.numel() for p in model.parameters()))
        if cuda:  # reserved = allocated + the caching allocator's slack: what the card must hold
            result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
            result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
        # How many weights one more step actually changes: fp16 weights swallow lr-1e-5 updates.
        probe = list(model.parameters())[::10]
        before = [p.detach().clone() for p in probe]
        step(args.warmup + args.steps)
        changed = sum(int((p.detach() != b).sum()) for p, b in zip(probe, before))
        result["changed_weight_fraction"] = changed / sum(b.numel() for b in before)
    except torch.OutOfMemoryError as exc:
        result["error"] = f"out of memory: {str(exc).splitlines()[0]}"
    except Exception as exc:  # a kernel missing for this dtype, a compile failure: recorded, the next mode runs
        result["error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    finally:
        parts = model = step_model = step_parts = optimizer = vae = text_encoder = None  # free this mode's weights
        if use_compile:
            torch._dynamo.reset()  # compiled graphs would keep this mode's weights alive
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny components at 64px (runs on CPU)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--batch_size", type=int, default=None, help=f"default {BATCH_SIZE} (4 with --tiny)")
    p.add_argument("--accum", type=int, default=1, help="split the batch into this many accumulated micro-batches")
    p.add_argument("--image_size", type=int, default=None, help=f"default {IMAGE_SIZE} (64 with --tiny)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_compile", action="store_true")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    add_verbosity_args(p)
    args = parse_args(p, argv)
    setup_logging(args)
    args.batch_size = args.batch_size or (4 if args.tiny else BATCH_SIZE)
    args.image_size = args.image_size or (64 if args.tiny else IMAGE_SIZE)
    if args.batch_size % args.accum:
        raise SystemExit(f"--batch_size {args.batch_size} must be a multiple of --accum {args.accum}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "tiny": args.tiny, "batch_size": args.batch_size, "accum": args.accum,
              "image_size": args.image_size, "steps": args.steps, "warmup": args.warmup, "modes": {}}
    for name in args.modes:
        report["modes"][name] = res = bench_mode(name, args, device)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items() if k != "settings"}
        print(f"{name:14s} {json.dumps(shown)}", flush=True)
        if args.out:  # after every mode, so a run that dies later still leaves the modes measured so far
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    run_cli(main)
