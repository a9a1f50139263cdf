"""Edit images toward a target emotion with iterative emotion inference (paper Sec. 3.3).

    python test.py                                      # demo_img/chelsea.jpg toward awe, official weights in model/
    python test.py --config configs/infer_tiny.yaml     # after `make demo`: its tiny model, CPU, seconds
    python test.py --model_dir save_models/model --input_path photos/ --target_emo all --batch_size 16
    accelerate launch test.py --model_dir save_models/model --input_path photos/ --target_emo all   # over GPUs

`python test.py --help` lists every flag, grouped, with its default and more examples.
"""

from emoeditor.cli.edit import main
from emoeditor.config import run_cli

if __name__ == "__main__":
    run_cli(main)
