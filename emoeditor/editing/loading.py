"""Loading a model for editing: our exported pipeline folder or the official .pt release -> EmoEditorPipeline.

Official files (ZhangLab-DeepNeuroCogLab/EmoEditor README, test.py):
- ``model/model_ip2p.pt``: state dict of the official InstructPix2Pix module, fp16, keys
  ``unet.*`` and ``auto_encoder.*`` (the fine-tuned UNet and the frozen VAE);
- ``model/model_emoenc.pt``: the emotion encoder, keys ``fc.0/2/4/6``;
- ``emo_predictor/emo_predictor.pt``: torchvision ResNet18 with fc 512 -> 8 (see predictor.py).

All load with ``torch.load(weights_only=True)``. The base InstructPix2Pix folder (or hub id)
only supplies the UNet/VAE *architecture*: every weight comes from the .pt, so the base
weights are not read. The pipeline's config records the official conventions as they are:
direction input, the VAE fed [0, 1] in training (``vae_input_range="zero_one"``) but 2x-1 at
inference (``inference_vae_input_range="minus_one_one"``, which the edit reads), exactly as
official ip2p.py does, so official weights give official results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel

from emoeditor.constants import IP2P_HUB_ID, OFFICIAL_DOWNLOADS, OFFICIAL_EMOENC_FILE, OFFICIAL_UNET_FILE
from emoeditor.editing.pipeline import EmoEditorPipeline
from emoeditor.errors import MissingWeightsError
from emoeditor.models.components import (
    check_base_folder,
    load_base_components,
    looks_like_hub_id,
    sd_v1_ddim_scheduler,
)
from emoeditor.models.predictor import load_predictor, save_predictor
from emoeditor.models.weights import (
    emotion_encoder_from_state,
    load_into,
    load_state_dict,
    missing_weights,
    split_ip2p_state,
)


def load_model(model_dir: str | Path, base_model: str | Path = IP2P_HUB_ID, torch_dtype: Optional[torch.dtype] = None,
               device: str | torch.device = "cpu"):
    """An EmoEditorPipeline from our exported folder (model_index.json) or the official .pt release."""
    model_dir = Path(model_dir)
    if (model_dir / "model_index.json").is_file():
        kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        pipe = EmoEditorPipeline.from_pretrained(model_dir, local_files_only=True, **kwargs)
    elif (model_dir / Path(OFFICIAL_UNET_FILE).name).is_file() or not model_dir.exists():
        pipe = load_official(model_dir, base_model, torch_dtype=torch_dtype)  # names the missing files
    else:
        raise MissingWeightsError(
            f"{model_dir} holds neither an exported EmoEditor pipeline (model_index.json) nor the official "
            f"{Path(OFFICIAL_UNET_FILE).name} + {Path(OFFICIAL_EMOENC_FILE).name} "
            f"(download: {OFFICIAL_DOWNLOADS['models']}, or run scripts/download_weights.py). "
            f"For a model you trained, pass --model_dir save_models/model (train.py's export folder)")
    # as official test.py: only the UNet/VAE run in half precision. nn.Module.to, not ModelMixin.to,
    # whose dtype cast logs a spurious 'should be kept in float32: []' warning (diffusers 0.42).
    torch.nn.Module.to(pipe.emotion_encoder, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _architecture(base: str | Path, subfolder: str, cls):
    """A model of the base's architecture without reading the base weights (the .pt supplies them)."""
    base = str(base)
    kwargs = {} if looks_like_hub_id(base) else {"local_files_only": True}
    if not looks_like_hub_id(base):
        check_base_folder(base, (subfolder,))
    config = cls.load_config(base, subfolder=subfolder, **kwargs)
    with init_empty_weights():
        return cls.from_config(config)


def load_official(model_dir: str | Path = "model", base: str | Path = IP2P_HUB_ID,
                  torch_dtype: Optional[torch.dtype] = None, text: bool = False,
                  ip2p_file: Optional[str | Path] = None, emoenc_file: Optional[str | Path] = None
                  ) -> EmoEditorPipeline:
    """Official ``model_ip2p.pt`` + ``model_emoenc.pt`` as an EmoEditorPipeline.

    `base` (local InstructPix2Pix folder or hub id) gives the UNet/VAE architecture; with
    `text` its CLIP text encoder/tokenizer are added too (only training's L_emb uses them).
    UNet/VAE weights are kept in float32 unless `torch_dtype` is given (official inference:
    float16); the emotion encoder always stays float32, as in the official test.py.
    """
    model_dir = Path(model_dir)
    ip2p_path = Path(ip2p_file) if ip2p_file else model_dir / Path(OFFICIAL_UNET_FILE).name
    emoenc_path = Path(emoenc_file) if emoenc_file else model_dir / Path(OFFICIAL_EMOENC_FILE).name
    for path, what in ((ip2p_path, "official UNet/VAE weights"), (emoenc_path, "official emotion encoder")):
        if not path.is_file():
            raise missing_weights(path, what, "models")

    unet_state, vae_state = split_ip2p_state(load_state_dict(ip2p_path), ip2p_path)
    if text:
        parts = load_base_components(base, text=True)
        unet, vae = parts.pop("unet"), parts.pop("vae")
    else:
        parts = {}
        unet = _architecture(base, "unet", UNet2DConditionModel)
        vae = _architecture(base, "vae", AutoencoderKL)
    load_into(unet, unet_state, ip2p_path, "UNet")
    load_into(vae, vae_state, ip2p_path, "VAE (auto_encoder)")
    encoder = emotion_encoder_from_state(load_state_dict(emoenc_path, "official emotion encoder"),
                                         unet.config.cross_attention_dim, emoenc_path)
    dtype = torch_dtype or torch.float32
    for module in (unet, vae, parts.get("text_encoder")):
        if module is not None:
            module.to(dtype=dtype).eval().requires_grad_(False)
    # official test.py halves only the Ip2p module: the encoder runs in float32, its output is cast
    torch.nn.Module.to(encoder, torch.float32).eval().requires_grad_(False)  # (see load_model)
    parts["scheduler"] = sd_v1_ddim_scheduler()
    return EmoEditorPipeline(unet=unet, vae=vae, emotion_encoder=encoder, **parts, emotion_input="direction",
                             vae_input_range="zero_one", inference_vae_input_range="minus_one_one", cond_dropout=0.0)


def convert_official(model_dir: str | Path = "model", base: str | Path = IP2P_HUB_ID,
                     out: str | Path = "model/emoeditor", torch_dtype: Optional[torch.dtype] = None,
                     text: bool = False, predictor: Optional[str | Path] = None,
                     predictor_out: Optional[str | Path] = None) -> Path:
    """Write the official release as our safetensors pipeline folder (and predictor folder)."""
    pipe = load_official(model_dir, base, torch_dtype=torch_dtype, text=text)
    out = Path(out)
    pipe.save_pretrained(out, safe_serialization=True)
    if predictor is not None:
        path = Path(predictor)
        if not path.exists():
            raise missing_weights(path, "official emotion predictor", "emo_predictor")
        save_predictor(load_predictor(path), predictor_out or path.parent, official_pt=False)
    return out

