"""EPGS (paper Sec. 3.1, Supp. S1): stock Ip2p edits EmoSet images with bank instructions; three filters keep some.

Per image: P labels the 224x224 source; each other emotion is a target, edited with
`instructions_per_target` instructions drawn from the bank (seeded per image and target). Every
candidate gets P's confidence on the target, the official SSIM and LPIPS to the source, recorded
whether or not it passes; a kept candidate's images are written under ``EPGS/`` with its entry.
Each candidate draws its noise from its own generator, so results never depend on batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from emoeditor.constants import EMOTIONS, IMAGE_SIZE
from emoeditor.curation.epas import rounded
from emoeditor.curation.filters import EpgsThresholds, rejected_by
from emoeditor.curation.instructions import bank_digest
from emoeditor.curation.perceptual import lpips_distance
from emoeditor.curation.run import chunks, load_chunk, predictor_probs, save_jpeg, to_batch
from emoeditor.curation.shards import digest_of, module_digest, predictor_digest
from emoeditor.curation.sources import Entry, ImageItem
from emoeditor.editors.ip2p import Ip2pEditor
from emoeditor.emotions import onehot
from emoeditor.imageio import resize_square, to_uint8
from emoeditor.logs import show_progress
from emoeditor.scoring.ssim import batch_ssim
from emoeditor.seeding import generator, mix_seed

EPGS_DIR = "EPGS"


class BankEditor(Ip2pEditor):
    """The methods folder's stock Ip2p editor, told each row's instruction instead of writing the target word."""

    name = "ip2p-bank"
    _prompts: Optional[Sequence[str]] = None

    def edit_with(self, images: torch.Tensor, prompts: Sequence[str], targets: torch.Tensor,
                  generators: Sequence[torch.Generator]) -> torch.Tensor:
        self._prompts = list(prompts)
        try:
            return self.edit(images, targets, generators).images
        finally:
            self._prompts = None

    def instructions(self, sources: torch.Tensor, targets: torch.Tensor) -> list[dict]:
        return [{"instruction": prompt} for prompt in self._prompts]


def draw_instructions(bank: dict[str, list[str]], item_id: str, target: str, count: int, seed: int) -> list[int]:
    """`count` bank indices for (image, target), drawn without replacement; all of them when count >= the bank's."""
    n = len(bank[target])
    if count >= n:
        return list(range(n))
    rng = np.random.default_rng(mix_seed(seed, "epgs-instructions", item_id, target))
    return sorted(int(i) for i in rng.choice(n, size=count, replace=False))


def epgs_paths(item_id: str, target: str, index: int) -> tuple[str, str]:
    """Official rule: EPGS entries have "EPGS" in img_src_path."""
    rel = PurePosixPath(item_id)
    stem = rel.with_suffix("").as_posix()
    return f"{EPGS_DIR}/source/{stem}.jpg", f"{EPGS_DIR}/target/{stem}_to_{target}_{index:02d}.jpg"


@dataclass
class Candidate:
    item_id: str
    emoset_label: str
    source: Image.Image
    source_softmax: list
    class_source: str
    target: str
    index: int
    instruction: str

    @property
    def id(self) -> str:
        return f"{self.item_id}|{self.target}|{self.index:02d}"


@dataclass
class EpgsGenerator:
    """Edits and scores one shard's EmoSet images; called as `process` by run_shards."""

    editor: BankEditor
    predictor: torch.nn.Module
    lpips: torch.nn.Module
    bank: dict[str, list[str]]
    thresholds: EpgsThresholds
    data_root: Path
    device: torch.device = torch.device("cpu")
    batch_size: int = 8
    image_size: int = IMAGE_SIZE
    instructions_per_target: int = 1
    seed: int = 0
    ssim_backend: str = "torch"

    def header(self, source: dict) -> dict:
        """What decides this stage's results, for the shard headers (the merge checks the digests)."""
        editor = self.editor
        settings = {"image_size": self.image_size, "instructions_per_target": self.instructions_per_target,
                    "seed": self.seed, "ssim_backend": self.ssim_backend,
                    "ip2p": {"model": editor.model_name, "size": editor.size,
                             "num_inference_steps": editor.num_inference_steps,
                             "guidance_scale": editor.guidance_scale,
                             "image_guidance_scale": editor.image_guidance_scale},
                    "ip2p_weights": module_digest(editor.pipe.unet), "lpips": module_digest(self.lpips)}
        thresholds = self.thresholds.as_dict()
        return {"source": source, "thresholds": thresholds, "settings": settings,
                "digests": {"predictor": predictor_digest(self.predictor), "thresholds": digest_of(thresholds),
                            "bank": bank_digest(self.bank)}}

    def __call__(self, entries: Iterator[Entry]) -> tuple[list[dict], list[dict]]:
        records, corrupt = [], []
        bar = tqdm(desc="EPGS candidates", unit="cand", leave=False, disable=not show_progress())
        for chunk in chunks(entries, self.batch_size):  # Ip2p bounds this stage: decoding needs no threads
            loaded, bad = load_chunk(chunk, lambda item: (item, resize_square(item.load(), self.image_size)), None)
            corrupt += bad
            if not loaded:
                continue
            items, sources = zip(*loaded)
            probs = predictor_probs(self.predictor, to_batch(sources), self.device)
            candidates = [cand for item, source, p in zip(items, sources, probs)
                          for cand in self._candidates(item, source, p)]
            for batch in chunks(candidates, self.batch_size):
                records += self._score(batch)
                bar.update(len(batch))
        bar.close()
        return records, corrupt

    def _candidates(self, item: ImageItem, source: Image.Image, probs: torch.Tensor) -> list[Candidate]:
        """Every emotion but P's top class on the source is a target (class_source is P's, as in EPAS)."""
        class_source = EMOTIONS[int(probs.argmax())]
        return [Candidate(item.id, item.emotion, source, rounded(probs), class_source, target, k,
                          self.bank[target][k])
                for target in EMOTIONS if target != class_source
                for k in draw_instructions(self.bank, item.id, target, self.instructions_per_target, self.seed)]

    def _score(self, batch: list[Candidate]) -> list[dict]:
        sources = to_batch([c.source for c in batch])
        targets = torch.stack([onehot(c.target) for c in batch])
        gens = [generator(self.seed, "epgs", c.id, device=self.editor.device) for c in batch]
        edits = self.editor.edit_with(sources, [c.instruction for c in batch], targets, gens).cpu()
        edits = to_batch([Image.fromarray(a) for a in to_uint8(edits)])  # what the saved file will hold
        probs = predictor_probs(self.predictor, edits, self.device)
        ssim = batch_ssim(sources, edits, self.ssim_backend)
        lpips = lpips_distance(self.lpips, sources, edits)
        return [self._record(c, edit, p, float(s), float(d)) for c, edit, p, s, d in zip(batch, edits, probs, ssim,
                                                                                           lpips)]

    def _record(self, cand: Candidate, edit: torch.Tensor, probs: torch.Tensor, ssim: float, lpips: float) -> dict:
        k = EMOTIONS.index(cand.target)
        scores = {"target": cand.target, "confidence": float(probs[k]), "top_class": EMOTIONS[int(probs.argmax())],
                  "ssim": ssim, "lpips": lpips}
        rejected = rejected_by(scores, self.thresholds)
        record = {"id": cand.id, "source_id": cand.item_id, "emoset_label": cand.emoset_label,
                  "class_source": cand.class_source,
                  "instruction": cand.instruction, "scores": scores, "rejected_by": rejected, "kept": not rejected}
        if not rejected:
            src, tgt = epgs_paths(cand.item_id, cand.target, cand.index)
            save_jpeg(cand.source, self.data_root / src)
            save_jpeg(Image.fromarray(to_uint8(edit)), self.data_root / tgt)
            record["entry"] = {"img_src_path": src, "img_tgt_path": tgt, "class_source": cand.class_source,
                               "class_target": cand.target, "source_softmax": cand.source_softmax,
                               "prompt": cand.instruction}
        return record
