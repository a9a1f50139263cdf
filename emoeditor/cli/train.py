"""train.py's and scripts/cache_latents.py's flags and entry points."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emoeditor.config import HelpFormatter, parse_args
from emoeditor.constants import (
    ADAM_EPS,
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    DDP_TIMEOUT_S,
    EMOTION_ENCODER_HIDDEN,
    EMOTION_INPUTS,
    IMAGE_EVERY,
    IMAGE_SIZE,
    IP2P_HUB_ID,
    KEEP_LAST,
    LAMBDA_EMB,
    LEARNING_RATE,
    LOG_EVERY,
    MAX_EPOCH,
    MAX_NONFINITE,
    NUM_INFERENCE_STEPS,
    OFFICIAL_ADAM_EPS,
    VAE_INPUT_RANGES,
)
from emoeditor.data.emopair import add_emopair_args
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.training import checkpoint as ckpt
from emoeditor.training.trainer import (
    LR_SCHEDULERS,
    MIXED_PRECISION,
    NULL_EMBEDDINGS,
    PREDICTION_TYPES,
    SUMMARY_FILE,
    TRAIN_TIMESTEPS,
    cache_latents,
    summary_text,
    train,
)

TRAIN_EXAMPLES = """\
examples:
  make demo && python train.py --config configs/tiny.yaml   # toy data and tiny model (runs/demo), CPU, minutes
  python train.py --config configs/paper.yaml                # the paper's recipe on EmoPair/ + json/, one GPU
  accelerate launch --num_processes 8 train.py --config configs/paper.yaml        # several GPUs
  python train.py --config configs/paper.yaml --gradient_accumulation_steps 4 --gradient_checkpointing
  python train.py --config configs/paper.yaml --resume latest                      # continue a stopped run
  python train.py --config configs/paper.yaml --skip_bad --check_images decode     # drop every unreadable pair
  python train.py --config configs/official.yaml                                   # the official script's settings

YAML presets (configs/) only set these flags' defaults; flags on the command line win.
"""

CACHE_EXAMPLES = """\
examples:
  python scripts/cache_latents.py --config configs/paper.yaml --latent_cache cache/emopair_224
  python train.py --config configs/paper.yaml --latent_cache cache/emopair_224      # then train from it
  make demo && python scripts/cache_latents.py --config configs/tiny.yaml --latent_cache runs/tiny/cache

Interrupted? Run it again: it resumes at the first missing shard.
"""
# The flags that change what cache_latents.py writes; its --help hides the rest of train.py's flags, which
# it accepts so that the training preset and command line can be reused unchanged.
CACHE_FLAGS = {"help", "config", "quiet", "verbose", "json_path", "data_root", "subset", "skip_bad", "check_images",
               "image_size", "num_workers", "latent_cache", "cache_dtype", "cache_batch_size", "cache_shard_size",
               "base_model", "vae_input_range", "mixed_precision", "cpu", "no_progress"}


# --------------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", epilog=TRAIN_EXAMPLES, formatter_class=HelpFormatter,
                                description="Train EmoEditor (UNet + emotion encoder) on EmoPair (paper Sec. 3.2):\n"
                                            "checkpoints as it goes, then exports a model folder test.py loads.")
    p.add_argument("--config", default=None,
                   help="YAML preset (configs/*.yaml) whose values become these flags' defaults")
    add_verbosity_args(p)
    add_emopair_args(p)  # --json_path --data_root --subset --skip_bad --check_images, as every EmoPair reader
    g = p.add_argument_group("data")
    g.add_argument("--dataset_name", default="EmoPair", choices=["EmoPair"],
                   help="accepted for the official command line; EmoPair is the only dataset")
    g.add_argument("--image_size", type=int, default=IMAGE_SIZE, help="side the pairs are resized to, in pixels")
    g.add_argument("--num_workers", type=int, default=4, help="DataLoader workers per process")
    g.add_argument("--latent_cache", default=None,
                   help="folder of cached VAE latents + CLIP embeddings; built first if missing or incomplete")
    g.add_argument("--cache_dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="float32 trains exactly as uncached; float16 halves the cache (~140 KB per 224px pair)")
    g.add_argument("--cache_batch_size", type=int, default=16, help="pairs encoded at once while building the cache")
    g.add_argument("--cache_shard_size", type=int, default=1024, help="pairs per cache file")
    g = p.add_argument_group("model")
    g.add_argument("--base_model", default=IP2P_HUB_ID, help="local diffusers InstructPix2Pix folder or hub id")
    g.add_argument("--init_model", default=None,
                   help="start the UNet + emotion encoder from an exported EmoEditor folder or the official "
                        "release (model_ip2p.pt + model_emoenc.pt) instead of Ip2p + a fresh encoder")
    g.add_argument("--emotion_input", default="direction", choices=EMOTION_INPUTS,
                   help="encoder input: target - P(source) (official) or the one-hot target (paper wording)")
    g.add_argument("--encoder_hidden", type=int, nargs="+", default=list(EMOTION_ENCODER_HIDDEN),
                   help="hidden widths of the emotion encoder's MLP (the paper's: 256 512 768)")
    g.add_argument("--vae_input_range", default="minus_one_one", choices=VAE_INPUT_RANGES,
                   help="zero_one reproduces the official training script (which mismatches its inference)")
    g.add_argument("--cond_dropout", type=float, default=0.0,
                   help="probability of replacing the emotion embedding by the null one (enables CFG)")
    g.add_argument("--null_embedding", default="learned", choices=NULL_EMBEDDINGS,
                   help="what --cond_dropout swaps in: a learned embedding or zeros")
    g.add_argument("--prediction_type", default="epsilon", choices=PREDICTION_TYPES,
                   help="what the UNet learns to predict: the noise (Ip2p, the paper) or v; v weights the "
                        "high-noise steps, where the global look of an edit is decided, far more")
    g.add_argument("--noise_offset", type=float, default=0.0,
                   help="add this times a per-channel constant to the training noise (diffusers' option; "
                        "0 = the paper): lets a model change an image's global colour")
    g.add_argument("--train_timesteps", default="uniform", choices=TRAIN_TIMESTEPS,
                   help="uniform: t ~ U{0..999} (paper). official: as the official train.py, whose preview edit "
                        "leaves its T ~ U{700..980} in the scheduler: step 0 draws t < 1000, later steps t < T, "
                        "T redrawn every 10,000 steps")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lambda_emb", type=float, default=LAMBDA_EMB, help="0 = the paper's 'w/o L_emb' ablation")
    g.add_argument("--learning_rate", type=float, default=LEARNING_RATE, help="Adam's learning rate")
    g.add_argument("--adam_beta1", type=float, default=0.9, help="Adam's beta1")
    g.add_argument("--adam_beta2", type=float, default=0.999, help="Adam's beta2")
    g.add_argument("--adam_eps", type=float, default=ADAM_EPS, help=f"Adam's epsilon (official: {OFFICIAL_ADAM_EPS})")
    g.add_argument("--weight_decay", type=float, default=0.0, help="Adam's (L2) weight decay")
    g.add_argument("--lr_scheduler", default="constant", choices=LR_SCHEDULERS,
                   help="diffusers.optimization.get_scheduler name")
    g.add_argument("--lr_warmup_steps", type=int, default=0, help="linear warmup steps of the LR schedule")
    g.add_argument("--batch_size", type=int, default=BATCH_SIZE,
                   help="effective batch per optimizer step over all processes and accumulation steps")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1,
                   help="micro-batches per optimizer step (the effective batch stays --batch_size)")
    g.add_argument("--max_epoch", type=int, default=MAX_EPOCH, help="epochs to train, unless --max_steps is given")
    g.add_argument("--max_steps", type=int, default=None, help="optimizer steps to train; overrides --max_epoch")
    g.add_argument("--max_grad_norm", type=float, default=None, help="clip the gradient norm (off by default)")
    g.add_argument("--random_seed", type=int, default=0,
                   help="data order, initial encoder weights and every step's noise (the official code is unseeded)")
    g.add_argument("--mixed_precision", default="auto", choices=MIXED_PRECISION,
                   help="auto = bf16 autocast on a GPU that has it, else fp32; master weights stay fp32")
    g.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations: less memory, slower")
    g.add_argument("--use_8bit_adam", action="store_true", help="bitsandbytes Adam8bit (pip install emoeditor[bnb])")
    g.add_argument("--adam_fused", action="store_true", help="fused CUDA Adam")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    g.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs (faster, less exact)")
    g.add_argument("--ema_decay", type=float, default=0.0, help="EMA of the trained weights (0 = off), exported if on")
    g.add_argument("--max_nonfinite", type=int, default=MAX_NONFINITE,
                   help="stop after this many non-finite losses in a row (each one skips its step)")
    g.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    g.add_argument("--ddp_timeout", type=int, default=DDP_TIMEOUT_S,
                   help="seconds a process waits for the others (e.g. while rank 0 writes a checkpoint)")
    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--save_model_dir", default="./save_models", help="checkpoints/ and the exported model/")
    g.add_argument("--train_save_dir", default="./save_train_res", help="image strips and TensorBoard logs")
    g.add_argument("--export_dir", default=None, help="exported pipeline folder (default: SAVE_MODEL_DIR/model)")
    g.add_argument("--checkpoint_every", type=int, default=CHECKPOINT_EVERY, help="steps between checkpoints")
    g.add_argument("--keep_last", type=int, default=KEEP_LAST, help="checkpoints kept (0 = all)")
    g.add_argument("--resume", default=None,
                   help="'latest' (the newest complete checkpoint in SAVE_MODEL_DIR/checkpoints), a step_XXXXXXXX "
                        "folder, or 'auto' (latest if any, else start fresh)")
    g.add_argument("--stop_at_step", type=int, default=None,
                   help="checkpoint and exit at this step without exporting (a job with a time limit)")
    g.add_argument("--log_every", type=int, default=LOG_EVERY, help="steps between TensorBoard scalars")
    g.add_argument("--image_every", type=int, default=IMAGE_EVERY, help="image strip every N steps (0 = never)")
    g.add_argument("--preview_steps", type=int, default=NUM_INFERENCE_STEPS,
                   help="DDIM steps of the image strip's edit")
    g.add_argument("--no_progress", action="store_true", help="no progress bars (--quiet implies it)")
    return p


def default_args(**overrides) -> argparse.Namespace:
    """The CLI defaults with `overrides` applied: for calling `train` from Python (demo, tests)."""
    args = build_parser().parse_args([])
    unknown = set(overrides) - set(vars(args))
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    vars(args).update(overrides)
    return args



def main(argv=None):
    """train.py: flags (and an optional --config preset) -> train, then where everything went."""
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    args.no_progress = args.no_progress or args.quiet
    export = train(args)
    if _is_main_process():
        print(_report(args, export))
    return export


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _report(args, export) -> str:
    """The run's summary (from the export's training_summary.json), or where a stopped run can go on from."""
    if export is not None:
        return summary_text(json.loads((Path(export) / SUMMARY_FILE).read_text()))
    latest = ckpt.resolve_checkpoint("latest", args.save_model_dir).resolve()
    return (f"stopped at step {args.stop_at_step} (--stop_at_step), not exported; checkpoint: {latest}\n"
            f"  go on with the same command and --resume latest")


def build_cache_parser() -> argparse.ArgumentParser:
    """train.py's parser (same presets, same flags), showing only the flags that change the cache."""
    p = build_parser()
    p.prog = "cache_latents.py"
    p.description = ("Encode EmoPair once with the frozen VAE + CLIP text encoder, so train.py --latent_cache\n"
                     "reads tensors, not images. It takes every train.py flag, so the training preset and\n"
                     "command line work unchanged; only those listed here change the cache.")
    p.epilog = CACHE_EXAMPLES
    for action in p._actions:
        if action.dest == "latent_cache":
            action.help = "folder to write the cache to (required); train with the same flags and --latent_cache"
        elif action.dest not in CACHE_FLAGS:
            action.help = argparse.SUPPRESS
    return p


def cache_latents_main(argv=None):
    """scripts/cache_latents.py: train.py's flags (so the cache matches the run) -> the latent cache."""
    args = parse_args(build_cache_parser(), argv)
    setup_logging(args)
    args.no_progress = args.no_progress or args.quiet
    path = Path(cache_latents(args)).resolve()
    print(f"latent cache ready: {path}\n  train from it with the same flags and --latent_cache {path}")
    return path
