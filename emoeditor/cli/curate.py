"""Rebuild EmoPair (paper Sec. 3.1): label Ip2p pairs (epas), generate and filter EmoSet edits (epgs), merge.

examples:
    python scripts/curate_emopair.py epas --ip2p_folders data/ip2p_clip --predictor emo_predictor/emo_predictor.pt
    python scripts/curate_emopair.py epas --ip2p_parquet data/ip2p/*.parquet --num_shards 64 --shard_id 0 1 2
    accelerate launch scripts/curate_emopair.py epgs --emoset data/EmoSet-118K \\
        --ip2p_model model/instruct-pix2pix --lpips_alexnet alexnet-owt-7be5be79.pth
    python scripts/curate_emopair.py merge --work_dir runs/curation/epas runs/curation/epgs
    python scripts/curate_emopair.py stats --work_dir runs/curation/epas
    python scripts/curate_emopair.py epas --tiny --ip2p_folders toy/ip2p --image_size 64   # random weights, CPU

Work is split into --num_shards shards by a hash of each item's id; each finished shard is one file in
--work_dir, so a rerun skips it and several processes (--shard_id, or `accelerate launch`) share the work.
The merge refuses shards written with another predictor, threshold set or instruction bank: give it the
same flags as the run. docs/rebuilding_emopair.md has the whole recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from emoeditor.config import HelpFormatter
from emoeditor.constants import IMAGE_SIZE, OFFICIAL_PREDICTOR_FILE
from emoeditor.curation.filters import EPAS_RULE_HELP, EPAS_RULES, EPGS_LPIPS, EpasRule, EpgsThresholds
from emoeditor.curation.instructions import DEFAULT_BANK, bank_digest, load_bank
from emoeditor.curation.merge import collect, load_stage, merge
from emoeditor.curation.run import run_shards
from emoeditor.curation.shards import digest_of, my_shards, predictor_digest, process_split
from emoeditor.data.emoset import LAYOUTS
from emoeditor.fileio import check_writable
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.models.predictor import load_predictor

DEFAULT_SHARDS = 64


def _common(p: argparse.ArgumentParser, stage: str) -> None:
    g = p.add_argument_group("shards and devices")
    g.add_argument("--work_dir", default=f"runs/curation/{stage}", help="where the shard files go (one per shard)")
    g.add_argument("--data_root", default="EmoPair", help="where kept pairs' 224x224 images are written "
                                                         f"({stage.upper()}/... under it)")
    g.add_argument("--num_shards", type=int, default=DEFAULT_SHARDS, help="items are hashed into this many shards")
    g.add_argument("--shard_id", type=int, nargs="+", default=None,
                   help="run only these shards (default: all; under accelerate launch they are dealt over processes)")
    g.add_argument("--batch_size", type=int, default=32, help="images per predictor (and Ip2p) batch")
    g.add_argument("--device", default=None, help="default: cuda when there is one (accelerate's under launch)")
    g.add_argument("--image_size", type=int, default=IMAGE_SIZE, help="EmoPair's image side (paper: 224)")
    _models(p)
    add_verbosity_args(p)


def _models(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("emotion predictor P")
    g.add_argument("--predictor", default=OFFICIAL_PREDICTOR_FILE, help="P: a predictor folder or emo_predictor.pt")
    g.add_argument("--tiny", action="store_true",
                   help="random-weight tiny P (and Ip2p, LPIPS) built in code: a smoke run, every label is noise")
    g.add_argument("--seed", type=int, default=0, help="seed of the tiny weights, and of EPGS's draws and noise")


def _epas_rule(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("EPAS keep rule")
    g.add_argument("--keep_rule", choices=sorted(EPAS_RULES), default="changed", help=EPAS_RULE_HELP)
    g.add_argument("--epas_confidence", type=float, default=EpasRule.confidence,
                   help="threshold of --keep_rule confident")


def _epgs_thresholds(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("EPGS filters (Supp. S1)")
    g.add_argument("--confidence", type=float, default=EpgsThresholds.confidence,
                   help="keep if P's top class on the edit is the target with confidence above this")
    g.add_argument("--ssim_low", type=float, default=EpgsThresholds.ssim_low, help="keep if SSIM is above this")
    g.add_argument("--ssim_high", type=float, default=EpgsThresholds.ssim_high, help="... and below this")
    g.add_argument("--lpips_min", type=float, default=EPGS_LPIPS, help="keep if LPIPS is above this")
    g.add_argument("--bank", default=DEFAULT_BANK, help="instruction bank (per emotion, >= 10 instructions)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{epas,epgs,merge,stats}")

    p = sub.add_parser("epas", formatter_class=HelpFormatter, help="label Ip2p pairs with P and keep them by a rule")
    g = p.add_argument_group("Ip2p CLIP-filtered dataset (one layout)").add_mutually_exclusive_group(required=True)
    g.add_argument("--ip2p_folders", help="root of the per-seed folders (prompt.json, <seed>_0.jpg, <seed>_1.jpg)")
    g.add_argument("--ip2p_parquet", nargs="+", help="parquet files with original_image, edited_image, edit_prompt")
    p.add_argument("--num_workers", type=int, default=4,
                   help="threads decoding images (what bounds a GPU run; results do not depend on it)")
    _common(p, "epas")
    _epas_rule(p)

    p = sub.add_parser("epgs", formatter_class=HelpFormatter, help="edit EmoSet images with the bank, filter")
    g = p.add_argument_group("EmoSet and Ip2p")
    g.add_argument("--emoset", required=True, help="EmoSet root (the release, or one folder per emotion)")
    g.add_argument("--emoset_layout", choices=LAYOUTS, default="auto", help="EmoSet layout")
    g.add_argument("--emoset_splits", nargs="+", default=["train", "val"],
                   help="EmoSet split lists to edit (the test list holds the paper's test sources)")
    g.add_argument("--ip2p_model", default=None, help="stock Ip2p (diffusers folder or hub id; default: "
                                                      "model/instruct-pix2pix when there, else the hub id)")
    g.add_argument("--num_inference_steps", type=int, default=100, help="Ip2p denoising steps")
    g.add_argument("--guidance_scale", type=float, default=7.5, help="Ip2p text guidance")
    g.add_argument("--image_guidance_scale", type=float, default=1.5, help="Ip2p image guidance")
    g.add_argument("--edit_size", type=int, default=None, help="side Ip2p edits at (default: --image_size; 64 tiny)")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None, help="Ip2p dtype")
    g.add_argument("--instructions_per_target", type=int, default=1,
                   help="bank instructions drawn per image and target (seeded); the bank's size takes all")
    g.add_argument("--lpips_alexnet", default=None, help="torchvision AlexNet weights for LPIPS (default: the "
                                                         "torch hub cache's alexnet-owt-7be5be79.pth)")
    g.add_argument("--ssim_backend", choices=["torch", "skimage"], default="torch",
                   help="the official SSIM batched in torch, or scikit-image itself")
    _common(p, "epgs")
    _epgs_thresholds(p)

    p = sub.add_parser("merge", formatter_class=HelpFormatter,
                       help="deduplicate, validate and write the annotation JSON, statistics and provenance")
    p.add_argument("--work_dir", nargs="+", default=["runs/curation/epas", "runs/curation/epgs"],
                   help="the stages' shard folders")
    p.add_argument("--data_root", default="EmoPair", help="the folder the stages wrote images to")
    p.add_argument("--out_json", default="json/data_EmoPair_rebuilt.json",
                   help="annotation file; <stem>_stats.json, _hist.png and _provenance.json go beside it")
    p.add_argument("--check_images", choices=["none", "exists", "header", "decode"], default="header",
                   help="image check of the training validator")
    p.add_argument("--allow_missing", action="store_true", help="merge although some shards are not finished")
    _models(p)
    _epas_rule(p)
    _epgs_thresholds(p)
    add_verbosity_args(p)

    p = sub.add_parser("stats", formatter_class=HelpFormatter, help="counts so far, from the shard files")
    p.add_argument("--work_dir", nargs="+", default=["runs/curation/epas", "runs/curation/epgs"],
                   help="the stages' shard folders")
    add_verbosity_args(p)
    return parser


def _device(args) -> torch.device:
    if process_split()[1] > 1:
        from accelerate import PartialState

        return PartialState().device
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _predictor(args, device: torch.device):
    if args.tiny:
        from emoeditor.models.tiny import tiny_predictor

        return tiny_predictor(args.seed).to(device).requires_grad_(False)
    return load_predictor(args.predictor, device=device)


def _thresholds(args) -> EpgsThresholds:
    return EpgsThresholds(args.confidence, args.ssim_low, args.ssim_high, args.lpips_min)


def run_epas(args) -> dict:
    from emoeditor.curation.epas import EpasLabeller
    from emoeditor.curation.sources import Ip2pFolders, Ip2pParquet

    check_writable({"--work_dir": args.work_dir, "--data_root": args.data_root})
    shards = my_shards(args.num_shards, args.shard_id)
    source = Ip2pFolders(args.ip2p_folders) if args.ip2p_folders else Ip2pParquet(args.ip2p_parquet)
    device = _device(args)
    labeller = EpasLabeller(_predictor(args, device), Path(args.data_root), EpasRule(args.keep_rule,
                                                                                      args.epas_confidence),
                            device, args.batch_size, args.image_size, args.num_workers)
    return run_shards("epas", source, args.work_dir, labeller.header(source.describe()), shards, args.num_shards,
                      labeller)


def run_epgs(args) -> dict:
    from emoeditor.curation.epgs import BankEditor, EpgsGenerator
    from emoeditor.curation.perceptual import load_lpips
    from emoeditor.curation.sources import EmoSetImages
    from emoeditor.editors.ip2p import ip2p_settings
    from emoeditor.editors.registry import MethodContext

    check_writable({"--work_dir": args.work_dir, "--data_root": args.data_root})
    shards = my_shards(args.num_shards, args.shard_id)
    bank = load_bank(args.bank)
    source = EmoSetImages(args.emoset, args.emoset_layout, args.emoset_splits)
    device = _device(args)
    lpips = load_lpips(args.lpips_alexnet, device, random_seed=args.seed if args.tiny else None)
    options = {"num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale,
               "image_guidance_scale": args.image_guidance_scale, "seed": args.seed, "dtype": args.dtype}
    options = {k: v for k, v in options.items() if v is not None}
    if args.tiny and args.ip2p_model is None:
        options["weights"] = "tiny"
    elif args.ip2p_model is not None:
        options["model"] = args.ip2p_model
    if args.edit_size or not args.tiny:
        options["size"] = args.edit_size or args.image_size
    pipe, name, kwargs = ip2p_settings(options, MethodContext(device=device, batch_size=args.batch_size), "epgs")
    generator = EpgsGenerator(BankEditor(pipe, name, **kwargs), _predictor(args, device), lpips, bank,
                              _thresholds(args), Path(args.data_root), device, args.batch_size, args.image_size,
                              args.instructions_per_target, args.seed, args.ssim_backend)
    return run_shards("epgs", source, args.work_dir, generator.header(source.describe()), shards, args.num_shards,
                      generator)


def run_merge(args) -> dict:
    predictor = _predictor(args, torch.device("cpu"))
    expected = {
        "epas": {"predictor": predictor_digest(predictor),
                 "thresholds": digest_of(EpasRule(args.keep_rule, args.epas_confidence).as_dict())},
        "epgs": {"predictor": predictor_digest(predictor), "thresholds": digest_of(_thresholds(args).as_dict()),
                 "bank": bank_digest(load_bank(args.bank))},
    }
    return merge(args.work_dir, args.data_root, args.out_json, expected, EpasRule(args.keep_rule,
                                                                                  args.epas_confidence),
                 args.check_images, args.allow_missing, command=sys.argv)


def run_stats(args) -> dict:
    stages = {}
    for work_dir in args.work_dir:
        shards = load_stage(work_dir, allow_missing=True)
        stages[shards[0][1]["header"]["stage"]] = shards
    report = collect(stages)
    print(json.dumps(report, indent=1))
    return report


COMMANDS = {"epas": run_epas, "epgs": run_epgs, "merge": run_merge, "stats": run_stats}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return COMMANDS[args.command](args)
