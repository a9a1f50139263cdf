"""The main job end to end on the embedded miniature world, on CPU in under a minute, offline.

examples:
    python scripts/demo.py --out runs/demo                      # what `make demo` runs
    python scripts/demo.py --out runs/demo --target_emo awe:0.5,excitement:0.5 --image astronaut
    python scripts/demo.py --out /tmp/demo --train_steps 2 --quiet   # the smallest run, warnings only

1. writes a toy EmoPair (real photos bundled with scikit-image in the eight synthetic emotion
   styles) in the official annotation format;
2. trains EmoEditor for a few steps with configs/tiny.yaml (train.py's code path), starting from
   the shipped miniature model (mini_world/model: a tiny VAE, UNet and emotion encoder trained on
   those styles by scripts/build_mini_world.py);
3. edits a bundled photo toward a target emotion with configs/infer_tiny.yaml (test.py's code
   path, iterative emotion inference with the paper's critic and the miniature P);
4. prints P's probabilities before and after, and where the edited image, its trace JSON, the
   labelled iteration strip and the summary CSV are.

The miniature is trained on synthetic styles (fear: dark, cold blue; contentment: soft golden
light; ...), so an edit visibly moves the photo toward the target *style*: a working model in
miniature, not the paper's. Swap in the real base model / predictor / EmoPair with the flags of
train.py and test.py. Afterwards `python test.py --config configs/infer_tiny.yaml` and
`python train.py --config configs/tiny.yaml` run on what it wrote to runs/demo.
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
    g.add_argument("--target_emo", default="sadness", help="an emotion name or a mixture like awe:0.5,excitement:0.5")
    g.add_argument("--seed", type=int, default=0, help="seed of the components, the data, training and the edit")
    add_verbosity_args(p.add_argument_group("logging"))
    return p


def demo(args: argparse.Namespace) -> dict:
    from skimage import data

    from emoeditor.cli.build_mini_world import MINI_WORLD_DIR
    from emoeditor.cli.edit import main as test_main
    from emoeditor.cli.train import main as train_main
    from emoeditor.data.toy import write_toy_emopair
    from emoeditor.models.tiny import TINY_IMAGE_SIZE

    out = Path(args.out)
    mini_model, predictor = MINI_WORLD_DIR / "model", MINI_WORLD_DIR / "emo_predictor"
    json_path, root = out / "json" / "data_EmoPair.json", out / "EmoPair"
    logger.info("[1/3] toy EmoPair (%d pairs) -> %s, %s", args.num_pairs, root, json_path)
    if not json_path.exists():
        write_toy_emopair(root, json_path, num_pairs=args.num_pairs, image_size=TINY_IMAGE_SIZE, seed=args.seed)

    logger.info("[2/3] training %d steps from the miniature model %s (configs/tiny.yaml)", args.train_steps,
                mini_model)
    model_dir = train_main([
        "--config", str(REPO / "configs" / "tiny.yaml"), "--base_model", str(mini_model),
        "--init_model", str(mini_model), "--json_path", str(json_path), "--data_root", str(root),
        "--max_steps", str(args.train_steps), "--save_model_dir", str(out / "save_models"),
        "--train_save_dir", str(out / "save_train_res"), "--export_dir", str(out / "model"),
        "--random_seed", str(args.seed), "--checkpoint_every", str(max(1, args.train_steps // 2)),
        "--image_every", str(args.train_steps), *verbosity_flags(args)])
    model_dir = Path(model_dir or out / "model")

    photo = out / "demo_img" / f"{args.image}.png"
    photo.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(getattr(data, args.image)()).save(photo)
    logger.info("[3/3] editing %s toward %r with the paper's critic", photo, args.target_emo)
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
    print("A miniature EmoEditor trained on synthetic emotion styles (mini_world/README.md), not the paper's model.")
    for trace in written["traces"]:
        print(before_after(json.loads(Path(trace).read_text())))
    print("done. Outputs:")
    for key, value in written.items():
        print(f"  {key}: {value}")
    return written


def before_after(trace: dict) -> str:
    """P's probabilities on the source and on the returned edit, one emotion a line."""
    from emoeditor.constants import EMOTIONS

    before = trace["source_probs"]
    after = before if trace["returned"] < 0 else trace["iterations"][trace["returned"]]["probs"]
    lines = [f"P(emotion) on {Path(trace['input']).name}, target {trace['target_label']}:  source    edit"]
    lines += [f"  {e:>12} {before[i]:8.3f} {after[i]:6.3f}" for i, e in enumerate(EMOTIONS)]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    return demo(args)


if __name__ == "__main__":
    run_cli(main)
