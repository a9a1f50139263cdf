"""Edit images toward a target emotion with iterative emotion inference (paper Sec. 3.3).

    python test.py --input_path demo_img/demo_fire.png --target_emo awe
    python test.py --input_path photos/ --target_emo all --batch_size 16
    accelerate launch test.py --input_path photos/ --target_emo all      # inputs split over GPUs
    python test.py --config configs/infer_tiny.yaml                     # CPU smoke run, random weights
"""

import argparse

from emoeditor.config import parse_args, run_cli
from emoeditor.constants import IMAGE_SIZE, IP2P_HUB_ID, NOISE_START_RANGE, NUM_INFERENCE_STEPS, NUM_LOOP
from emoeditor.critic import CONFIDENCE_MODES, CRITICS, DIRECTION_SOURCES


def seed_arg(value: str):
    return None if value.lower() == "none" else int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the official test.py flags
    p.add_argument("--random_seed", type=seed_arg, default=75863, help="seed of every job ('none': draw one)")
    p.add_argument("--input_path", default="demo_img/demo_fire.png", help="an image, a folder or a glob")
    p.add_argument("--target_emo", default="awe",
                   help="an emotion, a mixture (awe:0.5,excitement:0.5), or 'all' (the 7 emotions other than "
                        "P's top class on the source, the paper's protocol)")
    p.add_argument("--test_save_dir", default="save_test_res")
    p.add_argument("--num_inference_steps", type=int, default=NUM_INFERENCE_STEPS)
    p.add_argument("--num_loop", type=int, default=NUM_LOOP, help="at most this many edits per job")
    # model
    p.add_argument("--model_dir", default="model",
                   help="exported pipeline folder, or the folder with the official model_ip2p.pt + model_emoenc.pt")
    p.add_argument("--base_model", default=IP2P_HUB_ID, help="InstructPix2Pix architecture for the official .pt files")
    p.add_argument("--predictor_path", default="emo_predictor/emo_predictor.pt")
    p.add_argument("--emotion_input", choices=("direction", "onehot"), default=None,
                   help="encoder input; default: what the model was trained with (its config)")
    # critic
    p.add_argument("--critic", choices=CRITICS, default="paper",
                   help="paper: 0.3<SSIM<0.8 and confidence>0.8; official: the official test.py logic; none: one pass")
    p.add_argument("--ssim_low", type=float, default=None, help="default: paper 0.3, official 0.5")
    p.add_argument("--ssim_high", type=float, default=None, help="default: 0.8")
    p.add_argument("--confidence", type=float, default=None, help="default: paper 0.8, official 0.6")
    p.add_argument("--confidence_mode", choices=CONFIDENCE_MODES, default="support",
                   help="target confidence of a mixture: P's mass on its emotions (support) or sum w_i*P_i")
    p.add_argument("--direction_probs", choices=DIRECTION_SOURCES, default="source",
                   help="paper critic: direction = target - P(source) (fixed) or - P(current input)")
    p.add_argument("--ssim_backend", choices=("torch", "skimage"), default="torch")
    # one edit
    p.add_argument("--noise_range", type=int, nargs=2, default=list(NOISE_START_RANGE), metavar=("LOW", "HIGH"))
    p.add_argument("--guidance_scale", type=float, default=1.0, help="1 = no classifier-free guidance (official)")
    p.add_argument("--image_size", type=int, default=IMAGE_SIZE)
    # running
    p.add_argument("--seed_mode", choices=("same", "hashed"), default="same",
                   help="same: every job uses --random_seed (as official per-image runs); hashed: per (file, target)")
    p.add_argument("--batch_size", type=int, default=1, help="jobs edited together (continuous batching)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, as official), float32, float16, bfloat16")
    flag = dict(action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--output_ext", default="same",
                   help="'same' keeps the input's extension as the official names do (a .jpg is saved as JPEG); "
                        "'png' saves losslessly")
    p.add_argument("--compile", **flag, help="torch.compile the UNet and P (long GPU runs)")
    p.add_argument("--save_strip", **flag, help="also save a strip of every iteration per job")
    p.add_argument("--save_candidates", **flag, help="also save every iteration's image")
    p.add_argument("--tiny", **flag,
                   help="write random-weight tiny model/predictor/demo images where missing (CPU smoke test)")
    p.add_argument("--quiet", **flag, help="no progress bar")
    return p


def main(argv=None):
    from emoeditor.inference import run_inference

    return run_inference(parse_args(build_parser(), argv))


if __name__ == "__main__":
    run_cli(main)
