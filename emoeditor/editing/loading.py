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

import json
import os
from pathlib import Path
from typing import Optional

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel

from emoeditor.constants import IP2P_HUB_ID, OFFICIAL_DOWNLOADS, OFFICIAL_EMOENC_FILE, OFFICIAL_UNET_FILE
from emoeditor.editing.pipeline import EmoEditorPipeline
from emoeditor.errors import CheckpointMismatchError, MissingWeightsError
from emoeditor.fileio import missing_path
from emoeditor.models.components import (
    cast,
    check_base_folder,
    dtype_kwargs,
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
    unloadable_folder,
)

WHERE_MODELS_COME_FROM = (
    f"An EmoEditor model is a folder train.py exported (save_models/model; `make demo` writes a tiny one to "
    f"runs/demo/model), or one holding the official {Path(OFFICIAL_UNET_FILE).name} + "
    f"{Path(OFFICIAL_EMOENC_FILE).name} "
    f"(download: {OFFICIAL_DOWNLOADS['models']}, or `python scripts/download_weights.py`)")


def load_model(model_dir: str | Path, base_model: str | Path = IP2P_HUB_ID, torch_dtype: Optional[torch.dtype] = None,
               device: str | torch.device = "cpu"):
    """An EmoEditorPipeline from our exported folder (model_index.json) or the official .pt release."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise MissingWeightsError(f"{missing_path(model_dir, 'model folder')}. {WHERE_MODELS_COME_FROM}")
    if (model_dir / "model_index.json").is_file():
        pipe = _load_exported(model_dir, torch_dtype)
    elif (model_dir / Path(OFFICIAL_UNET_FILE).name).is_file():
        pipe = load_official(model_dir, base_model, torch_dtype=torch_dtype)  # names the missing files
    else:
        raise MissingWeightsError(
            f"{model_dir} holds neither an exported EmoEditor pipeline (model_index.json) nor the official "
            f"{Path(OFFICIAL_UNET_FILE).name}. {WHERE_MODELS_COME_FROM}")
    # as official test.py: only the UNet/VAE run in half precision. nn.Module.to, not ModelMixin.to,
    # whose dtype cast logs a spurious 'should be kept in float32: []' warning (diffusers 0.42).
    torch.nn.Module.to(pipe.emotion_encoder, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _load_exported(model_dir: Path, torch_dtype: Optional[torch.dtype]) -> EmoEditorPipeline:
    """EmoEditorPipeline.from_pretrained, with a base Ip2p folder and unloadable weights named as such."""
    index = _read_index(model_dir)
    if "emotion_encoder" not in index:
        kind = index.get("_class_name", "a diffusers pipeline")
        raise MissingWeightsError(
            f"{model_dir} is a base InstructPix2Pix folder ({kind}, no emotion_encoder/), not an EmoEditor "
            f"model. Pass it as --base_model (the architecture an official release is loaded into, and the "
            f"start of training: `python train.py --base_model {model_dir} ...`). {WHERE_MODELS_COME_FROM}")
    try:
        return EmoEditorPipeline.from_pretrained(model_dir, local_files_only=True, **dtype_kwargs(torch_dtype))
    except (OSError, ValueError, RuntimeError) as exc:  # diffusers reports every unloadable file as one of these
        raise unloadable_folder(model_dir, exc, "an EmoEditor model", "Re-export it with train.py") from None


def _read_index(model_dir: Path) -> dict:
    try:
        index = json.loads((model_dir / "model_index.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointMismatchError(f"{model_dir}/model_index.json is not valid JSON ({exc}); re-export the "
                                      f"model with train.py") from None
    if not isinstance(index, dict):
        raise CheckpointMismatchError(f"{model_dir}/model_index.json is not a JSON object; re-export the model")
    return index


def _architecture(base: str | Path, subfolder: str, cls):
    """A model of the base's architecture without reading the base weights (the .pt supplies them)."""
    base = str(base)
    kwargs = {} if looks_like_hub_id(base) else {"local_files_only": True}
    if not looks_like_hub_id(base):
        check_base_folder(base, (subfolder,))
    try:
        config = cls.load_config(base, subfolder=subfolder, **kwargs)
    except OSError as exc:  # a hub id with no network (or HF_HUB_OFFLINE), or an unreadable config.json
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        reason = (str(exc).strip().splitlines() or [""])[0].rstrip(".")
        raise MissingWeightsError(
            f"could not read the {subfolder} config of the base model {base}{offline}: {reason}. "
            f"Pass --base_model a local InstructPix2Pix folder "
            f"(`python scripts/download_weights.py --parts base --base_config_only` fetches its configs, a few "
            f"kilobytes), or run with network") from None
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
            cast(module, dtype).eval().requires_grad_(False)
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
