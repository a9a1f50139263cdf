"""Train EmoEditor on EmoPair (paper Sec. 3.2); the loop is emoeditor.training.trainer.train.

    make demo && python train.py --config configs/tiny.yaml          # toy data, tiny model, CPU, minutes
    python train.py --config configs/paper.yaml                      # one GPU
    accelerate launch --num_processes 2 train.py --config configs/paper.yaml
    accelerate launch --multi_gpu --num_processes 2 train.py --cpu ...   # 2 CPU processes (gloo)
    python train.py --config configs/paper.yaml --resume latest      # continue a run

`python train.py --help` lists every flag with its default.
"""

from emoeditor.cli.train import main
from emoeditor.config import run_cli

if __name__ == "__main__":
    run_cli(main)
