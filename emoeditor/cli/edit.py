"""test.py: files in, edited files + traces + summary CSV out (parser, main, the file-level run).

Everything that can be wrong with the flags, the paths or the output folder is checked before a
model is loaded (step 1 of `run_inference`), so a typo costs seconds, not an hour of editing.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from emoeditor.config import HelpFormatter, parse_args
from emoeditor.constants import (
    DEMO_DIR,
    EMOTIONS,
    IMAGE_SIZE,
    IP2P_HUB_ID,
    NOISE_START_RANGE,
    NUM_EMOTIONS,
    NUM_INFERENCE_STEPS,
    NUM_LOOP,
    OFFICIAL_UNET_FILE,
)
from emoeditor.editing.critic import (
    CONFIDENCE_MODES,
    CRITICS,
    DIRECTION_SOURCES,
    SOURCE_INDEX,
    CriticConfig,
    target_confidence,
)
from emoeditor.editing.intensity import INTENSITIES, apply_intensity
from emoeditor.editing.loading import WHERE_MODELS_COME_FROM, load_model
from emoeditor.editing.loop import IterativeInference, Job, JobResult
from emoeditor.editors.emoeditor import EmoEditorEditor
from emoeditor.emotions import onehot, other_emotions, parse_target, target_label
from emoeditor.errors import EmoEditorError, ImageLoadError, MissingWeightsError
from emoeditor.fileio import atomic_write, atomic_write_text, check_writable, missing_path, written_by_demo
from emoeditor.imageio import OUTPUT_FORMATS, list_inputs, open_image, output_format, save_image, to_square, to_uint8
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.models.predictor import load_predictor
from emoeditor.seeding import mix_seed
from emoeditor.valence_arousal import VA_BANDWIDTH, parse_va, va_path_figure, va_to_mixture

logger = logging.getLogger(__name__)

SEED_MODES = ("same", "hashed")
OUTPUT_SIZES = ("model", "source")
SUMMARY_CSV = "summary.csv"
SKIPPED_CSV = "skipped.csv"  # inputs that could not be used or saved, with the reason (header only when none)
SKIPPED_FIELDS = ("input", "reason")
SUMMARY_FIELDS = ("input", "target", "seed", "output", "iterations", "returned", "accepted", "ssim",
                  "target_confidence", "top_class", "reason")
REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = "demo_img/chelsea.jpg"  # shipped (CC0, scikit-image's data; see demo_img/README.md)
MODEL_RECORDS = ("model_index.json", "training_args.json")  # where an exported model records its training size
TINY_MARKER = "random_weights"  # in a --tiny model's training_args.json: never trained
INTENSITY_KEYS = ("emotion_guidance", "confidence", "ssim_low", "ssim_high")  # what --intensity sets


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


# ---------------------------------------------------------------------------------------- checks
def check_device(spec: str) -> None:
    """A --device this machine has, or a clear error (torch's own arrives late and deep in a traceback)."""
    if spec == "auto":
        return
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise EmoEditorError(f"unknown --device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no GPU or driver is visible"
            raise EmoEditorError(f"--device {spec}: CUDA is not available here ({why}); use --device cpu, or "
                                 f"--device auto to take a GPU when there is one")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EmoEditorError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                 f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise EmoEditorError(f"--device {spec}: Apple's MPS backend is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise EmoEditorError(f"--device {spec}: not supported by test.py; use auto, cpu, cuda, cuda:N or mps")


def resolve_device(spec: str, process=None) -> torch.device:
    check_device(spec)
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


def resolve_target(args) -> Optional[torch.Tensor]:
    """The run's target: --target_va's mixture when given (its point kept in args.target_va), else --target_emo."""
    if args.target_va is None:
        return parse_target_spec(args.target_emo)
    args.target_va = parse_va(args.target_va)
    return va_to_mixture(*args.target_va, bandwidth=args.va_bandwidth)


def resolve_controls(args) -> None:
    """Fill --emotion_guidance and the critic's thresholds from --intensity where not given explicitly."""
    settings = apply_intensity(args.intensity, {k: getattr(args, k) for k in INTENSITY_KEYS})
    for key, value in settings.items():
        setattr(args, key, value)
    if args.emotion_guidance is None:
        args.emotion_guidance = 1.0


def check_numbers(args) -> None:
    """Counts and thresholds that would otherwise fail deep inside the loop, after the models loaded."""
    for flag in ("batch_size", "num_loop", "num_inference_steps"):
        if getattr(args, flag) < 1:
            raise EmoEditorError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.image_size is not None and (args.image_size < 32 or args.image_size % 8):
        raise EmoEditorError(f"--image_size {args.image_size}: use a multiple of 8, at least 32 (the VAE "
                             f"downsamples by 8); leave it out to use the model's own size")
    low, high = args.noise_range
    if not 0 < low <= high < 1000:
        raise EmoEditorError(f"--noise_range {low} {high}: need 0 < LOW <= HIGH < 1000 (start timesteps of "
                             f"the 1000-step schedule; the paper's is {NOISE_START_RANGE[0]} {NOISE_START_RANGE[1]})")
    for flag in ("ssim_low", "ssim_high", "confidence"):
        value = getattr(args, flag)
        if value is not None and not -1 <= value <= 1:
            raise EmoEditorError(f"--{flag} {value}: a threshold between -1 and 1 (SSIM) or 0 and 1 (confidence)")
    for flag in ("emotion_guidance", "direction_scale", "guidance_scale"):
        value = getattr(args, flag)
        if value is not None and not math.isfinite(value):
            raise EmoEditorError(f"--{flag} {value}: give a finite number (1 = the plain edit)")


def check_output_ext(spec: str) -> Optional[str]:
    """The extension (with dot) every edit is saved with, None for 'same'; checked before any work."""
    if spec == "same":
        return None
    ext = "." + spec.lower().lstrip(".")
    if ext not in OUTPUT_FORMATS:
        raise EmoEditorError(f"--output_ext {spec!r} is not a format test.py saves; choose same, "
                             f"{', '.join(sorted(e.lstrip('.') for e in OUTPUT_FORMATS))}")
    return ext


def path_error(flag: str, path: str | Path, advice: str, error: type = EmoEditorError) -> EmoEditorError:
    """'--flag PATH does not exist', how much of it does, where relative paths start, and what to do."""
    path = Path(path)
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    if written_by_demo(path):
        advice = f"It is one of the files `make demo` writes into {DEMO_DIR}: run `make demo` first."
    return error(f"{missing_path(path, flag)}{where}. {advice}")


MODEL_ADVICE = f"{WHERE_MODELS_COME_FROM}. After `make demo`: python test.py --config configs/infer_tiny.yaml"


def check_model_paths(args) -> None:
    """The model folder and the predictor exist (cheap; loading them comes after every other check)."""
    model = Path(args.model_dir)
    official = Path(OFFICIAL_UNET_FILE).name
    if not model.exists():
        raise path_error("--model_dir", model, MODEL_ADVICE, MissingWeightsError)
    if model.is_dir() and not ((model / MODEL_RECORDS[0]).is_file() or (model / official).is_file()):
        raise MissingWeightsError(f"--model_dir {model} holds no model (neither an exported pipeline's "
                                  f"{MODEL_RECORDS[0]} nor the official {official}). {MODEL_ADVICE}")
    if not Path(args.predictor_path).exists():
        raise path_error("--predictor_path", args.predictor_path,
                           "Put the official emo_predictor.pt there (python scripts/download_weights.py; see "
                           "emo_predictor/README.md), train one with scripts/train_predictor.py, or use the tiny one "
                           "`make demo` writes (runs/demo/emo_predictor).", MissingWeightsError)


def model_image_size(model_dir: str | Path) -> tuple[Optional[int], Optional[Path]]:
    """The image size a model was trained at, and the file recording it (None, None: not recorded,
    e.g. the official release, trained at 224)."""
    for name in MODEL_RECORDS:
        path = Path(model_dir) / name
        try:
            size = json.loads(path.read_text()).get("image_size")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(size, int) and size > 0:
            return size, path
    return None, None


def resolve_image_size(args) -> int:
    """--image_size if given, else what the model was trained at (an edit at another size is off-distribution)."""
    trained, record = model_image_size(args.model_dir)
    if args.image_size is None:
        size = trained or IMAGE_SIZE
        why = f"from {record}" if trained else f"the default; {args.model_dir} records no training size"
        logger.info("image size %d px (%s; --image_size overrides it)", size, why)
    else:
        size = args.image_size
        if trained and trained != size:
            logger.warning("--image_size %d differs from the %d px the model was trained at (%s); edits at another "
                           "size than training's are usually worse", size, trained, record)
        else:
            logger.info("image size %d px (--image_size)", size)
    return size


# ----------------------------------------------------------------------------------- the inputs
def resolve_inputs(args, out_dir: Path) -> tuple[list[Path], Optional[Path]]:
    """--input_path to its files (and the folder they mirror under the output folder), or a clear error."""
    spec = str(args.input_path)
    if spec == DEMO_IMAGE and not Path(spec).exists() and (REPO / DEMO_IMAGE).exists():
        spec = str(REPO / DEMO_IMAGE)  # the shipped demo image, wherever test.py is run from
    listing = list_inputs(spec, recursive=args.recursive, exclude=[out_dir])
    if listing.root is None and not listing.files:
        if any(c in spec for c in "*?["):
            prefix = re.split(r"[*?\[]", spec)[0]  # the pattern's fixed start: its folder, or a folder + a name start
            folder = Path(prefix) if prefix.endswith(("/", os.sep)) else Path(prefix).parent
            state = "exists" if folder.is_dir() else "does not exist"
            raise ImageLoadError(f"--input_path {spec}: no such file, and no file matches it as a pattern "
                                 f"(its folder {folder} {state})")
        raise path_error("--input_path", spec, "Pass an image, a folder of images or a quoted glob such as "
                           "\"photos/*.jpg\".", ImageLoadError)
    if listing.root is not None and not listing.files:
        folders = listing.skipped_folders
        if folders:
            names = ", ".join(q.name for q in folders[:5]) + (", ..." if len(folders) > 5 else "")
            raise ImageLoadError(f"--input_path {spec}: the folder holds no files, only {len(folders)} subfolder(s) "
                                 f"({names}); pass --recursive to edit the images inside them")
        where = " or its subfolders" if args.recursive else ""
        raise ImageLoadError(f"--input_path {spec}: nothing to edit, the folder{where} holds no files")
    if listing.skipped_folders:
        logger.warning("%d subfolder(s) of %s skipped (%s); pass --recursive to edit the images inside them",
                       len(listing.skipped_folders), spec, ", ".join(q.name for q in listing.skipped_folders[:5]))
    return listing.files, listing.root


@dataclass(frozen=True)
class OutputName:
    """Where one input's edits go: a folder under the output folder (recursive runs mirror the input
    tree), the input's name stem and the extension its edits are saved with."""
    folder: Path
    stem: str
    ext: str

    def job(self, seed: int, label: str) -> str:
        """The official naming, {seed}_{target}_{name}."""
        return (self.folder / f"{seed}_{label}_{self.stem}{self.ext}").as_posix()


def plan_outputs(paths: Sequence[Path], root: Optional[Path], ext: Optional[str]) -> dict[Path, OutputName]:
    """One output name per input, never shared: inputs whose names differ only in the extension
    (photo.jpg, photo.png) keep it in the stem (photo_jpg, photo_png), deterministically; what is
    still shared (the same file name in two folders of a glob) is an error before any work."""
    groups: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    folder_of = {p: (p.parent.relative_to(root) if root is not None else Path()) for p in paths}
    for path in paths:
        groups[folder_of[path], path.stem.casefold()].append(path)  # casefold: macOS/Windows file names
    names: dict[Path, OutputName] = {}
    no_format = []
    for group in groups.values():
        for path in group:
            stem = path.stem if len(group) == 1 or not path.suffix else f"{path.stem}_{path.suffix.lstrip('.')}"
            out_ext = ext or (path.suffix if output_format(path) else ".png")
            if ext is None and not output_format(path):
                no_format.append(path.name)
            names[path] = OutputName(folder_of[path], stem, out_ext)
    taken: dict[tuple[Path, str], Path] = {}
    for path, name in names.items():
        key = (name.folder, name.stem.casefold())
        if key in taken:
            other = taken[key]
            why = "have the same file name" if other.name == path.name else f"would both be saved as {name.stem}"
            raise EmoEditorError(f"{other} and {path} {why}, so their outputs ({name.job(0, 'awe')} and the "
                                 f"like) would overwrite each other; rename one")
        taken[key] = path
    if no_format:
        logger.info("%d input(s) have no extension test.py saves as (e.g. %s): their edits are saved as PNG",
                    len(no_format), no_format[0])
    return names


OUTPUT_DIRS = {"image": "", "trace": "traces", "strip": "strips", "candidates": "candidates"}  # kind -> subfolder


def job_files(out_dir: Path, name: str) -> dict[str, Path]:
    """Every file (or folder, for candidates) one job writes, by kind."""
    stem = Path(name).with_suffix("").as_posix()
    return {"image": out_dir / name, "trace": out_dir / OUTPUT_DIRS["trace"] / f"{stem}.json",
            "strip": out_dir / OUTPUT_DIRS["strip"] / f"{stem}.png",
            "candidates": out_dir / OUTPUT_DIRS["candidates"] / stem}


def check_outputs(args, out_dir: Path, names: dict[Path, OutputName], target: Optional[torch.Tensor]) -> None:
    """No output of an earlier run is replaced without --overwrite, and every output folder is writable."""
    labels = [target_label(target)] if target is not None else list(EMOTIONS)  # 'all': P picks 7 of the 8
    kinds = ["image", "trace"] + ["strip"] * args.save_strip + ["candidates"] * args.save_candidates
    existing = []
    for path, name in names.items():
        for label in labels:
            files = job_files(out_dir, name.job(job_seed(args.random_seed, path.name, label, args.seed_mode), label))
            existing += [files[k] for k in kinds if files[k].exists()]
    if existing and not args.overwrite:
        raise EmoEditorError(f"{len(existing)} output(s) of this run already exist in {out_dir} (e.g. "
                             f"{existing[0]}), from an earlier run; pass --overwrite to replace them, or choose "
                             f"another --test_save_dir")
    check_writable({"--test_save_dir": out_dir})
    folders = {}
    for folder in sorted({out_dir / OUTPUT_DIRS[k] / name.folder for name in names.values() for k in kinds}):
        if folder != out_dir:
            folders[f"--test_save_dir ({folder.relative_to(out_dir).as_posix()}/)"] = folder
    check_writable(folders)


def summary_names(out_dir: Path) -> tuple[str, str]:
    """summary.csv and skipped.csv, or -2, -3, ... when an earlier run's are there: never replaced."""
    n = 1
    while True:
        tail = "" if n == 1 else f"-{n}"
        names = (f"{Path(SUMMARY_CSV).stem}{tail}.csv", f"{Path(SKIPPED_CSV).stem}{tail}.csv")
        if not any((out_dir / name).exists() for name in names):
            if n > 1:
                logger.info("%s of an earlier run is kept; this run's summary goes to %s", SUMMARY_CSV, names[0])
            return names
        n += 1


# ------------------------------------------------------------------------------------ tiny model
def write_tiny_assets(model_dir: str | Path, predictor_path: str | Path, input_path: Optional[str | Path] = None,
                      seed: int = 0) -> list[Path]:
    """Random-weight tiny model and predictor (and two photos if `input_path`) where missing; the
    paths created. For smoke runs only: every edit is noise."""
    from PIL import Image
    from skimage import data

    from emoeditor.editing.pipeline import EmoEditorPipeline
    from emoeditor.models.components import sd_v1_ddim_scheduler
    from emoeditor.models.predictor import save_predictor
    from emoeditor.models.tiny import TINY_IMAGE_SIZE, tiny_emotion_encoder, tiny_predictor, tiny_unet, tiny_vae

    model_dir, predictor_path = Path(model_dir), Path(predictor_path)
    created = []
    if not (model_dir / MODEL_RECORDS[0]).exists():
        pipe = EmoEditorPipeline(unet=tiny_unet(seed), vae=tiny_vae(seed), scheduler=sd_v1_ddim_scheduler(),
                                 emotion_encoder=tiny_emotion_encoder(seed))
        pipe.save_pretrained(model_dir, safe_serialization=True)
        # the size to edit at, where train.py's export records it; the marker says it was never trained
        (model_dir / MODEL_RECORDS[1]).write_text(json.dumps({"image_size": TINY_IMAGE_SIZE, TINY_MARKER: True}))
        created.append(model_dir)
    if not predictor_path.exists():
        save_predictor(tiny_predictor(seed), predictor_path, official_pt=False)
        created.append(predictor_path)
    if input_path is not None and not Path(input_path).exists():
        folder = Path(input_path)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("astronaut", "coffee"):
            Image.fromarray(getattr(data, name)()).resize((128, 128)).save(folder / f"{name}.png")
        created.append(folder)
    return created


def use_tiny(args) -> None:
    """--tiny DIR: write (once) and use a random-weight tiny model and predictor in DIR."""
    if args.tiny is True:  # `tiny: true` in an old preset
        raise EmoEditorError("tiny: true is no longer a preset option (it turned mistyped paths into random "
                             "models); pass --tiny DIR to write a random tiny model there, or run `make demo` and "
                             "use configs/infer_tiny.yaml")
    root = Path(args.tiny)
    model, predictor = root / "model", root / "emo_predictor"
    record = model / MODEL_RECORDS[1]
    if model.exists() and not (record.is_file() and json.loads(record.read_text()).get(TINY_MARKER)):
        raise EmoEditorError(f"--tiny {root}: {model} exists and is not a tiny model --tiny wrote; --tiny only "
                             f"writes random weights into a folder of its own, so choose another DIR")
    created = write_tiny_assets(model, predictor)
    what = "created" if created else "reusing"
    logger.warning("--tiny: %s a RANDOM-WEIGHT tiny model %s and predictor %s (every edit is noise: a smoke "
                   "test of the pipeline, not a trained model)", what, model, predictor)
    args.model_dir, args.predictor_path = str(model), str(predictor)


# ------------------------------------------------------------------------------------- one job
class _Skipped(list):
    """(path, reason) of every input that could not be used, or edit that could not be saved."""


def _jobs(paths: Sequence[Path], names: dict[Path, OutputName], target: Optional[torch.Tensor], args, predictor,
          device, skipped: _Skipped, on_skip: Callable[[], None] = lambda: None) -> Iterator[Job]:
    """Jobs in input order; a file that cannot be loaded is recorded in `skipped` and the rest go on."""
    extra = {"intensity": args.intensity} if args.intensity else {}
    if args.target_va is not None:
        extra["target_va"] = list(args.target_va)
    for path in paths:
        try:
            img = open_image(path)
        except ImageLoadError as exc:
            skipped.append((str(path), str(exc)))
            on_skip()
            continue
        image = to_square(img, args.image_size)
        if target is None:
            with torch.no_grad():
                top = int(predictor(image[None].to(device)).argmax())
            targets = [onehot(e) for e in other_emotions(top)]
        else:
            targets = [target]
        for tgt in targets:
            label = target_label(tgt)
            seed = job_seed(args.random_seed, path.name, label, args.seed_mode)
            yield Job(image=image, target=tgt, seed=seed, name=names[path].job(seed, label),
                      meta={"input": str(path), "target_label": label, "source_size": list(img.size), **extra})


def trace_json(trace: dict) -> str:
    """Indented JSON with every list of numbers (P's probabilities, the target) on one line."""
    text = json.dumps(trace, indent=1)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


VERDICTS = {"paper": ("accept", "reject"), "official": ("kept", "dropped")}  # per-iteration rule, by critic


def strip_labels(trace: dict) -> list[list[str]]:
    """The lines under each tile of a strip: the source, every iteration (SSIM to the source, P's
    confidence in the target, the critic's verdict), the returned image and why it was returned."""
    mode = trace["thresholds"]["confidence_mode"]
    source = target_confidence(torch.tensor(trace["source_probs"]), torch.tensor(trace["target"]), mode)
    labels = [["source", f"P {source:.2f}"]]
    verdicts = VERDICTS.get(trace["critic"])
    for it in trace["iterations"]:
        verdict = "-" if verdicts is None or it["accepted"] is None else verdicts[0 if it["accepted"] else 1]
        labels.append([f"it {it['index'] + 1}", f"SSIM {it['ssim']:.2f}", f"P {it['target_confidence']:.2f}",
                       verdict])
    returned = trace["returned"]
    why = "no critic" if verdicts is None else "accepted" if trace["accepted"] else "fallback"
    labels.append(["returned", "source" if returned == SOURCE_INDEX else f"it {returned + 1}", why])
    return labels


def va_plot_image(trace: dict):
    """The trace's valence-arousal path (`va_path_figure`) as an RGB PIL image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(va_path_figure(trace))
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def labelled_strip(result: JobResult):
    """Source, every candidate and the returned image side by side, each labelled underneath, and below
    them the critic's path in the valence-arousal plane (PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [result.job.image.cpu()] + list(result.candidates or []) + [result.image]
    row = Image.fromarray(to_uint8(torch.cat(tiles, dim=-1)))
    labels = strip_labels(result.trace)
    font = ImageFont.load_default()
    line = font.getbbox("Ag")[3] + 2
    tile = tiles[0].shape[-1]
    labelled = row.height + line * max(map(len, labels)) + 4
    plot = va_plot_image(result.trace)
    canvas = Image.new("RGB", (max(row.width, plot.width), labelled + plot.height), "white")
    canvas.paste(row, (0, 0))
    canvas.paste(plot, (0, labelled))
    draw = ImageDraw.Draw(canvas)
    for k, lines in enumerate(labels):
        for j, text in enumerate(lines):
            draw.text((k * tile + 2, row.height + 2 + j * line), text, fill="black", font=font)
    return canvas


def save_job(result: JobResult, out_dir: Path, args) -> Path:
    """Write one job's image (at the source's size with --output_size source), trace, strip, candidates."""
    files = job_files(out_dir, result.job.name)
    size = tuple(result.job.meta["source_size"]) if args.output_size == "source" else None
    atomic_write(files["image"], lambda tmp: save_image(result.image, tmp, size))
    result.trace["output"] = str(files["image"])
    atomic_write_text(files["trace"], trace_json(result.trace))
    if args.save_strip:
        strip = labelled_strip(result)
        atomic_write(files["strip"], lambda tmp: strip.save(tmp))
    if args.save_candidates:
        shutil.rmtree(files["candidates"], ignore_errors=True)  # an earlier run's (--overwrite) may have had more
        for i, cand in enumerate(result.candidates or []):
            save_image(cand, files["candidates"] / f"iter_{i:02d}.png")
    return files["image"]


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


def build_engine(pipe, predictor, args, device: torch.device, return_candidates: bool = False,
                 on_step: Callable[[int], None] = lambda n: None) -> IterativeInference:
    critic = CriticConfig(args.critic, num_loop=args.num_loop, ssim_low=args.ssim_low, ssim_high=args.ssim_high,
                          confidence=args.confidence, confidence_mode=args.confidence_mode,
                          direction_probs=args.direction_probs)
    editor = EmoEditorEditor(pipe, predictor, args.emotion_input, args.num_inference_steps, tuple(args.noise_range),
                             args.guidance_scale, args.emotion_guidance, args.direction_scale)
    return IterativeInference(editor, predictor.probs, critic, batch_size=args.batch_size,
                              ssim_backend=args.ssim_backend, device=device, return_candidates=return_candidates,
                              on_step=on_step)


class _Progress:
    """Two bars with an ETA: jobs, and edit iterations (each job's at most --num_loop, trimmed when
    its critic stops early), so a 20-minute CPU edit never sits at 0/1."""

    def __init__(self, jobs: int, max_iterations: int, prefix: str, disable: bool):
        self.max_iterations = max_iterations
        self.jobs = tqdm(total=jobs, desc=f"{prefix}jobs", unit="job", disable=disable, position=0)
        self.iterations = tqdm(total=jobs * max_iterations, desc=f"{prefix}edit iterations", unit="edit",
                               disable=disable, position=1)

    def step(self, n: int) -> None:
        self.iterations.update(n)

    def job_done(self, iterations: int) -> None:
        self.iterations.total -= self.max_iterations - iterations
        self.iterations.refresh()
        self.jobs.update(1)

    def uncount(self, jobs: int) -> None:
        """An input that could not be loaded: its jobs will never run."""
        self.jobs.total -= jobs
        self.iterations.total -= jobs * self.max_iterations
        self.jobs.refresh()
        self.iterations.refresh()

    def close(self) -> None:
        self.iterations.close()
        self.jobs.close()


# ---------------------------------------------------------------------------------------- parser
TEST_USAGE = """Edit images toward a target emotion with iterative emotion inference (paper Sec. 3.3): each
job is edited, judged by the critic (emotion predictor P + SSIM to the source) and edited again
until accepted or --num_loop edits; writes the edits, a trace per job and summary.csv."""

TEST_EXAMPLES = """\
examples:
  python test.py                                        # the shipped demo_img/chelsea.jpg toward awe, with the
                                                        # official weights in model/ (scripts/download_weights.py)
  python test.py --config configs/infer_tiny.yaml       # after `make demo`: its tiny trained model, CPU, seconds
  python test.py --tiny runs/tiny --num_loop 3          # random-weight tiny model written to runs/tiny (noise)
  python test.py --model_dir save_models/model --input_path photo.jpg --target_emo awe
  python test.py --model_dir save_models/model --input_path photos/ --recursive --target_emo all --batch_size 16
  python test.py --model_dir save_models/model --input_path "photos/*.jpg" --target_emo awe:0.5,excitement:0.5 \\
      --output_size source --save_strip
  accelerate launch test.py --model_dir save_models/model --input_path photos/ --target_emo all   # over GPUs

Each job writes {seed}_{target}_{name}, traces/<job>.json and (--save_strip) strips/<job>.png; a run writes
summary.csv and skipped.csv (summary-2.csv, ... when an earlier run's are in the folder: never replaced).
Existing outputs are never replaced without --overwrite. YAML presets (configs/) only set these flags' defaults.
"""


def seed_arg(value: str):
    return None if value.lower() == "none" else int(value)


def build_parser() -> argparse.ArgumentParser:
    """test.py's flags, grouped; the official ones keep their names (all settable from a --config preset)."""
    p = argparse.ArgumentParser(prog="test.py", description=TEST_USAGE, epilog=TEST_EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("--config", default=None, help="YAML preset (configs/infer_*.yaml) whose values become these "
                                                  "flags' defaults")
    add_verbosity_args(p)
    flag = dict(action=argparse.BooleanOptionalAction, default=False)

    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--input_path", default=DEMO_IMAGE, help="an image, a folder of images or a quoted glob")
    g.add_argument("--recursive", **flag, help="also edit the images in the subfolders of a folder (or a ** glob); "
                                               "outputs mirror the subfolders")
    targets = g.add_mutually_exclusive_group()
    targets.add_argument("--target_emo", default="awe",
                         help="an emotion, a mixture (awe:0.5,excitement:0.5), or 'all' (the 7 emotions other than "
                              "P's top class on the source; the paper's evaluation instead excludes the source's "
                              "EmoSet label, which scripts/evaluate.py does)")
    targets.add_argument("--target_va", default=None, metavar="V,A",
                         help="a point of the valence-arousal plane (1-9 scales, e.g. 7.5,6), edited toward as the "
                              "mixture of the categories near it (emoeditor/valence_arousal.py); replaces a "
                              "preset's target_emo")
    g.add_argument("--test_save_dir", default="save_test_res", help="output folder")
    g.add_argument("--output_ext", default="same",
                   help="'same' keeps the input's extension as the official names do (a .jpg is saved as JPEG; "
                        "an input without a savable extension is saved as PNG); png saves losslessly; also "
                        f"{', '.join(sorted(e.lstrip('.') for e in OUTPUT_FORMATS if e != '.png'))}")
    g.add_argument("--output_size", choices=OUTPUT_SIZES, default="model",
                   help="model: the edit as the model made it (square, --image_size); source: resized (Lanczos) "
                        "to the source's width and height")
    g.add_argument("--overwrite", **flag, help="replace outputs of an earlier run (never summary.csv)")
    g.add_argument("--save_strip", **flag, help="also save a labelled strip of every iteration per job")
    g.add_argument("--save_candidates", **flag, help="also save every iteration's image")

    g = p.add_argument_group("model")
    g.add_argument("--model_dir", default="model",
                   help="train.py's exported folder, or the folder with the official model_ip2p.pt + model_emoenc.pt")
    g.add_argument("--base_model", default=IP2P_HUB_ID,
                   help="InstructPix2Pix architecture for the official .pt files (hub id or local folder)")
    g.add_argument("--predictor_path", default="emo_predictor/emo_predictor.pt", help="the emotion predictor P")
    g.add_argument("--image_size", type=int, default=None,
                   help="side the model edits at (default: what the model folder records it was trained at, "
                        f"else {IMAGE_SIZE})")
    g.add_argument("--emotion_input", choices=("direction", "onehot"), default=None,
                   help="encoder input (default: what the model was trained with, from its config)")
    g.add_argument("--tiny", default=None, metavar="DIR",
                   help="write a random-weight tiny model and predictor into DIR (once) and use them: a CPU smoke "
                        "test whose edits are noise")
    g.add_argument("--no-tiny", dest="tiny", action="store_const", const=None, help=argparse.SUPPRESS)

    g = p.add_argument_group("critic (paper Sec. 3.3)")
    g.add_argument("--critic", choices=CRITICS, default="paper",
                   help="paper: 0.3<SSIM<0.8 and confidence>0.8; official: the official test.py logic; none: one edit")
    g.add_argument("--num_loop", type=int, default=NUM_LOOP, help="at most this many edits per job")
    g.add_argument("--ssim_low", type=float, default=None, help="default: paper 0.3, official 0.5")
    g.add_argument("--ssim_high", type=float, default=None, help="default: 0.8")
    g.add_argument("--confidence", type=float, default=None, help="default: paper 0.8, official 0.6")
    g.add_argument("--confidence_mode", choices=CONFIDENCE_MODES, default="support",
                   help="target confidence of a mixture: P's mass on its emotions (support) or sum w_i*P_i")
    g.add_argument("--direction_probs", choices=DIRECTION_SOURCES, default="source",
                   help="paper critic: direction = target - P(source) (fixed) or - P(current input)")
    g.add_argument("--ssim_backend", choices=("torch", "skimage"), default="torch",
                   help="SSIM: torch (batched on the device) or skimage (the official reference, on the CPU)")

    g = p.add_argument_group("one edit")
    g.add_argument("--num_inference_steps", type=int, default=NUM_INFERENCE_STEPS, help="DDIM steps per edit")
    g.add_argument("--noise_range", type=int, nargs=2, default=list(NOISE_START_RANGE), metavar=("LOW", "HIGH"),
                   help="start timestep drawn from [LOW, HIGH]")
    g.add_argument("--guidance_scale", type=float, default=1.0, help="1 = no classifier-free guidance (official)")

    g = p.add_argument_group("emotion control (how strongly, toward what)")
    g.add_argument("--intensity", choices=tuple(INTENSITIES), default=None,
                   help="one knob: sets --emotion_guidance, --confidence, --ssim_low and --ssim_high together "
                        "(table in emoeditor/editing/intensity.py; medium = the paper's); explicit flags win")
    g.add_argument("--emotion_guidance", type=float, default=None,
                   help="s in eps(tau(0)) + s (eps(tau(d)) - eps(tau(0))): >1 pushes further, <1 holds back; "
                        "default 1 (the plain edit)")
    g.add_argument("--direction_scale", type=float, default=1.0,
                   help="the emotion encoder's input is this times the direction target - P(source)")
    g.add_argument("--va_bandwidth", type=float, default=VA_BANDWIDTH,
                   help="--target_va: width of the kernel that turns a point into a mixture (rating-scale units)")

    g = p.add_argument_group("seeds and running")
    g.add_argument("--random_seed", type=seed_arg, default=75863, help="seed of every job ('none': draw one)")
    g.add_argument("--seed_mode", choices=SEED_MODES, default="same",
                   help="same: every job uses --random_seed (as official per-image runs); hashed: per (file, target)")
    g.add_argument("--batch_size", type=int, default=1, help="jobs edited together (continuous batching)")
    g.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N, mps")
    g.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, as official, else float32), float32, "
                                                   "float16, bfloat16")
    g.add_argument("--compile", **flag, help="torch.compile the UNet and P (long GPU runs)")
    return p


def main(argv=None) -> dict:
    """test.py's entry point: flags (and an optional --config preset) -> run_inference."""
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    return run_inference(args)


# ------------------------------------------------------------------------------------------- run
def _process_state(device_spec: str):
    """accelerate's view of this process (rank/world under `accelerate launch` or torchrun, else 1 process).

    On machines without CUDA (or with --device cpu) accelerate only forms a multi-process group
    when asked for CPU explicitly.
    """
    from accelerate import PartialState

    return PartialState(cpu=device_spec == "cpu" or not torch.cuda.is_available())


def run_inference(args, process=None) -> dict:
    """test.py: edit every (input, target) job, write images, traces and the summary CSV.

    `process` is accelerate's PartialState (or anything with num_processes, process_index,
    is_main_process, wait_for_everyone, device); under ``accelerate launch`` each process takes
    a round-robin share of the input files and the main process merges the summaries.
    """
    # 1. everything that can be checked without loading a model
    target = resolve_target(args)
    resolve_controls(args)
    check_numbers(args)
    ext = check_output_ext(args.output_ext)
    check_device(args.device)
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
    out_dir = Path(args.test_save_dir).resolve()
    all_paths, root = resolve_inputs(args, out_dir)
    names = plan_outputs(all_paths, root, ext)
    if args.tiny:
        if process.is_main_process:
            use_tiny(args)
        process.wait_for_everyone()
        if not process.is_main_process:
            use_tiny(args)
    check_model_paths(args)
    paths = shard(all_paths, rank, world)
    check_outputs(args, out_dir, {p: names[p] for p in paths}, target)  # a process writes only its share's
    summary_name, skipped_name = summary_names(out_dir)
    process.wait_for_everyone()  # no process starts work before every one has checked
    args.image_size = resolve_image_size(args)
    per_file = 1 if target is not None else NUM_EMOTIONS - 1
    max_iterations = 1 if args.critic == "none" else args.num_loop
    if device.type == "cpu":
        quick = [f"--{flag} {value}" for flag, value in (("num_loop", 3), ("num_inference_steps", 10))
                 if getattr(args, flag) > value]
        logger.info("on CPU each job takes up to --num_loop %d edits of --num_inference_steps %d denoising steps at "
                    "%d px (%d jobs here)%s", max_iterations, args.num_inference_steps, args.image_size,
                    len(paths) * per_file, f"; for a quick look lower them, e.g. {' '.join(quick)}" if quick else "")

    # 2. the models
    predictor = load_predictor(args.predictor_path, device=device)  # small: fail fast on a bad file
    pipe = load_model(args.model_dir, args.base_model, dtype, device)
    trained_input = pipe.config.emotion_input
    if args.emotion_input and args.emotion_input != trained_input:
        logger.warning("--emotion_input %s differs from the %s input the model was trained with", args.emotion_input,
                       trained_input)
    else:
        logger.info("emotion encoder input: %s (%s)", trained_input,
                    "--emotion_input" if args.emotion_input else "from the model's config")
    if args.compile:  # pays off on long GPU runs: every call has the same (padded) batch shape
        pipe.unet = torch.compile(pipe.unet)
        predictor.net = torch.compile(predictor.net)

    # 3. the edits; the summary is written whatever happens to them
    prefix = f"[{rank}/{world}] " if world > 1 else ""
    progress = _Progress(len(paths) * per_file, max_iterations, prefix, disable=args.quiet)
    keep = bool(args.save_strip or args.save_candidates)
    engine = build_engine(pipe, predictor, args, device, return_candidates=keep, on_step=progress.step)
    skipped, failed, rows = _Skipped(), _Skipped(), []
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        jobs = _jobs(paths, names, target, args, predictor.probs, device, skipped, lambda: progress.uncount(per_file))
        for result in engine.run(jobs):
            progress.job_done(len(result.trace["iterations"]))
            try:
                out_path = save_job(result, out_dir, args)
            except (OSError, ValueError) as exc:  # a full disk, a vanished folder: name it, keep going
                failed.append((result.trace["input"], f"edit {result.job.name} could not be saved: {exc}"))
                logger.error("%s", failed[-1][1])
                continue
            rows.append(_row(result, out_path))
    finally:
        progress.close()
        skipped_rows = [{"input": path, "reason": reason} for path, reason in skipped + failed]
        tables = ((summary_name, rows, SUMMARY_FIELDS), (skipped_name, skipped_rows, SKIPPED_FIELDS))
        for name, table, fields in tables:
            _write_csv(out_dir / (f"{Path(name).stem}.rank{rank}.csv" if world > 1 else name), table, fields)
    for path, reason in skipped:
        logger.warning("skipped %s: %s", path, reason)
    if world > 1:
        process.wait_for_everyone()
        if process.is_main_process:
            for name, _, fields in tables:
                merge_csv(out_dir, name, world, fields)
    summary = {"done": len(rows), "skipped": list(skipped), "failed": list(failed), "rows": rows,
               "summary": out_dir / summary_name, "out_dir": out_dir, "image_size": args.image_size}
    print(report(summary, args.critic, out_dir / skipped_name, args.save_strip, f"[process {rank}/{world}] "
                 if world > 1 else ""))
    if world == 1 and not rows and skipped and not failed:
        raise ImageLoadError("no input could be used: " + "; ".join(reason for _, reason in skipped))
    if failed:
        raise EmoEditorError(f"{len(failed)} edit(s) could not be saved (named in {out_dir / skipped_name}): "
                             + "; ".join(reason for _, reason in failed[:3]))
    return summary


def report(summary: dict, critic: str, skipped_csv: Path, strips: bool, who: str = "") -> str:
    """The end of a run: what was done, what the critic made of it, where everything is (full paths)."""
    rows, n = summary["rows"], summary["done"]
    accepted = sum(str(r["accepted"]) == "True" for r in rows)
    if critic == "none":
        verdict = "one edit each, no critic (--critic none)"
    else:
        verdict = f"{accepted} accepted by the critic, {n - accepted} returned by its fallback (--critic {critic})"
    out_dir = summary["out_dir"]
    lines = [f"{who}{n} edits: {verdict}"]
    if summary["skipped"] or summary["failed"]:
        lines.append(f"{who}{len(summary['skipped'])} input(s) skipped, {len(summary['failed'])} edit(s) not "
                     f"saved: see {skipped_csv}")
    lines += [f"{who}  edits:   {out_dir}", f"{who}  summary: {summary['summary']}",
              f"{who}  traces:  {out_dir / OUTPUT_DIRS['trace']}"]
    if strips:
        lines.append(f"{who}  strips:  {out_dir / OUTPUT_DIRS['strip']}")
    return "\n".join(lines)
