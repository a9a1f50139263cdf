"""EPAS (paper Sec. 3.1): label InstructPix2Pix pairs with the emotion predictor P and keep them by a rule.

Both images of a pair are resized to 224x224 (EmoPair's size) and classified in batches; every
readable pair is recorded with P's top classes and confidences, so the count under every rule is
known, and a kept pair's images are written under ``EPAS/ip2p_clip/`` with its annotation entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from emoeditor.constants import EMOTIONS, IMAGE_SIZE
from emoeditor.curation.filters import EpasRule, epas_keeps
from emoeditor.curation.run import chunks, load_chunk, predictor_probs, save_jpeg, thread_pool, to_batch
from emoeditor.curation.shards import digest_of, predictor_digest
from emoeditor.curation.sources import Entry, PairItem
from emoeditor.imageio import resize_square
from emoeditor.logs import show_progress

EPAS_DIR = "EPAS/ip2p_clip"
SOFTMAX_DECIMALS = 6


def rounded(probs: torch.Tensor) -> list[float]:
    """A softmax as annotation floats: 6 decimals (well within the validator's 1e-3 sum tolerance)."""
    return [round(float(p), SOFTMAX_DECIMALS) for p in probs]


@dataclass
class EpasLabeller:
    """Labels one shard's pairs; called as `process` by run_shards."""

    predictor: torch.nn.Module
    data_root: Path
    rule: EpasRule
    device: torch.device = torch.device("cpu")
    batch_size: int = 32
    image_size: int = IMAGE_SIZE
    num_workers: int = 4  # decoding threads; results do not depend on it

    def header(self, source: dict) -> dict:
        """What decides this stage's results, for the shard headers (the merge checks the digests)."""
        thresholds = self.rule.as_dict()
        return {"source": source, "thresholds": thresholds, "settings": {"image_size": self.image_size},
                "digests": {"predictor": predictor_digest(self.predictor), "thresholds": digest_of(thresholds)}}

    def __call__(self, entries: Iterator[Entry]) -> tuple[list[dict], list[dict]]:
        records, corrupt = [], []
        bar = tqdm(desc="EPAS pairs", unit="pair", leave=False, disable=not show_progress())
        pool = thread_pool(self.num_workers)
        try:
            for chunk in chunks(entries, self.batch_size):
                loaded, bad = load_chunk(chunk, self._load, pool)
                corrupt += bad
                if loaded:
                    items, sources, targets = zip(*loaded)
                    p_src = predictor_probs(self.predictor, to_batch(sources), self.device)
                    p_tgt = predictor_probs(self.predictor, to_batch(targets), self.device)
                    records += [self._record(*row) for row in zip(items, sources, targets, p_src, p_tgt)]
                bar.update(len(chunk))
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown()
        return records, corrupt

    def _load(self, item: PairItem) -> tuple:
        size = self.image_size
        return item, resize_square(item.load_source(), size), resize_square(item.load_target(), size)

    def _record(self, item, source, target, p_src: torch.Tensor, p_tgt: torch.Tensor) -> dict:
        scores = {"class_source": EMOTIONS[int(p_src.argmax())], "class_target": EMOTIONS[int(p_tgt.argmax())],
                  "confidence_source": float(p_src.max()), "confidence_target": float(p_tgt.max())}
        record = {"id": item.id, "prompt": item.prompt, "scores": scores, "source_softmax": rounded(p_src),
                  "target_softmax": rounded(p_tgt), "kept": epas_keeps(scores, self.rule)}
        if record["kept"]:
            src, tgt = f"{EPAS_DIR}/{item.id}_0.jpg", f"{EPAS_DIR}/{item.id}_1.jpg"
            save_jpeg(source, self.data_root / src)
            save_jpeg(target, self.data_root / tgt)
            record["entry"] = {"img_src_path": src, "img_tgt_path": tgt, "class_source": scores["class_source"],
                               "class_target": scores["class_target"], "source_softmax": record["source_softmax"],
                               "prompt": item.prompt}
        return record
