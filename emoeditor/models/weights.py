"""Loading state dicts safely (weights_only) and fitting them into our modules.

The official release's .pt files (model_ip2p.pt: unet.* + auto_encoder.*; model_emoenc.pt:
fc.0/2/4/6; emo_predictor.pt: a torchvision ResNet18) load here with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Optional

import torch
from accelerate import init_empty_weights

from emoeditor.constants import IP2P_HUB_ID, OFFICIAL_DOWNLOADS, OFFICIAL_EMOENC_FILE, OFFICIAL_UNET_FILE
from emoeditor.errors import CheckpointMismatchError, MissingWeightsError
from emoeditor.models.emotion_encoder import EmotionEncoder

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
UNET_PREFIX = "unet."
VAE_PREFIX = "auto_encoder."


def missing_weights(path: Path, what: str, link_key: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what} not found: {path}. Download it from {OFFICIAL_DOWNLOADS[link_key]} and put it in "
        f"{path.parent}/ (or run `python scripts/download_weights.py`, which fetches the official release "
        f"into model/ and emo_predictor/)")


# How torch's weights_only unpickler names what it refused (torch 2.4: "Unsupported class X"; later
# "Unsupported global: GLOBAL X ...", "unsupported GLOBAL X whose module ... is blocked").
_REFUSED = re.compile(r"GLOBAL\s+([\w.]+)|Unsupported class\s+([\w.]+)|unrecognized function\s*([\w.]*)", re.I)


def refused_pickle(exc: BaseException) -> Optional[str]:
    """The Python object a weights_only load refused to unpickle ("" if unnamed), or None for other errors."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    found = _REFUSED.search(str(exc))
    return None if found is None else next((g for g in found.groups() if g), "")


def refused_pickle_error(path: str | Path, what: str, name: str) -> CheckpointMismatchError:
    named = f" ({name})" if name else ""
    return CheckpointMismatchError(
        f"{path} was not loaded: besides tensors it contains pickled Python objects{named}, which is "
        f"code-bearing data (unpickling it can run arbitrary code), and only tensors are ever loaded. For the "
        f"{what}, use a file that holds tensors only: the official release, a safetensors file, or one saved "
        f"as `torch.save(model.state_dict(), path)` rather than the whole model object")


def _reason(exc: BaseException) -> str:
    """One line of what went wrong, never torch's advice to turn the weights_only check off."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*([^\n]*)", text)
    line = found.group(1) if found else (text.strip().splitlines() or [""])[0]
    line = "" if re.search(r"weights.only", line, re.I) else line[:160]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


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
        name = refused_pickle(exc)
        if name is not None:
            raise refused_pickle_error(path, what, name) from None
        raise CheckpointMismatchError(
            f"{path} is not a readable {what} file ({_reason(exc)}): it is truncated or not a torch.save "
            f"file; download it again ({OFFICIAL_DOWNLOADS[link_key]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path} does not hold a state dict of tensors")
    return state


def torch_file_problem(path: str | Path, min_bytes: int = 0) -> Optional[str]:
    """Why `path` is not a complete torch.save file, or None: size floor, then every zip CRC."""
    path = Path(path)
    size = path.stat().st_size
    if size < min_bytes:
        head = path.read_bytes()[:512].lstrip().lower()
        html = head.startswith((b"<!doctype", b"<html"))
        kind = " (an HTML page: Google Drive's quota/virus-scan notice?)" if html else ""
        return f"only {size:,} bytes, expected at least {min_bytes:,}{kind}"
    if not zipfile.is_zipfile(path):
        return "not a torch.save zip archive (truncated or not a checkpoint)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"unreadable zip archive ({exc})"
    return f"CRC mismatch in {bad} (corrupted transfer)" if bad else None


def safetensors_problem(path: str | Path) -> Optional[str]:
    """Why a .safetensors file is incomplete, or None: its header states the exact file size."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                return f"header length {header_len} does not fit a {size:,}-byte file"
            header = json.loads(f.read(header_len))
    except (ValueError, OSError) as exc:
        return f"unreadable safetensors header ({exc})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_len + end
    return None if size == expected else f"{size:,} bytes, its header says {expected:,} (truncated?)"


def unloadable_folder(folder: str | Path, exc: Exception, what: str, fix: str) -> CheckpointMismatchError:
    """Which file of a diffusers folder failed to load and why, found with our own checks (diffusers
    reports a refused pickle, a truncated file and a foreign one all as one OSError)."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".safetensors" and safetensors_problem(path) is not None:
            return CheckpointMismatchError(f"{path}: {safetensors_problem(path)}. {fix} (or copy the file again)")
        if path.suffix in PICKLE_SUFFIXES:
            try:
                load_state_dict(path, f"{path.parent.name} weights")
            except CheckpointMismatchError as problem:
                return problem
    return CheckpointMismatchError(f"{folder} could not be loaded as {what} ({_reason(exc)}). {fix}, or check "
                                   f"that every component folder is complete")


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

