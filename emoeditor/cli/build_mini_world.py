"""Build the miniature world: a tiny VAE, P and EmoEditor trained on synthetic emotion styles, on CPU.

examples:
    python scripts/build_mini_world.py                        # rebuild mini_world/ (about 30 min on 2 cores)
    python scripts/build_mini_world.py --reduced --work /tmp/mw --out /tmp/mw/ship   # seconds: CI's check

The world: eight emotion *styles* (data/toy.py EMOTION_EDITS: fear is dark, cold and vignetted,
contentment soft golden light, ...) applied at random strength to crops of scikit-image's bundled
photos. Stages, each skipped when its output is complete, so a killed build goes on where it stopped:

1. emoset     a toy EmoSet (train/val/test lists, release layout) of styled crops
2. vae        a tiny AutoencoderKL trained for reconstruction (training/vae.py; the real VAE is never trained)
3. base       a tiny InstructPix2Pix folder (random UNet and CLIP text encoder) around that VAE
4. predictor  P, a ResNet18 at 64 px, trained by scripts/train_predictor.py on the toy EmoSet
5. emopair    a toy EmoPair (same crop in style A at strength 0-1.5 -> style B) with P's softmax on each source
6. editor     EmoEditor trained by train.py from the base, exported
7. ship       the exported model and P (fp16) copied to --out, evaluated there (P's accuracy, a
              miniature Table 1), digests and the measured numbers in manifest.json and README.md

Same seed, same torch and CPU => the same weights, bit for bit (manifest.json records the digests and
tests/test_mini_world.py checks the shipped files against them). A miniature trained on synthetic
styles: it shows the machinery working end to end, not the paper's model.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from emoeditor.config import HelpFormatter, parse_args
from emoeditor.logs import add_verbosity_args, setup_logging, verbosity_flags

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
MINI_WORLD_DIR = REPO / "mini_world"  # the shipped folder
MANIFEST = "manifest.json"
STAGES = ("emoset", "vae", "base", "predictor", "emopair", "editor", "ship")
EVAL_METHODS = ("ours", "wo_P", "identity")
TABLE1_COLUMNS = ("EMR", "ESR", "ENRD", "ESS")
# EmoPair sources in their own style from none to strong (the toy EmoSet's range is 0.7-1.5): the editor
# meets both plain photos (the demo) and strongly styled ones (the test list) as inputs.
SOURCE_STRENGTH = (0.0, 1.5)


@dataclass(frozen=True)
class Sizes:
    """Everything the full build and CI's reduced one differ in."""

    emoset_per_class: tuple[int, int, int]
    vae_steps: int
    predictor_epochs: int
    num_pairs: int
    editor_steps: int
    eval_per_class: int
    num_loop: int
    num_inference_steps: int


FULL = Sizes(emoset_per_class=(150, 25, 25), vae_steps=1500, predictor_epochs=8, num_pairs=1600,
             editor_steps=3000, eval_per_class=5, num_loop=10, num_inference_steps=20)
REDUCED = Sizes(emoset_per_class=(4, 1, 1), vae_steps=4, predictor_epochs=1, num_pairs=16,
                editor_steps=4, eval_per_class=1, num_loop=2, num_inference_steps=2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default=str(MINI_WORLD_DIR), help="the shipped folder: model/, emo_predictor/, "
                   "manifest.json, README.md")
    p.add_argument("--work", default="runs/mini_world_build", help="datasets, checkpoints and logs of the build")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage")
    p.add_argument("--reduced", action="store_true", help="a few steps of every stage (CI: it runs, it is "
                   "deterministic); never for the shipped weights")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads: CPU kernels reduce in a different order "
                   "with another count, so the weights are bit-identical only at the same count")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                   help="run only these stages (each needs the outputs of the ones before it)")
    add_verbosity_args(p.add_argument_group("logging"))
    return p


# ------------------------------------------------------------------------------------------- stages
def stage_emoset(work: Path, sizes: Sizes, seed: int) -> Path:
    from emoeditor.data.toy_emoset import write_toy_emoset

    root = work / "emoset"
    if not (root / "info.json").exists():  # written last
        shutil.rmtree(root, ignore_errors=True)
        write_toy_emoset(root, "release", sizes.emoset_per_class, image_size=64, seed=seed)
    return root


def stage_vae(work: Path, sizes: Sizes, seed: int) -> Path:
    from emoeditor.training.vae import train_tiny_vae

    train_tiny_vae(work / "vae", steps=sizes.vae_steps, seed=seed)  # returns at once when already trained
    return work / "vae"


def stage_base(work: Path, seed: int) -> Path:
    from emoeditor.models.tiny import save_tiny_base

    base = work / "base_ip2p"
    if not (base / "model_index.json").exists():
        tmp = work / ".base_ip2p.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_tiny_base(tmp, seed=seed)
        shutil.rmtree(tmp / "vae")
        shutil.copytree(work / "vae", tmp / "vae", ignore=shutil.ignore_patterns("training_summary.json"))
        tmp.rename(base)
    return base


def stage_predictor(work: Path, sizes: Sizes, seed: int, log_flags: list[str]) -> Path:
    from emoeditor.cli.train_predictor import main as train_predictor_main
    from emoeditor.training.predictor import STATE_FILE

    out = work / "predictor"
    if not (out / "eval_test.json").exists():  # the final report: training finished
        train_predictor_main([
            "--config", str(REPO / "configs" / "predictor_mini.yaml"), "--data_root", str(work / "emoset"),
            "--output_dir", str(out), "--epochs", str(sizes.predictor_epochs), "--seed", str(seed),
            *(["--resume"] if (out / STATE_FILE).exists() else []), *log_flags])
    return out


def stage_emopair(work: Path, sizes: Sizes, seed: int) -> tuple[Path, Path]:
    """The toy EmoPair, then every source_softmax replaced by P's softmax on that source (as EmoPair's)."""
    from emoeditor.data.toy import write_toy_emopair
    from emoeditor.fileio import atomic_write_text

    root, json_path = work / "EmoPair", work / "json" / "data_EmoPair.json"
    if not json_path.exists():
        draft = write_toy_emopair(root, work / "json" / "draft.json", num_pairs=sizes.num_pairs, image_size=64,
                                  seed=seed, source_strength=SOURCE_STRENGTH)
        entries = json.loads(draft.read_text())
        probs = predictor_softmax(work / "predictor", [root / e["img_src_path"] for e in entries])
        for entry, p in zip(entries, probs):
            entry["source_softmax"] = p
        atomic_write_text(json_path, "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
        draft.unlink()
    return root, json_path


def predictor_softmax(predictor_dir: Path, paths: list[Path], batch_size: int = 64) -> list[list[float]]:
    """P's softmax on each image, rounded to 6 decimals with the rounding error on the top class."""
    import torch

    from emoeditor.imageio import load_image
    from emoeditor.models.predictor import load_predictor

    predictor = load_predictor(predictor_dir)
    out = []
    for i in range(0, len(paths), batch_size):
        batch = torch.stack([load_image(p) for p in paths[i:i + batch_size]])
        for row in predictor.probs(batch).double().tolist():
            row = [round(p, 6) for p in row]
            top = max(range(len(row)), key=row.__getitem__)
            row[top] = round(1.0 - (sum(row) - row[top]), 6)
            out.append(row)
    return out


def stage_editor(work: Path, sizes: Sizes, seed: int, log_flags: list[str]) -> Path:
    from emoeditor.cli.train import main as train_main

    model = work / "model"
    if not (model / "model_index.json").exists():
        steps = sizes.editor_steps
        train_main([
            "--config", str(REPO / "configs" / "mini.yaml"), "--base_model", str(work / "base_ip2p"),
            "--json_path", str(work / "json" / "data_EmoPair.json"), "--data_root", str(work / "EmoPair"),
            "--max_steps", str(steps), "--random_seed", str(seed), "--resume", "auto",
            "--save_model_dir", str(work / "save_models"), "--train_save_dir", str(work / "save_train_res"),
            "--export_dir", str(model), "--checkpoint_every", str(max(1, min(500, steps // 2))),
            "--image_every", str(max(1, steps // 3)), *log_flags])
    return model


def stage_ship(work: Path, out: Path, sizes: Sizes, seed: int, log_flags: list[str]) -> dict:
    """Copy the model and P (fp16) to `out`, measure them there, and write manifest.json and README.md."""
    from emoeditor.models.tiny import write_tiny_vocab
    from emoeditor.training.checkpoint import replace_dir

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(work / "model", tmp / "model",
                    ignore=shutil.ignore_patterns("training_args.json", "training_summary.json"))
    write_tiny_vocab(tmp / "model" / "tokenizer")  # loadable by every transformers the project supports
    ship_predictor(work / "predictor", tmp / "emo_predictor")
    measured = {"predictor_top1": predictor_accuracy(tmp / "emo_predictor", work / "emoset"),
                "table1": mini_table1(tmp, work, sizes, seed, log_flags),
                **training_numbers(work)}
    manifest = {
        "what": "EmoEditor's miniature world: a tiny VAE, P and EmoEditor trained on synthetic emotion styles",
        "command": "python scripts/build_mini_world.py" + (" --reduced" if sizes == REDUCED else "")
                   + (f" --seed {seed}" if seed else ""),
        "seed": seed, "sizes": asdict(sizes), "built_with": _versions(),
        "measured": measured, "files": weight_digests(tmp),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").write_text(readme(manifest))
    replace_dir(tmp, out)
    return manifest


def ship_predictor(src: Path, dst: Path) -> None:
    """P's weights in float16 (22 MB instead of 45: a ResNet18 is most of the miniature) and its config."""
    import torch
    from safetensors.torch import load_file, save_file

    from emoeditor.models.predictor import PREDICTOR_CONFIG, PREDICTOR_WEIGHTS

    dst.mkdir(parents=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src / PREDICTOR_WEIGHTS)).items()}
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(dst / PREDICTOR_WEIGHTS))
    config = json.loads((src / PREDICTOR_CONFIG).read_text())
    keep = {k: config[k] for k in ("architecture", "num_classes", "image_size", "mean", "std", "label_order")
            if k in config}
    (dst / PREDICTOR_CONFIG).write_text(json.dumps({**keep, "weights_dtype": str(torch.float16)}, indent=2) + "\n")


def predictor_accuracy(predictor_dir: Path, emoset_root: Path) -> float:
    """P's top-1 on the toy EmoSet's test list."""
    from emoeditor.constants import EMOTIONS

    items = json.loads((emoset_root / "test.json").read_text())
    probs = predictor_softmax(predictor_dir, [emoset_root / rel for _, rel, _ in items])
    hits = [max(range(len(p)), key=p.__getitem__) == EMOTIONS.index(label) for (label, _, _), p in zip(items, probs)]
    return round(sum(hits) / len(hits), 4)


def mini_table1(ship: Path, work: Path, sizes: Sizes, seed: int, log_flags: list[str]) -> dict:
    """The evaluation command on the toy EmoSet's test list: {method: {metric: value}} (cross-valence + all)."""
    from emoeditor.cli.evaluate import main as evaluate_main
    from emoeditor.evaluation.split import make_test_split, save_split

    split = work / "test_split.json"
    save_split(make_test_split(work / "emoset", None, per_class=sizes.eval_per_class, seed=seed), split)
    out = work / "eval"
    shutil.rmtree(out, ignore_errors=True)  # the shipped weights may be new: nothing cached may be reused
    evaluate_main([
        "--split", str(split), "--methods", *EVAL_METHODS, "--model", str(ship / "model"),
        "--predictor", str(ship / "emo_predictor"), "--num_loop", str(sizes.num_loop),
        "--num_inference_steps", str(sizes.num_inference_steps), "--image_size", "64", "--metric_size", "64",
        "--seed", str(seed), "--device", "cpu", "--bootstrap", "0", "--no_grid", "--out", str(out), *log_flags])
    return table1_numbers(out)


def table1_numbers(eval_dir: Path) -> dict:
    """{"all"/"cross": {method: {EMR, ESR, ENRD, ESS, ESMI}}} from an evaluation's per-job results.csv."""
    import csv

    from emoeditor.evaluation.reporting import METRICS, summarize

    with open(eval_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    columns = [col for col, _, _ in METRICS]
    table = {}
    for relation in ("all", "cross"):
        picked = [r for r in rows if relation == "all" or r["relation"] == relation]
        sums = {m: summarize([r for r in picked if r["method"] == m], 0) for m in methods}
        table[relation] = {m: {col: round(s[col], 4) for col in columns} for m, s in sums.items()}
    return table


def training_numbers(work: Path) -> dict:
    """The stages' own records: the VAE's reconstruction, P's test accuracy in fp32, EmoEditor's steps."""
    numbers = {}
    vae = json.loads((work / "vae" / "training_summary.json").read_text())
    numbers["vae"] = {k: vae[k] for k in sorted(vae) if isinstance(vae[k], (int, float))}
    test = json.loads((work / "predictor" / "eval_test.json").read_text())
    numbers["predictor_test_top1_fp32"] = round(float(test["top1"]), 4)
    summary = json.loads((work / "model" / "training_summary.json").read_text())
    numbers["editor_steps"] = summary["steps"]
    return numbers


def weight_digests(folder: Path) -> dict:
    from emoeditor.fileio import sha256sum

    return {p.relative_to(folder).as_posix(): sha256sum(p) for p in sorted(folder.rglob("*.safetensors"))}


def _versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "torch_threads": torch.get_num_threads()}


def readme(manifest: dict) -> str:
    from emoeditor.data.toy import STYLE_LOOKS

    m = manifest["measured"]
    styles = "\n".join(f"| {emotion} | {look} |" for emotion, look in STYLE_LOOKS.items())
    rows = "\n".join(f"| {method} | {relation} | " + " | ".join(f"{v[k]:.2f}" for k in TABLE1_COLUMNS) + " |"
                     for relation, methods in m["table1"].items() for method, v in methods.items())
    return f"""# The miniature world

**A miniature trained on synthetic emotion styles, not the paper's model.** Everything here was
trained on CPU by `{manifest['command']}` (about 30 minutes on 2 cores) from seed {manifest['seed']}: a
tiny VAE, the emotion predictor P (ResNet18 at 64 px) and EmoEditor (a 0.8M-parameter UNet with the
emotion encoder), each with the project's own training code. It exists so that `make demo`, the tests
and the docs show real edits that move an image toward a target emotion *style* on a machine with no
pretrained weights. Its numbers say the machinery works; they say nothing about the paper's results.

## The eight styles
Each emotion is a global image transformation with an emotional reading (`emoeditor/data/toy.py`,
`EMOTION_EDITS`), applied at random strength to crops of scikit-image's bundled photos:

| emotion | style |
|---|---|
{styles}

## What is here
- `model/`: the exported EmoEditor pipeline (diffusers layout, safetensors): `test.py --model_dir mini_world/model`
- `emo_predictor/`: P, float16 safetensors + config.json: `--predictor_path mini_world/emo_predictor`
- `manifest.json`: the SHA-256 of every weights file, the versions it was built with and every number below

## Measured
- P's top-1 on the toy EmoSet test list: {100 * m['predictor_top1']:.1f}% (fp32 before shipping:
  {100 * m['predictor_test_top1_fp32']:.1f}%)
- Miniature Table 1 (`scripts/evaluate.py` on the toy test list, {manifest['sizes']['eval_per_class']} sources
  per emotion x 7 targets, {manifest['sizes']['num_loop']} critic iterations of
  {manifest['sizes']['num_inference_steps']} DDIM steps):

| method | jobs | EMR % | ESR % | ENRD | ESS |
|---|---|---|---|---|---|
{rows}

## Known limits
- The 64 px edits are blurry: the tiny VAE reconstructs at about {m['vae']['heldout_psnr']:.0f} dB PSNR.
- The editor is trained with v prediction and offset noise (`configs/mini.yaml`), not the paper's
  noise prediction: with noise prediction (and a tiny UNet whose one-channel groups made GroupNorm an
  instance norm, erasing any uniform shift) it learned to read an image's global look from the noisy
  latent and ignored its emotion condition (flipping or permuting the condition changed nothing).
  Now the condition decides the look (flipping or permuting it lowers EMR, tested), but one pass
  still often misses the target style; the critic, re-editing until P agrees, does much of the work.
- The text side is a random tiny CLIP: L_emb aligns the emotion embeddings with embeddings that
  carry no meaning, so the miniature says nothing about what L_emb does for the paper's model.

## Rebuilding
`python scripts/build_mini_world.py` rebuilds this folder; with the same seed, torch version and CPU
the weights are bit-identical (`tests/test_mini_world.py` checks the shipped files against
`manifest.json`). Every stage is skipped once its output is complete, so a killed build goes on
where it stopped; the working files go to `runs/mini_world_build/`.
"""


# --------------------------------------------------------------------------------------------- main
def build(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    sizes = REDUCED if args.reduced else FULL
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    flags = verbosity_flags(args)
    if args.reduced and out.resolve() == MINI_WORLD_DIR.resolve():
        raise SystemExit(f"--reduced never writes the shipped {MINI_WORLD_DIR}: pass --out elsewhere")
    steps = {
        "emoset": lambda: stage_emoset(work, sizes, args.seed),
        "vae": lambda: stage_vae(work, sizes, args.seed),
        "base": lambda: stage_base(work, args.seed),
        "predictor": lambda: stage_predictor(work, sizes, args.seed, flags),
        "emopair": lambda: stage_emopair(work, sizes, args.seed),
        "editor": lambda: stage_editor(work, sizes, args.seed, flags),
        "ship": lambda: stage_ship(work, out, sizes, args.seed, flags),
    }
    result = {}
    for i, name in enumerate(STAGES, 1):
        if name in args.stages:
            logger.info("[%d/%d] %s", i, len(STAGES), name)
            result[name] = steps[name]()
    return result.get("ship", {})


def main(argv=None) -> dict:
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    manifest = build(args)
    if manifest:
        print(f"wrote {args.out}: {len(manifest['files'])} weights files, P top-1 "
              f"{100 * manifest['measured']['predictor_top1']:.1f}%\n" + json.dumps(manifest["measured"]["table1"]))
    return manifest
