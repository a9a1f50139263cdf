"""Tiny random-weight versions of every component, saved in the real on-disk layouts.

Tests and the demo build these in code (no download) and then load them back through the
same ``from_pretrained`` paths a user with the real Ip2p / CLIP / predictor weights uses.
Everything is deterministic in `seed`.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderKL, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from emoeditor.constants import TEXT_SEQ_LEN
from emoeditor.models.components import sd_v1_ddim_scheduler, seeded_init
from emoeditor.models.emotion_encoder import EmotionEncoder
from emoeditor.models.predictor import EmotionPredictor, build_resnet18, save_predictor

TINY_IMAGE_SIZE = 64  # >= 51 so the official SSIM window (51) fits
TINY_TEXT_DIM = 32
TINY_ENCODER_HIDDEN = (16, 32, 32)


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    with seeded_init(seed):
        return _tiny_unet()


def _tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 4,
        in_channels=8,  # noisy latent + source-image latent, as InstructPix2Pix
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=8,
        # 4-8 channels per group, like SD's 320-1280 channels in 32 groups. One channel per group would be
        # instance norm, which erases any spatially uniform shift, and with it the emotion conditioning of
        # a global style (the miniature world's editor learned to ignore its condition that way).
        norm_num_groups=8,
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    with seeded_init(seed + 1):
        return _tiny_vae()


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=TINY_IMAGE_SIZE,
    )


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=_vocab_size(), hidden_size=TINY_TEXT_DIM, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=TEXT_SEQ_LEN,
        bos_token_id=_vocab_size() - 2, eos_token_id=_vocab_size() - 1, pad_token_id=_vocab_size() - 1,
    )
    with seeded_init(seed + 2):
        return CLIPTextModel(config).eval()


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: every byte has a printable symbol."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _vocab() -> dict[str, int]:
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def _vocab_size() -> int:
    return 2 * 256 + 2


def write_tiny_vocab(folder: str | Path) -> None:
    """vocab.json + merges.txt of the tiny tokenizer: transformers 4's CLIPTokenizer reads only these,
    and transformers 5's save_pretrained writes only tokenizer.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def save_tiny_tokenizer(folder: str | Path):
    """A character-level CLIP BPE tokenizer (full byte vocab, no merges) written as vocab/merges files."""
    folder = Path(folder)
    write_tiny_vocab(folder)
    # from_pretrained reads vocab.json/merges.txt in both transformers 4 and 5 (their __init__ differ).
    tok = CLIPTokenizer.from_pretrained(folder, model_max_length=TEXT_SEQ_LEN)
    tok.save_pretrained(folder)
    return tok


def tiny_emotion_encoder(seed: int = 0) -> EmotionEncoder:
    with seeded_init(seed + 3):
        return EmotionEncoder(hidden_dims=TINY_ENCODER_HIDDEN, seq_len=TEXT_SEQ_LEN, embed_dim=TINY_TEXT_DIM)


def tiny_predictor(seed: int = 0) -> EmotionPredictor:
    """The real ResNet18 architecture (so it loads into torchvision), random weights, 64px input."""
    with seeded_init(seed + 4):
        return EmotionPredictor(build_resnet18(), image_size=TINY_IMAGE_SIZE).eval()


def save_tiny_base(folder: str | Path, seed: int = 0) -> Path:
    """A tiny InstructPix2Pix folder in the diffusers layout (what timbrooks/instruct-pix2pix holds)."""
    folder = Path(folder)
    tokenizer = save_tiny_tokenizer(folder / "tokenizer")
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=tokenizer,
        unet=tiny_unet(seed), scheduler=sd_v1_ddim_scheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def save_tiny_predictor(folder: str | Path, seed: int = 0) -> Path:
    return save_predictor(tiny_predictor(seed), folder)
