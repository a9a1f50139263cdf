"""Loading the pretrained InstructPix2Pix components a model is built on.

A base is a local folder in the diffusers InstructPix2Pix layout (unet/, vae/, text_encoder/,
tokenizer/, scheduler/) or a hub id for users with network. The scheduler is always the SD v1
DDIM config the official code swaps in, built from constants so it needs no download.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Optional

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from emoeditor.constants import IP2P_HUB_ID, SD_V1_DDIM_CONFIG
from emoeditor.errors import MissingWeightsError

BASE_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer")


@contextmanager
def seeded_init(seed: int):
    """Build modules from `seed` without touching the caller's random stream.

    nn.Module constructors take no generator and draw from torch's global RNG, so the global
    state is forked (CPU) and restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def sd_v1_ddim_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SD_V1_DDIM_CONFIG)


# The first releases whose from_pretrained takes `dtype` (and warns on `torch_dtype`, the only name before).
DTYPE_KWARG_SINCE = {"diffusers": (0, 40), "transformers": (4, 56)}


def dtype_kwargs(dtype: Optional[torch.dtype], library: str = "diffusers") -> dict:
    """The dtype keyword of `library`'s from_pretrained: `dtype` where it is known, else `torch_dtype`."""
    if dtype is None:
        return {}
    installed = tuple(int(x) for x in re.findall(r"\d+", version(library))[:2])
    name = "dtype" if installed >= DTYPE_KWARG_SINCE[library] else "torch_dtype"
    return {name: dtype}


def cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast a loaded model's weights. diffusers' ModelMixin.to warns about the modules it keeps in float32
    even when there are none (SD's UNet and VAE), so those models are cast as plain modules."""
    if getattr(model, "_keep_in_fp32_modules", None):
        return model.to(dtype=dtype)  # then the warning is real
    return torch.nn.Module.to(model, dtype)


def looks_like_hub_id(spec: str) -> bool:
    return not Path(spec).exists() and spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def check_base_folder(path: str | Path, subfolders=BASE_SUBFOLDERS) -> Path:
    path = Path(path)
    missing = [s for s in subfolders if not (path / s).is_dir()]
    if missing:
        raise MissingWeightsError(
            f"{path} is not a diffusers InstructPix2Pix folder (missing {', '.join(missing)}/). "
            f"Pass a local copy of {IP2P_HUB_ID} (e.g. `huggingface-cli download {IP2P_HUB_ID} "
            f"--local-dir {path}`), or the hub id itself if this machine has network")
    return path


def load_base_components(spec: str | Path = IP2P_HUB_ID, torch_dtype: Optional[torch.dtype] = None,
                         text: bool = True) -> dict:
    """unet, vae, scheduler (+ text_encoder, tokenizer when `text`) from a folder or hub id."""
    spec = str(spec)
    kwargs: dict = {}
    if not looks_like_hub_id(spec):
        check_base_folder(spec, BASE_SUBFOLDERS if text else ("unet", "vae"))
        kwargs["local_files_only"] = True
    diffusers_kwargs = {**kwargs, **dtype_kwargs(torch_dtype, "diffusers")}
    try:
        parts = {
            "unet": UNet2DConditionModel.from_pretrained(spec, subfolder="unet", **diffusers_kwargs),
            "vae": AutoencoderKL.from_pretrained(spec, subfolder="vae", **diffusers_kwargs),
            "scheduler": sd_v1_ddim_scheduler(),
        }
        if text:
            parts["text_encoder"] = CLIPTextModel.from_pretrained(
                spec, subfolder="text_encoder", **kwargs, **dtype_kwargs(torch_dtype, "transformers"))
            parts["tokenizer"] = CLIPTokenizer.from_pretrained(spec, subfolder="tokenizer", **kwargs)
    except (OSError, ValueError) as exc:
        if "local_files_only" in kwargs:
            from emoeditor.models.weights import unloadable_folder

            raise unloadable_folder(spec, exc, "a base InstructPix2Pix",
                                    f"Download or copy {IP2P_HUB_ID} into it again") from None
        # A mistyped local path like "runs/base" looks like a hub id: say both readings failed.
        from emoeditor.fileio import missing_path

        reason = str(exc).splitlines()[0].rstrip(".")
        raise MissingWeightsError(
            f"{missing_path(spec, 'base model folder')}, and loading it as a hub id failed ({reason}). Pass a "
            f"local InstructPix2Pix folder, or {IP2P_HUB_ID} on a machine with network") from None
    return parts
