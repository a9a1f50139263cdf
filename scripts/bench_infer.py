#!/usr/bin/env python
"""Iterative-inference speed of the full-size SD1.5-InstructPix2Pix EmoEditor, no download.

Builds the UNet (8 input channels), VAE, emotion encoder and ResNet18 predictor from their
public configs with random weights, and times the whole critic loop (edit + P + SSIM per
iteration) at 224x224, 30 DDIM steps, in three modes:

  official       the official test.py: float16 weights, attention slicing, batch 1,
                 scikit-image SSIM on the CPU
  ours_b1        bf16 weights, SDPA attention, torch.compile (GPU), torch SSIM on the device, batch 1
  ours_batched   ours_b1 settings, continuous batching at each --batch_sizes; the best is reported

The critic is set never to accept (confidence threshold > 1), so every job runs exactly
--iterations edits and the time per iteration is well defined.

    python scripts/bench_infer.py --out bench_infer.json            # on a GPU
    python scripts/bench_infer.py --tiny --out bench_infer.json     # tiny components, CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import torch

from emoeditor.config import parse_args, run_cli
from emoeditor.constants import IMAGE_SIZE, NUM_INFERENCE_STEPS, SD15_IP2P_UNET_CONFIG, SD15_VAE_CONFIG
from emoeditor.editing.critic import CriticConfig
from emoeditor.editing.loop import IterativeInference, Job
from emoeditor.editing.pipeline import EmoEditorPipeline
from emoeditor.editors.emoeditor import EmoEditorEditor
from emoeditor.emotions import onehot
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.models.components import cast, sd_v1_ddim_scheduler
from emoeditor.models.emotion_encoder import EmotionEncoder
from emoeditor.models.predictor import EmotionPredictor, build_resnet18

# fast_cuda: channels_last UNet and TF32 matmuls; the official mode keeps PyTorch's defaults as its script does
MODES = {
    "official": dict(dtype="float16", attention_slicing=True, ssim_backend="skimage", compile=False, batched=False,
                     fast_cuda=False),
    "ours_b1": dict(dtype="bfloat16", attention_slicing=False, ssim_backend="torch", compile=True, batched=False,
                    fast_cuda=True),
    "ours_batched": dict(dtype="bfloat16", attention_slicing=False, ssim_backend="torch", compile=True, batched=True,
                         fast_cuda=True),
}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def build(tiny: bool, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Random-weight pipeline + predictor (full SD1.5 sizes unless `tiny`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    if tiny:
        from emoeditor.models.tiny import tiny_emotion_encoder, tiny_predictor, tiny_unet, tiny_vae

        pipe = EmoEditorPipeline(unet=tiny_unet(seed), vae=tiny_vae(seed), scheduler=sd_v1_ddim_scheduler(),
                                 emotion_encoder=tiny_emotion_encoder(seed))
        predictor = tiny_predictor(seed)
    else:
        with torch.device(device):  # initialise in place
            pipe = EmoEditorPipeline(unet=UNet2DConditionModel(**SD15_IP2P_UNET_CONFIG),
                                     vae=AutoencoderKL(**SD15_VAE_CONFIG), scheduler=sd_v1_ddim_scheduler(),
                                     emotion_encoder=EmotionEncoder())
            predictor = EmotionPredictor(build_resnet18())
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae):
        cast(module.to(device), dtype).eval().requires_grad_(False)
    pipe.emotion_encoder.to(device=device, dtype=torch.float32).eval().requires_grad_(False)  # as test.py loads it
    return pipe, predictor.to(device).eval().requires_grad_(False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_run(pipe, predictor, settings: dict, batch_size: int, n_jobs: int, iterations: int, args, device) -> float:
    """Seconds for `n_jobs` jobs of exactly `iterations` critic iterations each."""
    critic = CriticConfig("paper", num_loop=iterations, confidence=2.0)  # never accepts
    editor = EmoEditorEditor(pipe, predictor, num_inference_steps=args.num_inference_steps)
    engine = IterativeInference(editor, predictor.probs, critic, batch_size=batch_size,
                                ssim_backend=settings["ssim_backend"], device=device, pad_batches=settings["batched"])
    g = torch.Generator().manual_seed(args.seed)
    image = torch.rand(3, args.image_size, args.image_size, generator=g)
    jobs = [Job(image, onehot(i % 8), seed=i) for i in range(n_jobs)]
    sync(device)
    start = time.perf_counter()
    n = sum(len(r.trace["iterations"]) for r in engine.run(jobs))
    sync(device)
    assert n == n_jobs * iterations
    return time.perf_counter() - start


def bench_mode(name: str, args, device: torch.device) -> dict:
    cfg = dict(MODES[name])
    cuda = device.type == "cuda"
    if not cuda:  # half-precision convolutions on CPU are slow or missing: time the control flow in fp32
        cfg["dtype"] = "float32"
    cfg["compile"] = cfg["compile"] and cuda and not args.no_compile
    cfg["fast_cuda"] = cfg["fast_cuda"] and cuda
    result = {"settings": cfg, "batches": []}
    pipe, predictor = build(args.tiny, device, DTYPES[cfg["dtype"]], args.seed)
    if cfg["attention_slicing"]:
        pipe.enable_attention_slicing()
    if cuda:  # set per mode: the flags are global and modes may run in any order
        torch.backends.cuda.matmul.allow_tf32 = cfg["fast_cuda"]  # PyTorch's default is False
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    if cfg["fast_cuda"]:
        pipe.unet.to(memory_format=torch.channels_last)
    if cfg["compile"]:  # static shapes: each batch size gets its own specialised kernels, not one dynamic graph
        pipe.unet = torch.compile(pipe.unet, mode=args.compile_mode, dynamic=False)
        predictor.net = torch.compile(predictor.net, mode=args.compile_mode, dynamic=False)
    batch_sizes = args.batch_sizes if cfg["batched"] else [1]
    for bs in batch_sizes:
        try:
            timed_run(pipe, predictor, cfg, bs, bs, 1, args, device)  # warm-up (and compilation) at this shape
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            n_jobs = bs * args.rounds
            seconds = timed_run(pipe, predictor, cfg, bs, n_jobs, args.iterations, args, device)
        except torch.cuda.OutOfMemoryError:
            result["batches"].append({"batch_size": bs, "error": "out of memory"})
            break
        its = n_jobs * args.iterations
        row = {"batch_size": bs, "image_iterations": its, "seconds": seconds,
               "s_per_image_iteration": seconds / its, "s_per_batch_step": seconds / its * bs,
               "image_iterations_per_s": its / seconds}
        if cuda:
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        result["batches"].append(row)
        print(f"{name:13s} batch {bs:3d}: {row['image_iterations_per_s']:.3f} image-iterations/s")
    ok = [r for r in result["batches"] if "error" not in r]
    if ok:
        best = max(ok, key=lambda r: r["image_iterations_per_s"])
        result.update(best_batch_size=best["batch_size"], image_iterations_per_s=best["image_iterations_per_s"],
                      s_per_image_iteration=best["s_per_image_iteration"])
    del pipe, predictor
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random components (CPU test of the script)")
    p.add_argument("--device", default="auto")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--iterations", type=int, default=3, help="critic iterations per job")
    p.add_argument("--rounds", type=int, default=2, help="jobs per batch slot")
    p.add_argument("--num_inference_steps", type=int, default=NUM_INFERENCE_STEPS)
    p.add_argument("--image_size", type=int, default=None, help="default: 224 (64 with --tiny)")
    p.add_argument("--no_compile", action="store_true")
    p.add_argument("--compile_mode", default="max-autotune-no-cudagraphs",
                   help="torch.compile mode; 'reduce-overhead' adds CUDA graphs (batches are padded to one shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_infer.json")
    add_verbosity_args(p)
    return p


def main(argv=None) -> dict:
    args = parse_args(build_parser(), argv)
    setup_logging(args)  # the libraries' errors only: random-weight models make their notices noise
    if args.image_size is None:
        args.image_size = 64 if args.tiny else IMAGE_SIZE
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    report = {
        "tiny": args.tiny, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(), "image_size": args.image_size,
        "num_inference_steps": args.num_inference_steps, "iterations_per_job": args.iterations, "modes": {},
    }
    for name in args.modes:
        report["modes"][name] = bench_mode(name, args, device)
    modes = report["modes"]
    if "official" in modes and "s_per_image_iteration" in modes["official"]:
        base = modes["official"]["s_per_image_iteration"]
        for name in ("ours_b1", "ours_batched"):
            if "image_iterations_per_s" in modes.get(name, {}):
                modes[name]["speedup_vs_official"] = modes[name]["image_iterations_per_s"] * base
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    run_cli(main)
