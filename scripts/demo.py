"""The main job end to end on the embedded tiny default, on CPU in a minute or two, offline.

examples:
    python scripts/demo.py --out runs/demo                      # what `make demo` runs
    python scripts/demo.py --out runs/demo --target_emo awe:0.5,excitement:0.5 --image astronaut
    python scripts/demo.py --out /tmp/demo --train_steps 2 --quiet   # the smallest run, warnings only

1. builds tiny random-weight InstructPix2Pix components and a tiny emotion predictor, saved in
   the real on-disk layouts (diffusers / safetensors), exactly where real weights would go;
2. writes a toy EmoPair (real photos bundled with scikit-image, emotion-plausible edits) in
   the official annotation format;
3. trains EmoEditor for a few steps with configs/tiny.yaml (train.py's code path);
4. edits a bundled photo toward a target emotion with configs/infer_tiny.yaml (test.py's code
   path, iterative emotion inference with the paper's critic);
5. prints where the edited image, its trace JSON, the iteration strip and the summary CSV are.

Weights are random, so the edit is noise: the point is that every stage runs and writes real
files. Swap in the real base model / predictor / EmoPair with the flags of train.py and test.py.
Afterwards `python test.py --config configs/infer_tiny.yaml` and `python train.py --config
configs/tiny.yaml` run on what it wrote to runs/demo.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from PIL import Image

from emoeditor.config import HelpFormatter, parse_args, run_cli
from emoeditor.logs import add_verbosity_args, setup_logging, verbosity_flags

REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger("emoeditor.demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("what the demo writes")
    g.add_argument("--out", default="runs/demo", help="everything the demo writes goes here")
    g.add_argument("--num_pairs", type=int, default=24, help="toy EmoPair size")
    g.add_argument("--train_steps", type=int, default=12, help="training steps of the tiny model")
    g = p.add_argument_group("the edit")
    g.add_argument("--image", default="chelsea", help="scikit-image photo to edit (bundled, offline)")
    g.add_argument("--target_emo", default="awe", help="an emotion name or a mixture like awe:0.5,excitement:0.5")
    g.add_argument("--seed", type=int, default=0, help="seed of the components, the data, training and the edit")
    add_verbosity_args(p.add_argument_group("logging"))
    return p


def demo(args: argparse.Namespace) -> dict:
    from skimage import data

    from emoeditor.cli.edit import main as test_main
    from emoeditor.cli.train import main as train_main
    from emoeditor.data.toy import write_toy_emopair
    from emoeditor.models.tiny import TINY_IMAGE_SIZE, save_tiny_base, save_tiny_predictor

    out = Path(args.out)
    base, predictor = out / "base_ip2p", out / "emo_predictor"
    logger.info("[1/4] tiny components -> %s, %s", base, predictor)
    if not (base / "model_index.json").exists():
        save_tiny_base(base, seed=args.seed)
    if not (predictor / "config.json").exists():
        save_tiny_predictor(predictor, seed=args.seed)

    json_path, root = out / "json" / "data_EmoPair.json", out / "EmoPair"
    logger.info("[2/4] toy EmoPair (%d pairs) -> %s, %s", args.num_pairs, root, json_path)
    if not json_path.exists():
        write_toy_emopair(root, json_path, num_pairs=args.num_pairs, image_size=TINY_IMAGE_SIZE, seed=args.seed)

    logger.info("[3/4] training %d steps (configs/tiny.yaml)", args.train_steps)
    model_dir = train_main([
        "--config", str(REPO / "configs" / "tiny.yaml"), "--base_model", str(base),
        "--json_path", str(json_path), "--data_root", str(root), "--max_steps", str(args.train_steps),
        "--save_model_dir", str(out / "save_models"), "--train_save_dir", str(out / "save_train_res"),
        "--export_dir", str(out / "model"), "--random_seed", str(args.seed),
        "--checkpoint_every", str(max(1, args.train_steps // 2)), "--image_every", str(args.train_steps),
        *verbosity_flags(args)])
    model_dir = Path(model_dir or out / "model")

    photo = out / "demo_img" / f"{args.image}.png"
    photo.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(getattr(data, args.image)()).save(photo)
    logger.info("[4/4] editing %s toward %r with the paper's critic", photo, args.target_emo)
    summary = test_main([
        "--config", str(REPO / "configs" / "infer_tiny.yaml"), "--model_dir", str(model_dir),
        "--predictor_path", str(predictor), "--input_path", str(photo), "--target_emo", args.target_emo,
        "--test_save_dir", str(out / "save_test_res"), "--random_seed", str(args.seed), "--no-tiny",
        "--output_ext", "png", "--overwrite", *verbosity_flags(args)])  # the demo's own folder
    edits = out / "save_test_res"
    written = {
        "model": str(model_dir),
        "edited_images": sorted(str(p) for p in edits.glob("*.png")),
        "traces": sorted(str(p) for p in (edits / "traces").glob("*.json")),
        "strips": sorted(str(p) for p in (edits / "strips").glob("*.png")),
        "summary_csv": str(edits / "summary.csv"),
        "training_strips": sorted(str(p) for p in (out / "save_train_res").rglob("*.png")),
    }
    (out / "demo_outputs.json").write_text(json.dumps({"written": written, "summary": summary}, indent=2, default=str))
    print("done. Outputs:")
    for key, value in written.items():
        print(f"  {key}: {value}")
    return written


def main(argv=None):
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    return demo(args)


if __name__ == "__main__":
    run_cli(main)
