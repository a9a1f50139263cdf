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

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel

from .constants import (CHECKSUM_FILE, IP2P_CONFIG_PATTERNS, IP2P_HUB_ID, IP2P_LOCAL_DIR, IP2P_WEIGHT_PATTERNS,
                        OFFICIAL_DOWNLOADS, OFFICIAL_EMOENC_FILE, OFFICIAL_MIN_BYTES, OFFICIAL_PREDICTOR_FILE,
                        OFFICIAL_UNET_FILE)
from .errors import EmoEditorError, MissingWeightsError
from .fileio import sha256sum
from .models.components import (BASE_SUBFOLDERS, check_base_folder, load_base_components, looks_like_hub_id,
                                sd_v1_ddim_scheduler)
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
    UNet/VAE weights are kept in float32 unless `torch_dtype` is given (official inference:
    float16); the emotion encoder always stays float32, as in the official test.py.
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
    for module in (unet, vae, parts.get("text_encoder")):
        if module is not None:
            module.to(dtype=dtype).eval().requires_grad_(False)
    # official test.py halves only the Ip2p module: the encoder runs in float32, its output is cast
    torch.nn.Module.to(encoder, torch.float32).eval().requires_grad_(False)  # (see inference.load_model)
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


# ---------------------------------------------------------------------------------------------
# Downloading the release (scripts/download_weights.py). The network calls are injected
# (`fetch`, `hub_download`) so the resume and verification logic is testable offline.

@dataclass(frozen=True)
class ReleaseFile:
    path: str  # where it goes, relative to the download root (the repository root)
    source: str  # OFFICIAL_DOWNLOADS key: a Drive file, or a Drive folder holding a file of this name
    min_bytes: int


RELEASE_FILES = (
    ReleaseFile(OFFICIAL_UNET_FILE, "models", OFFICIAL_MIN_BYTES[OFFICIAL_UNET_FILE]),
    ReleaseFile(OFFICIAL_EMOENC_FILE, "models", OFFICIAL_MIN_BYTES[OFFICIAL_EMOENC_FILE]),
    ReleaseFile(OFFICIAL_PREDICTOR_FILE, "emo_predictor", OFFICIAL_MIN_BYTES[OFFICIAL_PREDICTOR_FILE]),
)

Fetch = Callable[[str, Path, str], object]  # (url, destination, file name inside a Drive folder)


def read_checksums(folder: str | Path) -> dict:
    """``sha256sum``-format SHA256SUMS of a folder as {file name: hex digest}."""
    path = Path(folder) / CHECKSUM_FILE
    if not path.exists():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            sums[name.lstrip("*")] = digest
    return sums


def record_checksum(folder: str | Path, name: str, digest: str) -> None:
    sums = read_checksums(folder)
    sums[name] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items()))
    (Path(folder) / CHECKSUM_FILE).write_text(text)


def torch_file_problem(path: str | Path, min_bytes: int = 0) -> Optional[str]:
    """Why `path` is not a complete torch.save file, or None: size floor, then every zip CRC."""
    path = Path(path)
    size = path.stat().st_size
    if size < min_bytes:
        head = path.read_bytes()[:512].lstrip().lower()
        kind = " (an HTML page: Google Drive's quota/virus-scan notice?)" if head.startswith((b"<!doctype", b"<html")) else ""
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


def _verify_present(path: Path, file: ReleaseFile) -> Optional[str]:
    recorded = read_checksums(path.parent).get(path.name)
    if recorded is not None:
        return None if sha256sum(path) == recorded else f"sha256 differs from {path.parent / CHECKSUM_FILE}"
    problem = torch_file_problem(path, file.min_bytes)
    if problem is None:
        record_checksum(path.parent, path.name, sha256sum(path))
    return problem


def fetch_release_file(file: ReleaseFile, root: str | Path, fetch: Fetch, force: bool = False) -> str:
    """Make `file` present and verified under `root`; returns "present" or "downloaded".

    The transfer goes to ``<name>.download`` (the fetcher resumes partial data there) and is only
    renamed into place after it verifies, so an interrupted run never leaves a bad final file;
    a complete ``.download`` left by a crash is verified and promoted without fetching again.
    """
    dest = Path(root) / file.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = OFFICIAL_DOWNLOADS[file.source]
    if dest.exists() and not force:
        problem = _verify_present(dest, file)
        if problem is None:
            return "present"
        print(f"{dest}: {problem}; downloading it again")
    stage = dest.with_name(dest.name + ".download")
    if not (stage.exists() and torch_file_problem(stage, file.min_bytes) is None):
        stage.unlink(missing_ok=True)  # a complete-looking but bad stage is useless; partials live with the fetcher
        fetch(url, stage, dest.name)
        if not stage.exists():
            raise MissingWeightsError(f"downloading {dest.name} from {url} produced no file; "
                                      f"download it by hand and put it at {dest}")
        problem = torch_file_problem(stage, file.min_bytes)
        if problem is not None:
            stage.unlink()
            raise MissingWeightsError(
                f"downloaded {dest.name} is unusable: {problem}. Run the script again later (Drive limits "
                f"downloads per day), or download it by hand from {url} and put it at {dest}")
    stage.replace(dest)
    record_checksum(dest.parent, dest.name, sha256sum(dest))
    return "downloaded"


def gdown_fetch(url: str, dest: Path, name: str) -> None:
    """Fetch one file with gdown (resumable); for a Drive folder URL, the file called `name` in it."""
    try:
        import gdown
    except ImportError as exc:
        raise EmoEditorError(f"downloading from Google Drive needs gdown: `pip install gdown` (or "
                             f"`pip install emoeditor[download]`), or download {url} by hand") from exc
    if "/folders/" in url:
        listing = gdown.download_folder(url=url, skip_download=True, quiet=True)
        match = [f for f in listing if Path(f.path).name == name]
        if not match:
            raise MissingWeightsError(f"{name} is not in the Drive folder {url} (it holds "
                                      f"{', '.join(Path(f.path).name for f in listing) or 'nothing visible'})")
        file_id = match[0].id
    else:
        found = re.search(r"/d/([\w-]+)", url) or re.search(r"[?&]id=([\w-]+)", url)
        if not found:
            raise EmoEditorError(f"cannot read a Google Drive file id from {url}")
        file_id = found.group(1)
    # resume=True continues gdown's own partial file (<dest>XXXXXXXX.part) from an interrupted run.
    if gdown.download(id=file_id, output=str(dest), resume=True) is None:
        raise MissingWeightsError(f"Google Drive refused {name} ({url}); try later or download it by hand")


def download_base(local_dir: str | Path = IP2P_LOCAL_DIR, hub_id: str = IP2P_HUB_ID, config_only: bool = False,
                  hub_download: Optional[Callable] = None) -> Path:
    """Snapshot the base InstructPix2Pix (safetensors only) and check it is complete.

    `config_only` fetches just the configs (kilobytes): enough for official inference, whose
    weights all come from model_ip2p.pt; training needs the weights too.
    """
    if hub_download is None:
        from huggingface_hub import snapshot_download as hub_download
    patterns = list(IP2P_CONFIG_PATTERNS) + ([] if config_only else list(IP2P_WEIGHT_PATTERNS))
    local_dir = Path(local_dir)
    hub_download(repo_id=hub_id, local_dir=str(local_dir), allow_patterns=patterns)  # resumes by itself
    check_base_folder(local_dir, ("unet", "vae") if config_only else BASE_SUBFOLDERS)
    problems = [] if config_only else [
        f"{p}: missing" if not (local_dir / p).exists() else f"{p}: {safetensors_problem(local_dir / p)}"
        for p in IP2P_WEIGHT_PATTERNS
        if not (local_dir / p).exists() or safetensors_problem(local_dir / p) is not None]
    if problems:
        raise MissingWeightsError(f"incomplete base model in {local_dir}: {'; '.join(problems)}. Run the "
                                  f"script again to resume, or `huggingface-cli download {hub_id} --local-dir {local_dir}`")
    return local_dir


def download_release(root: str | Path = ".", parts: Sequence[str] = ("models", "emo_predictor", "base"),
                     fetch: Optional[Fetch] = None, hub_download: Optional[Callable] = None,
                     base_dir: Optional[str | Path] = None, base_config_only: bool = False,
                     force: bool = False, files: Optional[Sequence[ReleaseFile]] = None) -> dict:
    """Fetch the official release into model/ and emo_predictor/ (+ the base Ip2p); {path: status}."""
    fetch = fetch or gdown_fetch
    status = {}
    for file in RELEASE_FILES if files is None else files:
        if file.source in parts:
            status[file.path] = fetch_release_file(file, root, fetch, force)
    if "base" in parts:
        base_dir = Path(base_dir) if base_dir else Path(root) / IP2P_LOCAL_DIR
        download_base(base_dir, config_only=base_config_only, hub_download=hub_download)
        status[str(base_dir)] = "ready (configs only)" if base_config_only else "ready"
    return status
