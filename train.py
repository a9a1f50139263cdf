"""Train EmoEditor on EmoPair (paper Sec. 3.2); the loop is emoeditor.training.train.

    python train.py --config configs/paper.yaml                      # one GPU
    accelerate launch --num_processes 2 train.py --config configs/paper.yaml
    accelerate launch --multi_gpu --num_processes 2 train.py --cpu ...   # 2 CPU processes (gloo)
    python train.py --config configs/paper.yaml --resume latest      # continue a run
    python train.py --config configs/tiny.yaml                       # minutes on CPU (see the preset)
"""

from emoeditor.config import parse_args, run_cli
from emoeditor.cli.train import build_parser
from emoeditor.training.trainer import train


def main(argv=None):
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train(parse_args(build_parser(), argv))


if __name__ == "__main__":
    run_cli(main)
