#!/usr/bin/env python
"""Curation speed on this machine: P-labelling images/s (EPAS) and EPGS candidates/s, no download.

Writes toy inputs in a temporary folder (Ip2p-sized 512px JPEG pairs in the per-seed layout, 224px
EmoSet images), then times the real stage code (EpasLabeller, EpgsGenerator) end to end: decoding,
resizing, P, writing kept pairs; for EPGS also the Ip2p edits, SSIM and LPIPS. Decoding + resizing is
also timed alone: a GPU does not speed it up. P runs twice: the tiny predictor and a full-size ResNet18
at 224 (random weights: speed does not depend on them). Ip2p and LPIPS are the tiny random-weight ones,
so EPGS numbers are a CPU smoke figure, not a GPU projection.

    python scripts/bench_curation.py --out runs/bench_curation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from emoeditor.config import parse_args, run_cli
from emoeditor.constants import IMAGE_SIZE
from emoeditor.curation.epas import EpasLabeller
from emoeditor.curation.epgs import BankEditor, EpgsGenerator
from emoeditor.curation.filters import EpasRule, EpgsThresholds
from emoeditor.curation.instructions import DEFAULT_BANK, load_bank
from emoeditor.curation.perceptual import load_lpips
from emoeditor.curation.sources import EmoSetImages, Ip2pFolders
from emoeditor.editors.ip2p import tiny_ip2p_pipeline
from emoeditor.fileio import atomic_write_text
from emoeditor.imageio import resize_square
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.models.predictor import EmotionPredictor, build_resnet18
from emoeditor.models.tiny import TINY_IMAGE_SIZE, tiny_predictor

IP2P_SIDE = 512  # the CLIP-filtered Ip2p images are 512 x 512 JPEGs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=32, help="Ip2p pairs to label")
    p.add_argument("--images", type=int, default=2, help="EmoSet images to edit (7 candidates each)")
    p.add_argument("--steps", type=int, default=20, help="Ip2p denoising steps per EPGS candidate")
    p.add_argument("--batch_size", type=int, default=16, help="P and Ip2p batch size")
    p.add_argument("--out", default="runs/bench_curation.json", help="JSON file the measurements go to")
    add_verbosity_args(p)
    return p


def write_inputs(root: Path, pairs: int, images: int) -> None:
    rng = np.random.default_rng(0)
    photo = skdata.astronaut()
    corners = rng.integers(0, 200, size=(2 * pairs + images, 2))
    crops = (Image.fromarray(photo[t:t + 300, s:s + 300]) for t, s in corners)
    for i in range(pairs):
        folder = root / "ip2p" / f"{i:07d}"
        folder.mkdir(parents=True)
        (folder / "prompt.json").write_text(json.dumps({"edit": f"make it scene {i}"}))
        for k in (0, 1):
            next(crops).resize((IP2P_SIDE, IP2P_SIDE)).save(folder / f"1_{k}.jpg", quality=95)
    (root / "emoset" / "awe").mkdir(parents=True)
    for i in range(images):
        next(crops).resize((IMAGE_SIZE, IMAGE_SIZE)).save(root / "emoset" / "awe" / f"awe_{i}.jpg", quality=95)


def timed(process, source) -> tuple[float, list, list]:
    start = time.perf_counter()
    records, corrupt = process(source.items(lambda item_id: True))
    return time.perf_counter() - start, records, corrupt


def main(argv=None) -> dict:
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch_threads": torch.get_num_threads(), "pairs": args.pairs, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_inputs(root, args.pairs, args.images)
        start, source = time.perf_counter(), Ip2pFolders(root / "ip2p")
        for item in source.items(lambda item_id: True):  # the input side alone: what a GPU cannot speed up
            resize_square(item.load_source(), IMAGE_SIZE), resize_square(item.load_target(), IMAGE_SIZE)
        result["epas_decode_resize_images_per_s"] = round(2 * args.pairs / (time.perf_counter() - start), 2)
        predictors = {"tiny_P_64px": tiny_predictor(0),
                      "resnet18_P_224px": EmotionPredictor(build_resnet18(), image_size=IMAGE_SIZE).eval()}
        for name, predictor in predictors.items():
            labeller = EpasLabeller(predictor.to(device), root / f"out_{name}", EpasRule("all"), device,
                                    args.batch_size, IMAGE_SIZE)
            seconds, records, _ = timed(labeller, Ip2pFolders(root / "ip2p"))
            result[f"epas_{name}_images_per_s"] = round(2 * len(records) / seconds, 2)

        editor = BankEditor(tiny_ip2p_pipeline(0).to(device), "tiny-ip2p-seed0", size=TINY_IMAGE_SIZE,
                            num_inference_steps=args.steps, batch_size=args.batch_size)
        generator = EpgsGenerator(editor, tiny_predictor(0).to(device), load_lpips(device=device, random_seed=0),
                                  load_bank(DEFAULT_BANK), EpgsThresholds(), root / "out_epgs", device,
                                  args.batch_size, IMAGE_SIZE)
        seconds, records, _ = timed(generator, EmoSetImages(root / "emoset"))
        result.update(epgs_tiny_candidates_per_s=round(len(records) / seconds, 3), epgs_candidates=len(records),
                      epgs_ip2p_steps=args.steps, epgs_edit_size=TINY_IMAGE_SIZE)
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run_cli(main)
