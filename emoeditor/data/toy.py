"""A toy EmoPair made offline from scikit-image's bundled photos, in the official layout.

Real EmoPair pairs come from InstructPix2Pix edits; here a target is the same crop with an
emotion-plausible global edit (warmer and brighter for amusement, cold and dark for fear, ...),
so the demo and the tests exercise the real file layout, annotation format and loaders
without downloading 340k images. Same seed => byte-identical JSON and images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from skimage import color
from skimage import data as skdata

from emoeditor.constants import EMOTIONS, NUM_EMOTIONS
from emoeditor.errors import EmoEditorError
from emoeditor.imageio import MIN_SIDE

# Photos that ship inside the scikit-image wheel (no pooch download needed).
TOY_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
              "retina", "stereo_motorcycle", "colorwheel", "camera", "coins", "moon", "clock", "grass",
              "gravel", "brick")
JPEG_QUALITY = 95
SOURCE_STRENGTH = (0.28, 0.42)  # sources lean slightly toward their labelled emotion (uniform strength)
TARGET_STRENGTH = (0.8, 1.2)

# The eight emotion styles: global edits with an emotional reading, distinct enough that a ResNet18
# tells them apart at 64 px and a tiny diffusion model learns to apply them (the miniature world,
# scripts/build_mini_world.py). At strength 1: brightness shift, contrast and saturation factors,
# RGB tint added, gamma (< 1 brightens), vignette strength, and a colour cast (hue in [0, 1),
# value, mix weight; saturation 0.9) blended in last. README "The miniature world" has this table in words.
EMOTION_EDITS = {
    "amusement":   dict(bright=0.08, contrast=1.05, sat=1.50, tint=(0.06, 0.0, 0.03), gamma=0.85, vignette=0.0,
                        cast=(0.90, 0.9, 0.25)),
    "anger":       dict(bright=-0.06, contrast=1.50, sat=1.30, tint=(0.14, -0.04, -0.07), gamma=1.10, vignette=0.30,
                        cast=(0.00, 0.8, 0.35)),
    "awe":         dict(bright=0.10, contrast=1.10, sat=1.10, tint=(-0.02, 0.03, 0.08), gamma=0.75, vignette=0.0,
                        cast=(0.55, 0.95, 0.25)),
    "contentment": dict(bright=0.05, contrast=0.80, sat=1.00, tint=(0.05, 0.03, -0.03), gamma=0.90, vignette=0.0,
                        cast=(0.11, 0.9, 0.30)),
    "disgust":     dict(bright=-0.03, contrast=0.90, sat=0.50, tint=(-0.03, 0.07, -0.05), gamma=1.05, vignette=0.15,
                        cast=(0.22, 0.7, 0.35)),
    "excitement":  dict(bright=0.04, contrast=1.35, sat=1.80, tint=(0.05, 0.03, -0.05), gamma=0.90, vignette=0.0,
                        cast=(0.14, 0.95, 0.20)),
    "fear":        dict(bright=-0.15, contrast=1.20, sat=0.60, tint=(-0.05, 0.0, 0.08), gamma=1.30, vignette=0.50,
                        cast=(0.66, 0.45, 0.30)),
    "sadness":     dict(bright=-0.14, contrast=0.75, sat=0.25, tint=(-0.04, 0.0, 0.05), gamma=1.25, vignette=0.10,
                        cast=(0.60, 0.4, 0.25)),
}

# How each style reads, for the docs (README and mini_world/README.md render this table).
STYLE_LOOKS = {
    "amusement": "bright, saturated, pink",
    "anger": "harsh contrast, red, dark edges",
    "awe": "bright, airy sky blue",
    "contentment": "soft, low-contrast golden light",
    "disgust": "washed-out, sickly yellow-green",
    "excitement": "vivid, high-contrast yellow-orange",
    "fear": "dark, cold blue, heavy vignette",
    "sadness": "dim, grey, drained of colour",
}

PROMPTS = {
    "amusement": ("make it look more playful and fun", "make it look more joyful and bright",
                  "add a cheerful, funny touch"),
    "anger": ("make it look harsh and furious", "turn the colours into an angry red",
              "make the scene feel hostile and tense"),
    "awe": ("make it look vast and majestic", "fill it with bright, wondrous light",
            "make the scene feel grand and breathtaking"),
    "contentment": ("make it look calm and cosy", "give it a warm, peaceful glow",
                    "make the scene feel relaxed and pleasant"),
    "disgust": ("make it look dirty and rotten", "give it a sickly green tint",
                "make the scene feel gross and unpleasant"),
    "excitement": ("make it look vibrant and thrilling", "make the colours bold and energetic",
                   "make the scene feel like a celebration"),
    "fear": ("make it look dark and threatening", "make the scene feel eerie and scary",
             "plunge it into cold, ominous shadows"),
    "sadness": ("make it look gloomy and lonely", "drain the colour to make it melancholic",
                "make the scene feel grey and sorrowful"),
}


def load_toy_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 RGB (H, W, 3)."""
    img = getattr(skdata, name)()
    if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (50-100% of the short side), maybe mirrored, resized to size x size."""
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = photo[top:top + side, left:left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.float64) / 255.0


def emotion_edit(image: np.ndarray, emotion: str, strength: float = 1.0) -> np.ndarray:
    """Apply `emotion`'s style (EMOTION_EDITS) at `strength` to a float RGB image in [0, 1]; 0 is a no-op."""
    p = EMOTION_EDITS[emotion]
    s = float(strength)
    hsv = color.rgb2hsv(image)
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + s * (p["sat"] - 1)), 0, 1)
    out = color.hsv2rgb(hsv)
    mean = out.mean()
    out = (out - mean) * (1 + s * (p["contrast"] - 1)) + mean
    out = out + s * (p["bright"] + np.asarray(p["tint"]))
    out = np.clip(out, 0, 1) ** (1 + s * (p["gamma"] - 1))
    if p["vignette"]:
        h, w = out.shape[:2]
        yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
        out = out * (1 - s * p["vignette"] * np.clip((xx ** 2 + yy ** 2) / 2, 0, 1))[..., None]
    hue, value, weight = p["cast"]
    mix = min(1.0, s * weight)
    out = (1 - mix) * out + mix * color.hsv2rgb(np.array([[[hue, 0.9, value]]]))
    return np.clip(out, 0, 1)


def plausible_softmax(source_class: str, rng: np.random.Generator) -> list[float]:
    """An 8-way softmax peaked on `source_class`, rounded to 6 decimals and summing to 1."""
    logits = rng.normal(0.0, 0.6, NUM_EMOTIONS)
    k = EMOTIONS.index(source_class)
    logits[k] = logits.max() + rng.uniform(0.5, 3.0)  # P's top class is the labelled one
    probs = np.exp(logits - logits.max())
    probs = np.round(probs / probs.sum(), 6)
    probs[k] = round(1.0 - (probs.sum() - probs[k]), 6)  # rounding error goes to the peak
    return [float(p) for p in probs]


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)


def write_toy_emopair(root: Union[str, Path], json_path: Union[str, Path], num_pairs: int = 48,
                      image_size: int = 64, seed: int = 0,
                      source_strength: tuple[float, float] = SOURCE_STRENGTH) -> Path:
    """Write `num_pairs` toy pairs under `root` and their annotations to `json_path`; returns json_path.

    Even entries are EPAS-like (``EPAS/ip2p_clip/<prompt dir>/<seed>_0.jpg`` source, ``_1.jpg``
    target, the InstructPix2Pix layout); odd ones EPGS-like (``EPGS/...``), so the official
    ``"EPGS" in img_src_path`` rule splits them. Every class appears as source and target once
    num_pairs >= 8. A source is its crop in its own class's style at a strength drawn from
    `source_strength`, the target the same crop in the target's style.
    """
    if num_pairs < 1:
        raise EmoEditorError(f"num_pairs must be >= 1, got {num_pairs}")
    if image_size < MIN_SIDE:
        raise EmoEditorError(f"image_size must be >= {MIN_SIDE} (images smaller than that are rejected), "
                             f"got {image_size}")
    root, json_path = Path(root), Path(json_path)
    rng = np.random.default_rng(seed)
    photos = {name: load_toy_photo(name) for name in TOY_PHOTOS[:num_pairs]}
    entries = []
    for i in range(num_pairs):
        source_class = EMOTIONS[i % NUM_EMOTIONS]
        others = [e for e in EMOTIONS if e != source_class]
        target_class = others[int(rng.integers(len(others)))]
        base = random_crop(photos[TOY_PHOTOS[i % len(TOY_PHOTOS)]], image_size, rng)
        source = emotion_edit(base, source_class, rng.uniform(*source_strength))
        target = emotion_edit(base, target_class, rng.uniform(*TARGET_STRENGTH))
        if i % 2 == 0:
            folder = f"EPAS/ip2p_clip/{i:07d}"
            pair_seed = int(rng.integers(10 ** 8))
            src_rel, tgt_rel = f"{folder}/{pair_seed}_0.jpg", f"{folder}/{pair_seed}_1.jpg"
        else:
            src_rel = f"EPGS/source/{source_class}_{i:05d}.jpg"
            tgt_rel = f"EPGS/target/{source_class}_{i:05d}_to_{target_class}.jpg"
        _save_jpeg(source, root / src_rel)
        _save_jpeg(target, root / tgt_rel)
        entries.append({
            "img_src_path": src_rel,
            "img_tgt_path": tgt_rel,
            "class_source": source_class,
            "class_target": target_class,
            "source_softmax": plausible_softmax(source_class, rng),
            "prompt": PROMPTS[target_class][int(rng.integers(len(PROMPTS[target_class])))],
        })
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # One entry per line: readable, greppable and diff-friendly.
    json_path.write_text("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n", encoding="utf-8")
    return json_path
