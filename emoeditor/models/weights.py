"""Loading state dicts safely (weights_only) and fitting them into our modules.

The official release's .pt files (model_ip2p.pt: unet.* + auto_encoder.*; model_emoenc.pt:
fc.0/2/4/6; emo_predictor.pt: a torchvision ResNet18) load here with torch.load(weights_only=True).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch
from accelerate import init_empty_weights

from emoeditor.constants import IP2P_HUB_ID, OFFICIAL_DOWNLOADS, OFFICIAL_EMOENC_FILE, OFFICIAL_UNET_FILE
from emoeditor.errors import CheckpointMismatchError, MissingWeightsError
from emoeditor.models.emotion_encoder import EmotionEncoder

UNET_PREFIX = "unet."
VAE_PREFIX = "auto_encoder."


def missing_weights(path: Path, what: str, link_key: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what} not found: {path}. Download it from {OFFICIAL_DOWNLOADS[link_key]} and put it in "
        f"{path.parent}/ (or run `python scripts/download_weights.py`, which fetches the official release "
        f"into model/ and emo_predictor/)")


def load_state_dict(path: str | Path, what: str = "checkpoint", link_key: str = "models") -> dict:
    """A .pt state dict, tensors only (weights_only=True), memory-mapped when the format allows."""
    path = Path(path)
    if not path.is_file():
        raise missing_weights(path, what, link_key)
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

