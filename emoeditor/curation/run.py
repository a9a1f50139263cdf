"""The sharded loop both stages share, and the image handling they have in common.

Each shard this process owns is skipped when its file is already done with the same header;
otherwise the source is streamed once for the shard's items, the stage's `process` turns them into
records (every candidate, with its scores) and corrupt inputs, and the shard file is written atomically.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from emoeditor.curation.shards import is_finished, shard_of, shard_path, write_shard
from emoeditor.curation.sources import Corrupt, Entry
from emoeditor.errors import ImageLoadError
from emoeditor.fileio import atomic_write
from emoeditor.imageio import pil_to_tensor
from emoeditor.logs import show_progress

logger = logging.getLogger(__name__)

JPEG_QUALITY = 95
Process = Callable[[Iterator[Entry]], tuple[list[dict], list[dict]]]


def chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def load_chunk(entries: Sequence[Entry], load: Callable[[Entry], object],
               pool: Optional[ThreadPoolExecutor]) -> tuple[list, list[dict]]:
    """(loaded, corrupt) for a chunk, in order: `load` runs on the thread pool (PIL decodes without the GIL,
    and decoding is what bounds a GPU run); a Corrupt entry or an ImageLoadError becomes a corrupt record."""
    def one(entry: Entry):
        if isinstance(entry, Corrupt):
            return None, {"id": entry.id, "problem": entry.problem}
        try:
            return load(entry), None
        except ImageLoadError as exc:
            return None, {"id": entry.id, "problem": str(exc)}

    results = list(pool.map(one, entries) if pool is not None else map(one, entries))
    return [r for r, _ in results if r is not None], [c for _, c in results if c is not None]


def thread_pool(num_workers: int) -> Optional[ThreadPoolExecutor]:
    return ThreadPoolExecutor(num_workers) if num_workers > 1 else None


def to_batch(images: Sequence[Image.Image]) -> torch.Tensor:
    return torch.stack([pil_to_tensor(img) for img in images])


def save_jpeg(img: Image.Image, path: Path) -> None:
    """Atomically: a run killed mid-write never leaves a truncated image behind a finished shard."""
    atomic_write(path, lambda tmp: img.save(tmp, format="JPEG", quality=JPEG_QUALITY))


def predictor_probs(predictor, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """P's softmax on [0, 1] images, batched on the device, back on the CPU as float64."""
    return predictor.probs(images.to(device)).double().cpu()


def run_shards(stage: str, source, work_dir: str | Path, header: dict, shards: Sequence[int], num_shards: int,
               process: Process) -> dict:
    """Run `process` on every unfinished shard of `shards`; {"done": [...], "skipped": [...]} shard ids."""
    done, skipped = [], []
    for shard in tqdm(shards, desc=f"{stage} shards", unit="shard", disable=not show_progress()):
        path = shard_path(work_dir, shard, num_shards)
        full = {"stage": stage, "shard_id": shard, "num_shards": num_shards, **header}
        if is_finished(path, full):
            skipped.append(shard)
            continue
        entries = source.items(lambda item_id, shard=shard: shard_of(item_id, num_shards) == shard)
        records, corrupt = process(entries)
        write_shard(path, full, records, corrupt)
        logger.debug("%s: %d records, %d corrupt inputs", path, len(records), len(corrupt))
        done.append(shard)
    logger.info("%s: %d shard(s) done, %d already finished (skipped) in %s", stage, len(done), len(skipped), work_dir)
    return {"done": done, "skipped": skipped}
