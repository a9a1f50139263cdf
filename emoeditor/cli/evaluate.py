"""Evaluate editing methods on the test split: Table 1 (cross- and within-valence), plots, Fig. S11.

examples:
    python scripts/evaluate.py --config configs/eval_paper.yaml --image_root data/EmoSet-118K
    python scripts/evaluate.py --config configs/eval_paper.yaml --image_root data/EmoSet-118K \\
        --methods ours wo_P wo_Lemb:model=runs/lambda0/model official=ours_official --out results/ablations
    accelerate launch scripts/evaluate.py --config configs/eval_paper.yaml    # jobs sharded over GPUs
    python scripts/evaluate.py --config configs/eval_tiny.yaml          # CPU, minutes (see the preset's comment)
    python scripts/evaluate.py --config configs/eval_paper.yaml --relations within --out results/within

Methods are ``[label=]name[:key=value,...]`` (see emoeditor/editors/registry.py); a method's options
are checked before any work. Outputs are cached under --out: a rerun edits and scores only what
is missing or corrupt. Generalisation runs (Supp.): ``--relations within`` (same valence),
``--source_folder coco/`` (neutral images, all 8 targets), ``--targets awe:0.5,excitement:0.5 ...``
(multi-emotion targets).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emoeditor.config import HelpFormatter, parse_args
from emoeditor.constants import (
    BOOTSTRAP_RESAMPLES,
    CAM_TARGETS,
    CI_LEVEL,
    ENRD_REDUCTIONS,
    IMAGE_SIZE,
    TEST_SPLIT_JSON,
)
from emoeditor.editing.critic import CRITICS
from emoeditor.editors.discovery import available_methods
from emoeditor.evaluation.runner import EvalSettings, format_summary, run_evaluation
from emoeditor.logs import add_verbosity_args, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("jobs")
    g.add_argument("--split", default=TEST_SPLIT_JSON, help="test split from scripts/make_test_split.py")
    g.add_argument("--image_root", default=None, help="folder of the split's image paths (default: its emoset_root)")
    g.add_argument("--source_folder", default=None, help="edit every image of this folder instead (neutral sources)")
    g.add_argument("--targets", nargs="+", default=None,
                   help="targets for every source (names or mixtures, e.g. awe:0.5,excitement:0.5); "
                        "default: the 7 other emotions (all 8 for --source_folder)")
    g.add_argument("--relations", nargs="+", default=None, help="keep only jobs tagged so: cross within mixed neutral")
    g.add_argument("--per_class", type=int, default=None, help="only the first N sources of each emotion")
    g.add_argument("--image_size", type=int, default=IMAGE_SIZE, help="sources are resized to this square size")
    g.add_argument("--seed", type=int, default=0, help="base seed; each job's generator is seeded from it and its id")
    g = p.add_argument_group("methods")
    g.add_argument("--methods", nargs="+", default=["ours"],
                   help=f"[label=]name[:key=value,...] per method, or all (Table 1's eight rows); names: "
                        f"{', '.join(available_methods())}")
    g.add_argument("--model", default=None, help="EmoEditor model folder (default for emoeditor methods)")
    g.add_argument("--wo_lemb_model", default=None,
                   help="the 'w/o L_emb' row's model (train.py --lambda_emb 0), for wo_Lemb and --methods all")
    g.add_argument("--reference_pool", default=None,
                   help="CT's and NST's style references (an EmoSet folder or a JSON list), unless a spec sets :pool=")
    g.add_argument("--baseline_weights", choices=["pretrained", "tiny"], default="pretrained",
                   help="the baselines' real weights, or their tiny random ones (the tiny default), "
                        "unless a spec sets :weights=")
    g.add_argument("--predictor", default=None, help="emotion predictor P (folder or emo_predictor.pt)")
    g.add_argument("--critic", choices=CRITICS, default="paper", help="EmoEditor's critic policy")
    g.add_argument("--num_loop", type=int, default=None, help="EmoEditor's max critic iterations (default: 30)")
    g.add_argument("--num_inference_steps", type=int, default=None, help="DDIM steps per edit (default: 30)")
    g.add_argument("--batch_size", type=int, default=8, help="EmoEditor's engine batch")
    g.add_argument("--chunk_size", type=int, default=32, help="jobs per Editor call (resume granularity)")
    g.add_argument("--no_candidates", dest="return_candidates", action="store_false",
                   help="do not keep every iteration's candidate (saves disk; no Fig. S11)")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="EmoEditor weights dtype (default: float32; the official test.py runs float16)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: accelerate's device)")
    g.add_argument("--skip_generation", action="store_true", help="score only what is already on disk")
    g = p.add_argument_group("metrics and report")
    g.add_argument("--metric_size", type=int, default=IMAGE_SIZE,
                   help="images are resized to this for the metrics (official 224; 0 keeps their size)")
    g.add_argument("--metric_batch_size", type=int, default=32, help="images per metric batch (P, Grad-CAM)")
    g.add_argument("--cam_target", choices=CAM_TARGETS, default="predicted", help="class Grad-CAM explains")
    g.add_argument("--enrd_reduction", choices=ENRD_REDUCTIONS, default="image", help="ENRD averaging")
    g.add_argument("--canny_color", dest="canny_grayscale", action="store_false", help="Canny on RGB, not grey")
    g.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES, help="bootstrap resamples (0: no CIs)")
    g.add_argument("--ci_level", type=float, default=CI_LEVEL, help="confidence level of the bootstrap intervals")
    g.add_argument("--no_fig_s11", dest="fig_s11", action="store_false", help="skip the iteration ablation")
    g.add_argument("--max_k", type=int, default=None, help="Fig. S11 up to k (default: the run's num_loop)")
    g.add_argument("--no_grid", dest="grid", action="store_false", help="skip the example grids")
    g.add_argument("--out", default="results/eval", help="output folder (cache and tables)")
    add_verbosity_args(p.add_argument_group("logging"))
    return p


def main(argv=None):
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    settings = EvalSettings(**{k: v for k, v in vars(args).items() if k not in ("config", "quiet", "verbose")})
    if settings.metric_size == 0:
        settings.metric_size = None
    report = run_evaluation(settings)
    if report:  # rank 0
        print(format_summary(report))
        table = Path(settings.out) / "table1_cross.md"
        if table.exists():
            print("\n" + table.read_text())

