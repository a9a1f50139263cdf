"""Train the tiny AutoencoderKL (:func:`emoeditor.models.tiny.tiny_vae`) for reconstruction.

The "miniature world" trains the whole EmoEditor system on CPU at 64 px. Its InstructPix2Pix base
needs a VAE that reconstructs colours faithfully, or every edit is judged through a blur of grey;
the real SD VAE is never trained. Data: random crops of scikit-image's bundled photos
(:mod:`emoeditor.data.toy`), about half of them with a random emotion style applied, so the styled
colours the editor must produce are reconstructed too. Loss: mean L1 (on the [-1, 1] scale) of the
decoded posterior sample plus ``kl_weight`` x KL (summed over latent elements, averaged over the batch;
so at 64 px 1e-6 weighs KL ~12,000x more, relative to L1, than LDM's per-image sums do).

After training the latent scale is folded into the weights (:func:`fold_latent_scale`), and the
VAE is saved in the diffusers layout with ``training_summary.json`` beside it. Same seed =>
bit-identical weights (on the same machine and torch build). A folder that already holds a
finished VAE is returned as is: the stage is resumable as a whole, never mid-run.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from emoeditor.constants import EMOTIONS, LATENT_SCALE
from emoeditor.data.toy import TOY_PHOTOS, emotion_edit, load_toy_photo, random_crop
from emoeditor.errors import EmoEditorError, TrainingError
from emoeditor.fileio import check_writable, plain
from emoeditor.logs import show_progress
from emoeditor.models.latents import latent_dist, vae_input
from emoeditor.models.tiny import tiny_vae
from emoeditor.seeding import generator, mix_seed
from emoeditor.training.checkpoint import replace_dir

logger = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors", SUMMARY_FILE)
HELDOUT_SIZE = 64
HELDOUT_SEED = "vae-heldout"  # fixed, not the training seed: runs with different seeds are scored alike
STYLE_PROBABILITY = 0.5
MAX_STYLE_STRENGTH = 1.5
WARMUP_STEPS = 50
GRAD_CLIP = 1.0
LOSS_WINDOW = 50  # steps averaged into the reported final training loss


def finished(out_dir: str | Path) -> bool:
    """Whether `out_dir` holds a VAE this module finished (weights, config and summary)."""
    return all((Path(out_dir) / name).is_file() for name in VAE_FILES)


def load_photos(names: Sequence[str]) -> list[np.ndarray]:
    """The training photos (uint8 RGB), loaded once."""
    return [load_toy_photo(name) for name in names]


def make_batch(photos: Sequence[np.ndarray], n: int, image_size: int, rng: np.random.Generator) -> torch.Tensor:
    """`n` random crops in [0, 1], (n, 3, H, W) float32; each styled with probability 1/2."""
    crops = []
    for _ in range(n):
        crop = random_crop(photos[int(rng.integers(len(photos)))], image_size, rng)
        if rng.random() < STYLE_PROBABILITY:
            emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
            crop = emotion_edit(crop, emotion, float(rng.uniform(0.0, MAX_STYLE_STRENGTH)))
        crops.append(np.asarray(crop, dtype=np.float32).transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(crops)))


def heldout_batch(photos: Sequence[np.ndarray], image_size: int = 64, n: int = HELDOUT_SIZE) -> torch.Tensor:
    """The fixed batch reconstruction is scored and the latent scale is measured on (training never sees
    these crops; the photos are the same, there are only 16)."""
    return make_batch(photos, n, image_size, np.random.default_rng(mix_seed(HELDOUT_SEED)))


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Decode of the posterior mode, in [0, 1]: what the pipeline does to a source image."""
    mode = latent_dist(vae, images).mode()
    return (vae.decode(mode).sample.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def reconstruction_metrics(vae: AutoencoderKL, images: torch.Tensor, batch: int = 16) -> dict:
    """Mean L1 and mean per-image PSNR (dB) of the posterior-mode reconstruction, on the [0, 1] scale."""
    was_training = vae.training
    vae.eval()
    l1, psnr = [], []
    for chunk in images.split(batch):
        diff = reconstruct(vae, chunk) - chunk
        l1.append(diff.abs().flatten(1).mean(1))
        psnr.append(-10 * torch.log10(diff.pow(2).flatten(1).mean(1).clamp_min(1e-10)))
    vae.train(was_training)
    return {"l1": float(torch.cat(l1).mean()), "psnr": float(torch.cat(psnr).mean())}


@torch.no_grad()
def fold_latent_scale(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """Rescale the latent space so that ``latent_dist.mean * LATENT_SCALE`` has unit std on `images`.

    The project multiplies latents by the SD constant LATENT_SCALE (0.18215) everywhere, which is
    only right for a VAE whose latents have std 1/0.18215, as SD's has. Rather than a second
    constant for the tiny VAE, its latents are scaled by k to fit the constant: quant_conv's mean
    half (weight and bias) times k, 2 ln k added to its log-variance bias (the std scales by k too),
    post_quant_conv's weight divided by k. decode(encode(x)) is unchanged (up to float rounding and
    diffusers' logvar clamp to [-30, 20]). Returns k.
    """
    was_training = vae.training
    vae.eval()
    std = torch.cat([latent_dist(vae, chunk).mean for chunk in images.split(16)]).float().std()
    vae.train(was_training)
    if not torch.isfinite(std) or std <= 0:
        raise TrainingError(f"latent std {float(std)} on the held-out batch; cannot fold the latent scale")
    k = float(1.0 / (LATENT_SCALE * std))
    c = vae.config.latent_channels
    quant, post = vae.quant_conv, vae.post_quant_conv
    if quant is None or post is None:
        raise EmoEditorError("fold_latent_scale needs a VAE with quant_conv and post_quant_conv")
    quant.weight[:c] *= k
    quant.bias[:c] *= k
    quant.bias[c:] += 2 * math.log(k)
    post.weight /= k
    return k


def lr_factor(step: int, steps: int) -> float:
    """Linear warmup, then cosine to zero."""
    warmup = min(WARMUP_STEPS, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def _prepare_out_dir(out: Path) -> None:
    """A folder with anything but our own files in it is not ours to replace."""
    if out.exists() and not out.is_dir():
        raise EmoEditorError(f"{out} is a file; pass a folder for the tiny VAE")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in VAE_FILES)
        if foreign:
            raise EmoEditorError(f"{out} holds other files ({', '.join(foreign[:5])}) and no finished VAE; pass an "
                                 f"empty or new folder for the tiny VAE")
    check_writable({"out_dir": out})


def train_tiny_vae(out_dir: str | Path, steps: int = 1500, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                   image_size: int = 64, kl_weight: float = 1e-6, photos: Sequence[str] = TOY_PHOTOS,
                   progress: bool = True) -> dict:
    """Train, fold the latent scale, save to `out_dir` (diffusers layout); returns the measured numbers.

    If `out_dir` already holds a finished VAE its stored summary is returned without training.
    """
    out = Path(out_dir)
    settings = plain(dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, image_size=image_size,
                          kl_weight=kl_weight, photos=list(photos)))
    if finished(out):
        summary = json.loads((out / SUMMARY_FILE).read_text())
        changed = {k: (summary.get("settings", {}).get(k), v) for k, v in settings.items()
                   if summary.get("settings", {}).get(k) != v}
        if changed:
            logger.warning("%s holds a tiny VAE trained with other settings (%s); keeping it. Delete the folder to "
                           "retrain", out, ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        logger.info("tiny VAE already trained in %s; not retraining", out)
        return summary
    if steps < 1 or batch_size < 1:
        raise EmoEditorError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not photos:
        raise EmoEditorError("photos is empty; pass scikit-image photo names (emoeditor.data.toy.TOY_PHOTOS)")
    _prepare_out_dir(out)

    start = time.perf_counter()
    images = load_photos(photos)
    heldout = heldout_batch(images, image_size)
    vae = tiny_vae(seed)
    before = reconstruction_metrics(vae, heldout)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps))
    rng = np.random.default_rng(mix_seed(seed, "vae-data"))
    losses: list[float] = []
    vae.train()
    bar = tqdm(range(steps), desc="tiny VAE", leave=False, disable=not (progress and show_progress()))
    for step in bar:
        x = vae_input(make_batch(images, batch_size, image_size, rng))
        dist = vae.encode(x).latent_dist
        decoded = vae.decode(dist.sample(generator=generator(seed, "vae-posterior", step))).sample
        l1 = F.l1_loss(decoded, x)
        kl = dist.kl().mean()
        loss = l1 + kl_weight * kl
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss at step {step} of the tiny VAE "
                                f"(lr {scheduler.get_last_lr()[0]:.2e}); lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", l1=f"{l1.item() / 2:.4f}")  # L1 on the [0, 1] scale
    train_seconds = time.perf_counter() - start

    vae.eval()
    after = reconstruction_metrics(vae, heldout)
    k = fold_latent_scale(vae, heldout)
    summary = {
        "steps": steps,
        "final_loss": float(np.mean(losses[-LOSS_WINDOW:])),
        "last_loss": losses[-1],
        "heldout_l1_before": before["l1"],
        "heldout_psnr_before": before["psnr"],
        "heldout_l1": after["l1"],
        "heldout_psnr": after["psnr"],
        "fold_k": k,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / steps, 4),
        "heldout_crops": len(heldout),
        "settings": settings,
    }
    logger.info("tiny VAE: held-out L1 %.4f -> %.4f, PSNR %.2f -> %.2f dB after %d steps (%.0f s); latent fold k %.4g",
                before["l1"], after["l1"], before["psnr"], after["psnr"], steps, train_seconds, k)
    _save(vae, summary, out)
    return summary


def _save(vae: AutoencoderKL, summary: dict, out: Path) -> Path:
    """Write under a temporary sibling and rename: a killed run never leaves a folder that looks finished."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        vae.save_pretrained(tmp, safe_serialization=True)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace_dir(tmp, out)
