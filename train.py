"""Train EmoEditor on EmoPair: `python train.py --config configs/paper.yaml` (or accelerate launch train.py ...)."""

from emoeditor.config import parse_args, run_cli
from emoeditor.training import build_parser, train


def main(argv=None):
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train(parse_args(build_parser(), argv))


if __name__ == "__main__":
    run_cli(main)
