"""Shards: items assigned by a stable hash of their id, each shard's results written atomically in one file.

A shard file is ``{"header": ..., "records": [...], "corrupt": [...]}``. The header records the stage,
the shard's place (id, count) and the digests of what decides its results (predictor, thresholds,
instruction bank, editing settings): a rerun skips a shard whose file has the same header, and the
merge refuses one written with anything else. An interrupted run loses only the shard in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from emoeditor.errors import EmoEditorError
from emoeditor.fileio import atomic_write_text, plain

logger = logging.getLogger(__name__)

SHARD_GLOB = "shard-*.json"


def digest_of(value: object) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(plain(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a model's weights (names, dtypes, shapes, bytes): the same for any file format holding them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def predictor_digest(predictor) -> str:
    """P's weights and its input convention (size, normalisation): both decide its labels."""
    return digest_of({"weights": module_digest(predictor), "config": predictor.config})


def shard_of(item_id: str, num_shards: int) -> int:
    """The shard of an item: sha256 of its id, so it never depends on listing order, machine or Python run."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little") % num_shards


def shard_path(work_dir: str | Path, shard_id: int, num_shards: int) -> Path:
    return Path(work_dir) / f"shard-{shard_id:05d}-of-{num_shards:05d}.json"


def read_shard(path: str | Path) -> dict:
    """A shard file's content; EmoEditorError naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmoEditorError(f"shard {path}: unreadable ({exc}); delete it and rerun that shard") from None
    if not isinstance(data, dict) or not {"header", "records", "corrupt"} <= set(data):
        raise EmoEditorError(f"shard {path}: not a curation shard (needs header, records, corrupt); delete it")
    return data


def is_finished(path: Path, header: dict) -> bool:
    """Whether `path` holds this shard done with exactly this header; a shard from other settings is redone."""
    if not path.is_file():
        return False
    try:
        found = read_shard(path)["header"]
    except EmoEditorError as exc:
        logger.warning("%s; redoing the shard", exc)
        return False
    if found != plain(header):
        logger.warning("%s was written with other settings (%s); redoing it", path, ", ".join(
            key for key in sorted(set(found) | set(header)) if found.get(key) != plain(header).get(key)))
        return False
    return True


def write_shard(path: Path, header: dict, records: Sequence[dict], corrupt: Sequence[dict]) -> Path:
    """Atomically, records sorted by id, so the file depends only on the shard's items."""
    data = {"header": header, "records": sorted(records, key=lambda r: r["id"]),
            "corrupt": sorted(corrupt, key=lambda r: r["id"])}
    return atomic_write_text(path, json.dumps(plain(data), indent=1) + "\n")


def process_split() -> tuple[int, int]:
    """(process index, process count): accelerate's PartialState under `accelerate launch` / torchrun, else (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def my_shards(num_shards: int, shard_ids: Optional[Iterable[int]] = None,
              split: Optional[tuple[int, int]] = None) -> list[int]:
    """The shards this process runs: the ones asked for (default all), dealt round-robin over the processes."""
    if num_shards < 1:
        raise EmoEditorError(f"--num_shards must be >= 1, got {num_shards}")
    wanted = sorted(set(range(num_shards) if shard_ids is None else shard_ids))
    outside = [s for s in wanted if not 0 <= s < num_shards]
    if outside:
        raise EmoEditorError(f"--shard_id {outside} outside 0..{num_shards - 1} (--num_shards {num_shards})")
    index, count = split or process_split()
    return wanted[index::count]
