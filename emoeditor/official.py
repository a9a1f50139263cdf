"""The official EmoEditor release (.pt state dicts) as an EmoEditorPipeline.

Official files (ZhangLab-DeepNeuroCogLab/EmoEditor README, test.py):
- ``model/model_ip2p.pt``: state dict of the official InstructPix2Pix module, fp16, keys
  ``unet.*`` and ``auto_encoder.*`` (the fine-tuned UNet and the frozen VAE);
- ``model/model_emoenc.pt``: the emotion encoder, keys ``fc.0/2/4/6``;
- ``emo_predictor/emo_predictor.pt``: torchvision ResNet18 with fc 512 -> 8 (see predictor.py).

All load with ``torch.load(weights_only=True)``. The base InstructPix2Pix folder (or hub id)
only supplies the UNet/VAE *architecture*: every weight comes from the .pt, so the base
weights are not read. The pipeline records the official training convention
(direction input, VAE fed [0, 1] in training); inference feeds the VAE 2x-1 exactly as
official ip2p.py does, so official weights give official results.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel

from .constants import (IP2P_HUB_ID, OFFICIAL_DOWNLOADS, OFFICIAL_EMOENC_FILE, OFFICIAL_PREDICTOR_FILE,
                        OFFICIAL_UNET_FILE)
from .errors import EmoEditorError, MissingWeightsError
from .models.components import check_base_folder, load_base_components, looks_like_hub_id, sd_v1_ddim_scheduler
from .models.emotion_encoder import EmotionEncoder
from .pipeline import EmoEditorPipeline

UNET_PREFIX = "unet."
VAE_PREFIX = "auto_encoder."


class CheckpointMismatchError(EmoEditorError, ValueError):
    """A checkpoint whose keys or shapes do not fit the architecture it is loaded into."""


def _missing(path: Path, what: str, link_key: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what} not found: {path}. Download it from {OFFICIAL_DOWNLOADS[link_key]} and put it in "
        f"{path.parent}/ (or run `python scripts/download_weights.py`, which fetches the official release "
        f"into model/ and emo_predictor/)")


def load_state_dict(path: str | Path, what: str = "checkpoint", link_key: str = "models") -> dict:
    """A .pt state dict, tensors only (weights_only=True), memory-mapped when the format allows."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, what, link_key)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # objects other than tensors, a truncated download, ...
        raise CheckpointMismatchError(f"{path} is not a loadable {what} state dict ({exc}); "
                                      f"re-download it ({OFFICIAL_DOWNLOADS[link_key]})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path} does not hold a state dict of tensors")
    return state


def split_ip2p_state(state: dict, path: str | Path = OFFICIAL_UNET_FILE) -> tuple[dict, dict]:
    """Split the official InstructPix2Pix state into (unet, vae) state dicts."""
    unet = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    vae = {k[len(VAE_PREFIX):]: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    other = [k for k in state if not k.startswith((UNET_PREFIX, VAE_PREFIX))]
    if other or not unet or not vae:
        raise CheckpointMismatchError(
            f"{path}: expected only keys 'unet.*' and 'auto_encoder.*' (official model_ip2p.pt), got "
            f"{len(unet)} unet, {len(vae)} auto_encoder and {len(other)} other keys (e.g. {other[:3]})")
    return unet, vae


def load_into(model: torch.nn.Module, state: dict, path: str | Path, name: str) -> torch.nn.Module:
    """Strict load with a message that names the file and the mismatch, not a torch traceback."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(
            f"{path} does not match the {name} architecture of the base model: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} with "
            f"another shape (e.g. {wrong[:3]}). Use the base the checkpoint was trained from "
            f"({IP2P_HUB_ID} for the official release)")
    model.load_state_dict(state, strict=True, assign=True)
    return model


def emotion_encoder_from_state(state: dict, embed_dim: Optional[int] = None,
                               path: str | Path = OFFICIAL_EMOENC_FILE) -> EmotionEncoder:
    """An EmotionEncoder whose dims are read off the state dict (official: 8-256-512-768-77*768)."""
    linear = sorted((int(m.group(1)), k) for k in state if (m := re.fullmatch(r"fc\.(\d+)\.weight", k)))
    if len(linear) < 2:
        raise CheckpointMismatchError(f"{path}: expected keys fc.<i>.weight/bias of the emotion encoder MLP, "
                                      f"got {sorted(state)[:5]}")
    weights = [state[k] for _, k in linear]
    num_emotions, hidden = weights[0].shape[1], [w.shape[0] for w in weights[:-1]]
    out = weights[-1].shape[0]
    if "null_embedding" in state:
        seq_len, embed_dim = state["null_embedding"].shape
    else:
        embed_dim = embed_dim or hidden[-1]
        seq_len = out // embed_dim
    if seq_len * embed_dim != out:
        raise CheckpointMismatchError(f"{path}: output size {out} is not seq_len x {embed_dim} "
                                      f"(the UNet's cross-attention width)")
    with init_empty_weights():
        encoder = EmotionEncoder(num_emotions=num_emotions, hidden_dims=tuple(hidden), seq_len=seq_len,
                                 embed_dim=embed_dim, learned_null="null_embedding" in state)
    return load_into(encoder, state, path, "emotion encoder")


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
    Weights are kept in float32 unless `torch_dtype` is given (official inference: float16).
    """
    model_dir = Path(model_dir)
    ip2p_path = Path(ip2p_file) if ip2p_file else model_dir / Path(OFFICIAL_UNET_FILE).name
    emoenc_path = Path(emoenc_file) if emoenc_file else model_dir / Path(OFFICIAL_EMOENC_FILE).name
    for path, what in ((ip2p_path, "official UNet/VAE weights"), (emoenc_path, "official emotion encoder")):
        if not path.is_file():
            raise _missing(path, what, "models")

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
    for module in (unet, vae, encoder, parts.get("text_encoder")):
        if module is not None:
            module.to(dtype=dtype).eval().requires_grad_(False)
    parts["scheduler"] = sd_v1_ddim_scheduler()
    return EmoEditorPipeline(unet=unet, vae=vae, emotion_encoder=encoder, **parts,
                             emotion_input="direction", vae_input_range="zero_one", cond_dropout=0.0)


def convert_official(model_dir: str | Path = "model", base: str | Path = IP2P_HUB_ID,
                     out: str | Path = "model/emoeditor", torch_dtype: Optional[torch.dtype] = None,
                     text: bool = False, predictor: Optional[str | Path] = None,
                     predictor_out: Optional[str | Path] = None) -> Path:
    """Write the official release as our safetensors pipeline folder (and predictor folder)."""
    pipe = load_official(model_dir, base, torch_dtype=torch_dtype, text=text)
    out = Path(out)
    pipe.save_pretrained(out, safe_serialization=True)
    if predictor is not None:
        from .predictor import load_predictor, save_predictor

        path = Path(predictor)
        if not path.exists():
            raise _missing(path, "official emotion predictor", "emo_predictor")
        save_predictor(load_predictor(path), predictor_out or path.parent, official_pt=False)
    return out


def official_paths(root: str | Path = ".") -> dict:
    """Where the official release is expected, relative to the repository root."""
    root = Path(root)
    return {"ip2p": root / OFFICIAL_UNET_FILE, "emoenc": root / OFFICIAL_EMOENC_FILE,
            "predictor": root / OFFICIAL_PREDICTOR_FILE}
