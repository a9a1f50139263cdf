"""`python -m apps.demo`: the interactive web demo on the shipped miniature, or on real weights.

examples:
    python -m apps.demo                                   # the miniature world, http://127.0.0.1:7860
    python -m apps.demo --model_dir model --predictor_path emo_predictor/emo_predictor.pt --concurrency 2
"""

from __future__ import annotations

import argparse
import os

from emoeditor.config import HelpFormatter, parse_args, run_cli
from emoeditor.errors import EmoEditorError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the demo runs offline


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model_dir", default=None,
                   help="EmoEditor model folder (train.py's export or the official .pt files); default: the shipped "
                        "miniature mini_world/model")
    p.add_argument("--predictor_path", default=None,
                   help="the emotion predictor P; default: the miniature's mini_world/emo_predictor")
    p.add_argument("--image_size", type=int, default=None,
                   help="side the model edits at; default: what the model folder records, 64 for the miniature, "
                        "else 224")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N, mps")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--concurrency", type=int, default=1,
                   help="edits run at once; more requests wait in the queue (users sharing one GPU)")
    return p


def main(argv=None) -> None:
    args = parse_args(build_parser(), argv)
    if args.concurrency < 1:
        raise EmoEditorError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.image_size is not None and (args.image_size < 32 or args.image_size % 8):
        raise EmoEditorError(f"--image_size {args.image_size}: use a multiple of 8, at least 32 (the VAE "
                             f"downsamples by 8); leave it out to use the model's own size")
    from apps.demo.app import CSS, THEME, build_app  # gradio and torch: only once the flags are fine
    from apps.demo.engine import DemoEngine, resolve_weights

    engine = DemoEngine.load(resolve_weights(args.model_dir, args.predictor_path), args.device, args.image_size)
    build_app(engine, args.concurrency).launch(server_name=args.host, server_port=args.port, theme=THEME, css=CSS,
                                               ssr_mode=False, show_error=True)


if __name__ == "__main__":
    run_cli(main)
