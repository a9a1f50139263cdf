"""How strongly does --emotion_guidance push? One edit per (image, target) at each guidance scale s.

examples:
    python scripts/sweep_emotion_guidance.py --out runs/guidance_sweep          # the shipped miniature, CPU, ~5 min
    python scripts/sweep_emotion_guidance.py --model_dir save_models/model --predictor_path emo_predictor \\
        --images photos/ --scales 0 1 1.5 2 --device cuda --out runs/guidance_sweep_real

For every s: P's mean confidence in the target, how often its top class is the target, and the SSIM to
the source, over every image and all eight targets (one edit each, no critic, the same seed per image),
written to sweep.json and plotted in sweep.png. s = 0 edits without any emotion (chance level).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from emoeditor.config import HelpFormatter, run_cli
from emoeditor.constants import EMOTIONS
from emoeditor.editing.critic import CriticConfig
from emoeditor.editing.loop import CriticLoop
from emoeditor.editors.emoeditor import EmoEditorEditor
from emoeditor.emotions import onehot
from emoeditor.errors import EmoEditorError
from emoeditor.imageio import list_inputs, open_image, to_square
from emoeditor.scoring.ssim import batch_ssim

REPO = Path(__file__).resolve().parent.parent
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def load_images(spec: list[str], size: int) -> torch.Tensor:
    """scikit-image photo names, or image files/folders."""
    from PIL import Image
    from skimage import data

    images = []
    for item in spec:
        if hasattr(data, item) and not Path(item).exists():
            images.append(to_square(Image.fromarray(getattr(data, item)()).convert("RGB"), size))
        else:
            images.extend(to_square(open_image(p), size) for p in list_inputs(item))
    if not images:
        raise EmoEditorError(f"--images {spec}: no image found")
    return torch.stack(images)


def sweep(editor: EmoEditorEditor, images: torch.Tensor, scales: list[float], seed: int, batch_size: int) -> list:
    probs = editor.predictor.probs
    rows = []
    for s in tqdm(scales, desc="guidance scales"):
        editor.emotion_guidance = s
        loop = CriticLoop(editor, probs, CriticConfig("none"), batch_size=batch_size)
        conf, hit, ssim = [], [], []
        for k, emotion in enumerate(EMOTIONS):
            targets = onehot(emotion)[None].expand(len(images), -1)
            out = loop(images, targets, [torch.Generator().manual_seed(seed + i) for i in range(len(images))]).images
            p = probs(out.to(editor.device)).cpu()
            conf.append(p[:, k])
            hit.append((p.argmax(1) == k).float())
            ssim.append(batch_ssim(images, out.cpu()))
        rows.append({"emotion_guidance": s, "target_confidence": round(float(torch.cat(conf).mean()), 4),
                     "top1_is_target": round(float(torch.cat(hit).mean()), 4),
                     "ssim": round(float(torch.cat(ssim).mean()), 4), "edits": len(images) * len(EMOTIONS)})
    return rows


def plot(rows: list, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=120)
    ax = fig.subplots()
    s = [r["emotion_guidance"] for r in rows]
    ax.plot(s, [r["target_confidence"] for r in rows], "o-", label="P(target)")
    ax.plot(s, [r["top1_is_target"] for r in rows], "s-", label="top-1 = target")
    ax.plot(s, [r["ssim"] for r in rows], "^-", label="SSIM to source")
    ax.axhline(1 / len(EMOTIONS), color="0.6", ls=":", lw=1, label="chance")
    ax.set(xlabel="--emotion_guidance s", ylim=(0, 1))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model_dir", default=str(REPO / "mini_world" / "model"))
    p.add_argument("--predictor_path", default=str(REPO / "mini_world" / "emo_predictor"))
    p.add_argument("--images", nargs="+", default=list(SKIMAGE_PHOTOS),
                   help="scikit-image photo names, image files or folders")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--scales", type=float, nargs="+", default=[0, 0.5, 1, 1.5, 2, 3])
    p.add_argument("--random_seed", type=int, default=0)
    p.add_argument("--num_inference_steps", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="folder for sweep.json and sweep.png")
    args = p.parse_args(argv)
    editor = EmoEditorEditor.from_pretrained(args.model_dir, args.predictor_path, device=args.device,
                                             num_inference_steps=args.num_inference_steps)
    rows = sweep(editor, load_images(args.images, args.image_size), args.scales, args.random_seed, args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"model_dir": args.model_dir, "rows": rows}, indent=1))
    plot(rows, out / "sweep.png")
    for r in rows:
        print(f"s={r['emotion_guidance']:<4g} P(target) {r['target_confidence']:.3f}  "
              f"top-1 = target {100 * r['top1_is_target']:.1f}%  SSIM {r['ssim']:.3f}")
    print(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
    return rows


if __name__ == "__main__":
    run_cli(main)
