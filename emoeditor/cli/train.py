"""train.py's flags and entry point."""

from __future__ import annotations

import argparse
import logging

from emoeditor.config import parse_args
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
from emoeditor.training.trainer import (
    LR_SCHEDULERS,
    MIXED_PRECISION,
    NULL_EMBEDDINGS,
    TRAIN_TIMESTEPS,
    cache_latents,
    train,
)


# --------------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train EmoEditor (UNet + emotion encoder) on EmoPair.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_emopair_args(p)  # --json_path --data_root --subset --skip_bad --check_images, as every EmoPair reader
    g = p.add_argument_group("data")
    g.add_argument("--dataset_name", default="EmoPair", choices=["EmoPair"], help="official flag")
    g.add_argument("--image_size", type=int, default=IMAGE_SIZE)
    g.add_argument("--num_workers", type=int, default=4, help="DataLoader workers per process")
    g.add_argument("--latent_cache", default=None,
                   help="folder of cached VAE latents + CLIP embeddings; built first if missing or incomplete")
    g.add_argument("--cache_dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="float32 trains exactly as uncached; float16 halves the cache (~140 KB per 224px pair)")
    g.add_argument("--cache_batch_size", type=int, default=16)
    g.add_argument("--cache_shard_size", type=int, default=1024)
    g = p.add_argument_group("model")
    g.add_argument("--base_model", default=IP2P_HUB_ID, help="local diffusers InstructPix2Pix folder or hub id")
    g.add_argument("--init_model", default=None,
                   help="start the UNet + emotion encoder from an exported EmoEditor folder or the official "
                        "release (model_ip2p.pt + model_emoenc.pt) instead of Ip2p + a fresh encoder")
    g.add_argument("--emotion_input", default="direction", choices=EMOTION_INPUTS,
                   help="encoder input: target - P(source) (official) or the one-hot target (paper wording)")
    g.add_argument("--encoder_hidden", type=int, nargs="+", default=list(EMOTION_ENCODER_HIDDEN))
    g.add_argument("--vae_input_range", default="minus_one_one", choices=VAE_INPUT_RANGES,
                   help="zero_one reproduces the official training script (which mismatches its inference)")
    g.add_argument("--cond_dropout", type=float, default=0.0,
                   help="probability of replacing the emotion embedding by the null one (enables CFG)")
    g.add_argument("--null_embedding", default="learned", choices=NULL_EMBEDDINGS)
    g.add_argument("--train_timesteps", default="uniform", choices=TRAIN_TIMESTEPS,
                   help="uniform: t ~ U{0..999} (paper). official: as the official train.py, whose preview edit "
                        "leaves its T ~ U{700..980} in the scheduler: step 0 draws t < 1000, later steps t < T, "
                        "T redrawn every 10,000 steps")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lambda_emb", type=float, default=LAMBDA_EMB, help="0 = the paper's 'w/o L_emb' ablation")
    g.add_argument("--learning_rate", type=float, default=LEARNING_RATE)
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--adam_eps", type=float, default=ADAM_EPS, help=f"official: {OFFICIAL_ADAM_EPS}")
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--lr_scheduler", default="constant", choices=LR_SCHEDULERS,
                   help="diffusers.optimization.get_scheduler name")
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--batch_size", type=int, default=BATCH_SIZE,
                   help="effective batch per optimizer step over all processes and accumulation steps")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--max_epoch", type=int, default=MAX_EPOCH)
    g.add_argument("--max_steps", type=int, default=None, help="overrides --max_epoch")
    g.add_argument("--max_grad_norm", type=float, default=None, help="clip the gradient norm (off by default)")
    g.add_argument("--random_seed", type=int, default=0,
                   help="data order, initial encoder weights and every step's noise (official default: unseeded)")
    g.add_argument("--mixed_precision", default="auto", choices=MIXED_PRECISION,
                   help="auto = bf16 autocast on a GPU that has it, else fp32; master weights stay fp32")
    g.add_argument("--gradient_checkpointing", action="store_true")
    g.add_argument("--use_8bit_adam", action="store_true", help="bitsandbytes Adam8bit (pip install emoeditor[bnb])")
    g.add_argument("--adam_fused", action="store_true", help="fused CUDA Adam")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    g.add_argument("--allow_tf32", action="store_true")
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
    g.add_argument("--checkpoint_every", type=int, default=CHECKPOINT_EVERY)
    g.add_argument("--keep_last", type=int, default=KEEP_LAST, help="checkpoints kept (0 = all)")
    g.add_argument("--resume", default=None,
                   help="'latest', a checkpoint folder, or 'auto' (latest if any, else start fresh)")
    g.add_argument("--stop_at_step", type=int, default=None,
                   help="checkpoint and exit at this step without exporting (a job with a time limit)")
    g.add_argument("--log_every", type=int, default=LOG_EVERY)
    g.add_argument("--image_every", type=int, default=IMAGE_EVERY, help="image strip every N steps (0 = never)")
    g.add_argument("--preview_steps", type=int, default=NUM_INFERENCE_STEPS,
                   help="DDIM steps of the image strip's edit")
    g.add_argument("--no_progress", action="store_true")
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
    """train.py: flags (and an optional --config preset) -> train."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train(parse_args(build_parser(), argv))


def cache_latents_main(argv=None):
    """scripts/cache_latents.py: train.py's flags (so the cache matches the run) -> the latent cache."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    parser.description = "Build the latent cache (VAE posteriors + CLIP text embeddings) for train.py --latent_cache."
    path = cache_latents(parse_args(parser, argv))
    print(f"latent cache ready: {path}")
    return path
