"""test.py: files in, edited files + traces + summary CSV out (parser, main, the file-level run)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from emoeditor.config import parse_args
from emoeditor.constants import IMAGE_SIZE, IP2P_HUB_ID, NOISE_START_RANGE, NUM_EMOTIONS, NUM_INFERENCE_STEPS, NUM_LOOP
from emoeditor.editing.critic import CONFIDENCE_MODES, CRITICS, DIRECTION_SOURCES, SOURCE_INDEX, CriticConfig
from emoeditor.editing.loading import load_model
from emoeditor.editing.loop import IterativeInference, Job, JobResult
from emoeditor.editors.emoeditor import EmoEditorEditor
from emoeditor.emotions import onehot, other_emotions, parse_target, target_label
from emoeditor.errors import EmoEditorError, ImageLoadError
from emoeditor.fileio import atomic_write_text
from emoeditor.imageio import list_images, load_image, save_image
from emoeditor.models.predictor import load_predictor
from emoeditor.seeding import mix_seed

# ----------------------------------------------------------------------------------------------
# test.py: files in, edited files + traces + summary CSV out
# ----------------------------------------------------------------------------------------------

SEED_MODES = ("same", "hashed")
SUMMARY_CSV = "summary.csv"
SKIPPED_CSV = "skipped.csv"  # inputs that could not be used, with the reason (header only when none)
SKIPPED_FIELDS = ("input", "reason")
SUMMARY_FIELDS = ("input", "target", "seed", "output", "iterations", "returned", "accepted", "ssim",
                  "target_confidence", "top_class", "reason")


def job_seed(seed: int, name: str, label: str, mode: str = "same") -> int:
    """The seed of one job's generator; never depends on batch composition or process count.

    'same' (default): every job uses ``--random_seed`` itself, exactly as the official script run
    once per image, so a folder run gives what running each file alone gives. 'hashed':
    ``mix_seed(seed, "edit", file name, target label)``, so the jobs of a run draw different noise.
    """
    if mode == "same":
        return int(seed)
    if mode == "hashed":
        return mix_seed(seed, "edit", name, label)
    raise ValueError(f"unknown seed mode {mode!r}; choose one of {SEED_MODES}")


def shard(items: Sequence, rank: int, world: int) -> list:
    """This process's share of the inputs (round robin, so shares differ by at most one)."""
    return list(items)[rank::world]


def resolve_device(spec: str, process=None) -> torch.device:
    multi = process is not None and getattr(process, "num_processes", 1) > 1
    if multi and spec in ("auto", "cuda"):  # one GPU per process, as accelerate assigned them
        return torch.device(process.device)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """'auto': float16 on CUDA (as the official test.py), float32 elsewhere."""
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if spec not in dtypes:
        raise EmoEditorError(f"unknown --dtype {spec!r}; choose auto, {', '.join(dtypes)}")
    return dtypes[spec]


def parse_target_spec(spec: str) -> Optional[torch.Tensor]:
    """None for 'all' (7 targets per image, chosen from P(source)), else the parsed target vector."""
    if str(spec).strip().lower() == "all":
        return None
    return parse_target(spec)


def _process_state(device_spec: str):
    """accelerate's view of this process (rank/world under `accelerate launch` or torchrun, else 1 process).

    On machines without CUDA (or with --device cpu) accelerate only forms a multi-process group
    when asked for CPU explicitly.
    """
    from accelerate import PartialState

    return PartialState(cpu=device_spec == "cpu" or not torch.cuda.is_available())


def write_tiny_assets(model_dir: str | Path, predictor_path: str | Path, input_path: Optional[str | Path] = None,
                      seed: int = 0) -> None:
    """Random-weight tiny model, predictor and two demo photos where they are missing (CPU smoke runs)."""
    from PIL import Image
    from skimage import data

    from emoeditor.editing.pipeline import EmoEditorPipeline
    from emoeditor.models.components import sd_v1_ddim_scheduler
    from emoeditor.models.predictor import save_predictor
    from emoeditor.models.tiny import tiny_emotion_encoder, tiny_predictor, tiny_unet, tiny_vae

    model_dir, predictor_path = Path(model_dir), Path(predictor_path)
    if not (model_dir / "model_index.json").exists():
        pipe = EmoEditorPipeline(unet=tiny_unet(seed), vae=tiny_vae(seed), scheduler=sd_v1_ddim_scheduler(),
                                 emotion_encoder=tiny_emotion_encoder(seed))
        pipe.save_pretrained(model_dir, safe_serialization=True)
    if not predictor_path.exists():
        save_predictor(tiny_predictor(seed), predictor_path, official_pt=False)
    if input_path is not None and not Path(input_path).exists() and not any(c in str(input_path) for c in "*?["):
        folder = Path(input_path)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("astronaut", "coffee"):
            Image.fromarray(getattr(data, name)()).resize((128, 128)).save(folder / f"{name}.png")


class _Skipped(list):
    """(path, reason) of every input that could not be used."""


def _jobs(paths: Sequence[Path], target: Optional[torch.Tensor], args, predictor, device, skipped: _Skipped,
          on_skip: Callable[[], None] = lambda: None) -> Iterator[Job]:
    """Jobs in input order; a file that cannot be loaded is recorded in `skipped` and the rest go on."""
    for path in paths:
        try:
            image = load_image(path, args.image_size)
        except ImageLoadError as exc:
            skipped.append((str(path), str(exc)))
            on_skip()
            continue
        if target is None:
            with torch.no_grad():
                top = int(predictor(image[None].to(device)).argmax())
            targets = [onehot(e) for e in other_emotions(top)]
        else:
            targets = [target]
        out_name = path.name if args.output_ext == "same" else f"{path.stem}.{args.output_ext}"
        for tgt in targets:
            label = target_label(tgt)
            seed = job_seed(args.random_seed, path.name, label, args.seed_mode)
            yield Job(image=image, target=tgt, seed=seed, name=f"{seed}_{label}_{out_name}",
                      meta={"input": str(path), "target_label": label})


def trace_json(trace: dict) -> str:
    """Indented JSON with every list of numbers (P's probabilities, the target) on one line."""
    text = json.dumps(trace, indent=1)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def _strip(result: JobResult) -> torch.Tensor:
    """Source, every candidate, and the returned image, side by side."""
    tiles = [result.job.image.cpu()] + list(result.candidates or []) + [result.image]
    return torch.cat(tiles, dim=-1)


def _row(result: JobResult, out_path: Path) -> dict:
    tr, res = result.trace, result.critic
    return {
        "input": tr["input"], "target": tr["target_label"], "seed": tr["seed"], "output": str(out_path),
        "iterations": len(tr["iterations"]), "returned": "source" if res.index == SOURCE_INDEX else res.index,
        "accepted": res.accepted, "ssim": f"{res.ssim:.6f}", "target_confidence": f"{res.target_confidence:.6f}",
        "top_class": res.top_class, "reason": res.reason,
    }


def _write_csv(path: Path, rows: list[dict], fields: Sequence[str] = SUMMARY_FIELDS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: tuple(r[k] for k in fields[:2])))


def merge_csv(out_dir: Path, name: str, world: int, fields: Sequence[str] = SUMMARY_FIELDS) -> Path:
    """Join the per-process parts of a multi-process run into one file, ordered like a single-process run."""
    rows = []
    stem = Path(name).stem
    for rank in range(world):
        part = out_dir / f"{stem}.rank{rank}.csv"
        with open(part, newline="") as f:
            rows.extend(csv.DictReader(f))
        part.unlink()
    _write_csv(out_dir / name, rows, fields)
    return out_dir / name


def build_engine(pipe, predictor, args, device: torch.device, return_candidates: bool = False) -> IterativeInference:
    critic = CriticConfig(args.critic, num_loop=args.num_loop, ssim_low=args.ssim_low, ssim_high=args.ssim_high,
                          confidence=args.confidence, confidence_mode=args.confidence_mode,
                          direction_probs=args.direction_probs)
    editor = EmoEditorEditor(pipe, predictor, args.emotion_input, args.num_inference_steps, tuple(args.noise_range),
                             args.guidance_scale)
    return IterativeInference(editor, predictor.probs, critic, batch_size=args.batch_size,
                              ssim_backend=args.ssim_backend, device=device, return_candidates=return_candidates)


TEST_USAGE = """Edit images toward a target emotion with iterative emotion inference (paper Sec. 3.3).

    python test.py --input_path demo_img/demo_fire.png --target_emo awe
    python test.py --input_path photos/ --target_emo all --batch_size 16
    accelerate launch test.py --input_path photos/ --target_emo all      # inputs split over GPUs
    python test.py --config configs/infer_tiny.yaml                     # CPU smoke run, random weights
"""


def seed_arg(value: str):
    return None if value.lower() == "none" else int(value)


def build_parser() -> argparse.ArgumentParser:
    """test.py's flags: the official ones first, then ours (all settable from a --config preset)."""
    p = argparse.ArgumentParser(description=TEST_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the official test.py flags
    p.add_argument("--random_seed", type=seed_arg, default=75863, help="seed of every job ('none': draw one)")
    p.add_argument("--input_path", default="demo_img/demo_fire.png", help="an image, a folder or a glob")
    p.add_argument("--target_emo", default="awe",
                   help="an emotion, a mixture (awe:0.5,excitement:0.5), or 'all' (the 7 emotions other than "
                        "P's top class on the source; the paper's evaluation instead excludes the source's "
                        "EmoSet label, which scripts/evaluate.py does)")
    p.add_argument("--test_save_dir", default="save_test_res")
    p.add_argument("--num_inference_steps", type=int, default=NUM_INFERENCE_STEPS)
    p.add_argument("--num_loop", type=int, default=NUM_LOOP, help="at most this many edits per job")
    # model
    p.add_argument("--model_dir", default="model",
                   help="exported pipeline folder, or the folder with the official model_ip2p.pt + model_emoenc.pt")
    p.add_argument("--base_model", default=IP2P_HUB_ID, help="InstructPix2Pix architecture for the official .pt files")
    p.add_argument("--predictor_path", default="emo_predictor/emo_predictor.pt")
    p.add_argument("--emotion_input", choices=("direction", "onehot"), default=None,
                   help="encoder input; default: what the model was trained with (its config)")
    # critic
    p.add_argument("--critic", choices=CRITICS, default="paper",
                   help="paper: 0.3<SSIM<0.8 and confidence>0.8; official: the official test.py logic; none: one pass")
    p.add_argument("--ssim_low", type=float, default=None, help="default: paper 0.3, official 0.5")
    p.add_argument("--ssim_high", type=float, default=None, help="default: 0.8")
    p.add_argument("--confidence", type=float, default=None, help="default: paper 0.8, official 0.6")
    p.add_argument("--confidence_mode", choices=CONFIDENCE_MODES, default="support",
                   help="target confidence of a mixture: P's mass on its emotions (support) or sum w_i*P_i")
    p.add_argument("--direction_probs", choices=DIRECTION_SOURCES, default="source",
                   help="paper critic: direction = target - P(source) (fixed) or - P(current input)")
    p.add_argument("--ssim_backend", choices=("torch", "skimage"), default="torch")
    # one edit
    p.add_argument("--noise_range", type=int, nargs=2, default=list(NOISE_START_RANGE), metavar=("LOW", "HIGH"))
    p.add_argument("--guidance_scale", type=float, default=1.0, help="1 = no classifier-free guidance (official)")
    p.add_argument("--image_size", type=int, default=IMAGE_SIZE)
    # running
    p.add_argument("--seed_mode", choices=("same", "hashed"), default="same",
                   help="same: every job uses --random_seed (as official per-image runs); hashed: per (file, target)")
    p.add_argument("--batch_size", type=int, default=1, help="jobs edited together (continuous batching)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, as official), float32, float16, bfloat16")
    flag = dict(action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--output_ext", default="same",
                   help="'same' keeps the input's extension as the official names do (a .jpg is saved as JPEG); "
                        "'png' saves losslessly")
    p.add_argument("--compile", **flag, help="torch.compile the UNet and P (long GPU runs)")
    p.add_argument("--save_strip", **flag, help="also save a strip of every iteration per job")
    p.add_argument("--save_candidates", **flag, help="also save every iteration's image")
    p.add_argument("--tiny", **flag,
                   help="write random-weight tiny model/predictor/demo images where missing (CPU smoke test)")
    p.add_argument("--quiet", **flag, help="no progress bar")
    return p


def main(argv=None) -> dict:
    """test.py's entry point: flags (and an optional --config preset) -> run_inference."""
    return run_inference(parse_args(build_parser(), argv))


def run_inference(args, process=None) -> dict:
    """test.py: edit every (input, target) job, write images, traces and the summary CSV.

    `process` is accelerate's PartialState (or anything with num_processes, process_index,
    is_main_process, wait_for_everyone, device); under ``accelerate launch`` each process takes
    a round-robin share of the input files and the main process merges the summaries.
    """
    target = parse_target_spec(args.target_emo)  # bad targets fail before anything loads
    process = process or _process_state(args.device)
    rank, world = process.process_index, process.num_processes
    if args.random_seed is None:  # official: `--random_seed None` draws one and prints it
        if world > 1:
            raise EmoEditorError("--random_seed none would draw a different seed in every process; "
                                 "pass an explicit --random_seed to a multi-process run")
        args.random_seed = int.from_bytes(os.urandom(4), "little") % 100000
        print(f"random_seed: {args.random_seed}")
    device = resolve_device(args.device, process)
    dtype = resolve_dtype(args.dtype, device)
    if args.tiny:
        if process.is_main_process:
            write_tiny_assets(args.model_dir, args.predictor_path, args.input_path)
        process.wait_for_everyone()

    all_paths = list_images(args.input_path)
    names: dict[str, Path] = {}
    for path in all_paths:
        if path.name in names:
            raise EmoEditorError(f"{names[path.name]} and {path} have the same file name, so their outputs "
                                 f"({args.random_seed}_<target>_{path.name}) would overwrite each other; rename one")
        names[path.name] = path
    paths = shard(all_paths, rank, world)
    if args.quiet:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
    predictor = load_predictor(args.predictor_path, device=device)  # small: fail fast on a bad path
    pipe = load_model(args.model_dir, args.base_model, dtype, device)
    if args.compile:  # pays off on long GPU runs: every call has the same (padded) batch shape
        pipe.unet = torch.compile(pipe.unet)
        predictor.net = torch.compile(predictor.net)
    keep = bool(args.save_strip or args.save_candidates)
    engine = build_engine(pipe, predictor, args, device, return_candidates=keep)

    out_dir = Path(args.test_save_dir)
    (out_dir / "traces").mkdir(parents=True, exist_ok=True)
    skipped = _Skipped()
    per_file = 1 if target is not None else NUM_EMOTIONS - 1
    rows = []
    with tqdm(total=len(paths) * per_file, desc=f"editing [{rank}/{world}]" if world > 1 else "editing",
              unit="job", disable=args.quiet) as bar:
        def uncount():
            bar.total -= per_file
            bar.refresh()

        jobs = _jobs(paths, target, args, predictor.probs, device, skipped, uncount)
        for result in engine.run(jobs):
            name = result.job.name
            out_path = save_image(result.image, out_dir / name)
            stem = Path(name).stem
            result.trace["output"] = str(out_path)
            atomic_write_text(out_dir / "traces" / f"{stem}.json", trace_json(result.trace))
            if args.save_strip:
                save_image(_strip(result), out_dir / "strips" / f"{stem}.png")
            if args.save_candidates:
                for i, cand in enumerate(result.candidates or []):
                    save_image(cand, out_dir / "candidates" / stem / f"iter_{i:02d}.png")
            rows.append(_row(result, out_path))
            bar.update(1)
    if skipped:
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)

    skipped_rows = [{"input": path, "reason": reason} for path, reason in skipped]
    tables = ((SUMMARY_CSV, rows, SUMMARY_FIELDS), (SKIPPED_CSV, skipped_rows, SKIPPED_FIELDS))
    if world > 1:
        for name, table, fields in tables:
            _write_csv(out_dir / f"{Path(name).stem}.rank{rank}.csv", table, fields)
        process.wait_for_everyone()
        if process.is_main_process:
            for name, _, fields in tables:
                merge_csv(out_dir, name, world, fields)
    else:
        for name, table, fields in tables:
            _write_csv(out_dir / name, table, fields)
        if not rows and skipped:
            raise ImageLoadError("no input could be used: " + "; ".join(reason for _, reason in skipped))
    summary_path = out_dir / SUMMARY_CSV
    who = f"[process {rank}/{world}] " if world > 1 else ""
    print(f"{who}{len(rows)} edits written to {out_dir} ({summary_path.name}); {len(skipped)} input(s) skipped")
    return {"done": len(rows), "skipped": list(skipped), "rows": rows, "summary": summary_path, "out_dir": out_dir}
