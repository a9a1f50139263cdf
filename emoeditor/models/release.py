"""The official release on disk: where its files go, downloading them (gdown / the hub) and
verifying them (size, zip/CRC, sha256). The network calls are injected so it is testable offline.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from huggingface_hub import snapshot_download

from emoeditor.constants import (
    CHECKSUM_FILE,
    IP2P_CONFIG_PATTERNS,
    IP2P_HUB_ID,
    IP2P_LOCAL_DIR,
    IP2P_WEIGHT_PATTERNS,
    OFFICIAL_DOWNLOADS,
    OFFICIAL_EMOENC_FILE,
    OFFICIAL_MIN_BYTES,
    OFFICIAL_PREDICTOR_FILE,
    OFFICIAL_UNET_FILE,
)
from emoeditor.errors import EmoEditorError, MissingWeightsError
from emoeditor.fileio import atomic_write_text, sha256sum
from emoeditor.logs import show_progress
from emoeditor.models.components import BASE_SUBFOLDERS, check_base_folder
from emoeditor.models.weights import safetensors_problem, torch_file_problem

logger = logging.getLogger(__name__)

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
    """Add or update `name` in the folder's SHA256SUMS, atomically (a crash keeps the previous sums)."""
    sums = read_checksums(folder)
    sums[name] = digest
    atomic_write_text(Path(folder) / CHECKSUM_FILE, "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))


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
        logger.warning("%s: %s; downloading it again", dest, problem)
    stage = dest.with_name(dest.name + ".download")
    if not (stage.exists() and torch_file_problem(stage, file.min_bytes) is None):
        stage.unlink(missing_ok=True)  # a complete-looking but bad stage is useless; partials live with the fetcher
        try:
            fetch(url, stage, dest.name)
        except EmoEditorError:
            raise
        except Exception as exc:  # the network library's own errors (no network, refused, timed out, ...)
            raise MissingWeightsError(
                f"downloading {dest.name} from {url} failed ({_first_line(exc)}). Run the script again to resume "
                f"when the network is back, or download the file by hand and put it at {dest}") from None
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


def _first_line(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


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
    if gdown.download(id=file_id, output=str(dest), resume=True, quiet=not show_progress()) is None:
        raise MissingWeightsError(f"Google Drive refused {name} ({url}); try later or download it by hand")


def download_base(local_dir: str | Path = IP2P_LOCAL_DIR, hub_id: str = IP2P_HUB_ID, config_only: bool = False,
                  hub_download: Optional[Callable] = None) -> Path:
    """Snapshot the base InstructPix2Pix (safetensors only) and check it is complete.

    `config_only` fetches just the configs (kilobytes): enough for official inference, whose
    weights all come from model_ip2p.pt; training needs the weights too.
    """
    hub_download = hub_download or snapshot_download
    patterns = list(IP2P_CONFIG_PATTERNS) + ([] if config_only else list(IP2P_WEIGHT_PATTERNS))
    local_dir = Path(local_dir)
    try:
        hub_download(repo_id=hub_id, local_dir=str(local_dir), allow_patterns=patterns)  # resumes by itself
    except EmoEditorError:
        raise
    except Exception as exc:  # huggingface_hub's errors: offline mode, no network, unknown repo, ...
        offline = " (HF_HUB_OFFLINE is set: downloads are off)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise MissingWeightsError(
            f"could not fetch {hub_id} into {local_dir}{offline}: {_first_line(exc)}. On a machine with network "
            f"run the script again (it resumes), or copy a local copy of {hub_id} (diffusers layout) to "
            f"{local_dir}") from None
    check_base_folder(local_dir, ("unet", "vae") if config_only else BASE_SUBFOLDERS)
    problems = [] if config_only else [
        f"{p}: missing" if not (local_dir / p).exists() else f"{p}: {safetensors_problem(local_dir / p)}"
        for p in IP2P_WEIGHT_PATTERNS
        if not (local_dir / p).exists() or safetensors_problem(local_dir / p) is not None]
    if problems:
        raise MissingWeightsError(f"incomplete base model in {local_dir}: {'; '.join(problems)}. Run the "
                                  f"script again to resume, or "
                                  f"`huggingface-cli download {hub_id} --local-dir {local_dir}`")
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
