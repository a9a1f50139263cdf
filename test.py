"""Edit images toward a target emotion with iterative emotion inference (paper Sec. 3.3).

    python test.py --input_path demo_img/demo_fire.png --target_emo awe
    python test.py --input_path photos/ --target_emo all --batch_size 16
    accelerate launch test.py --input_path photos/ --target_emo all      # inputs split over GPUs
    python test.py --config configs/infer_tiny.yaml                     # CPU smoke run, random weights
"""

from emoeditor.cli.edit import main
from emoeditor.config import run_cli

if __name__ == "__main__":
    run_cli(main)
