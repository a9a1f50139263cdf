"""A drawn dummy pool: control trials with an answer nobody can miss (Supp. S2.4, Fig. S6(c)).

The paper's six dummy pairs are photos with "prominent emotional differences"; a lab should use
such photos. This pool is drawn in code (a bright smiling scene vs a dark frowning one) so tests
and the local demo have one without any download.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from emoeditor.constants import EMOTIONS, POSITIVE
from emoeditor.fileio import atomic_write, atomic_write_text
from emoeditor.seeding import mix_seed

DUMMY_JSON = "dummies.json"


def draw_scene(happy: bool, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A sunny sky with a smiling face, or a night-dark scene with a frowning one (colours jittered)."""
    jitter = rng.integers(-20, 21, size=3)
    sky = np.array([250, 210, 60] if happy else [25, 25, 40]) + jitter
    img = Image.new("RGB", (size, size), tuple(int(c) for c in np.clip(sky, 0, 255)))
    draw = ImageDraw.Draw(img)
    face = (255, 235, 120) if happy else (90, 90, 110)
    m, s = size // 5, size - size // 5
    draw.ellipse((m, m, s, s), fill=face, outline=(0, 0, 0), width=2)
    eye = size // 14
    for x in (size * 0.38, size * 0.62):
        draw.ellipse((x - eye, size * 0.38 - eye, x + eye, size * 0.38 + eye), fill=(0, 0, 0))
    if happy:  # a smile: the lower half of an ellipse
        draw.arc((size * 0.32, size * 0.45, size * 0.68, size * 0.72), 20, 160, fill=(0, 0, 0), width=3)
    else:  # a frown: the upper half
        draw.arc((size * 0.32, size * 0.6, size * 0.68, size * 0.85), 200, 340, fill=(0, 0, 0), width=3)
    return img


def write_dummy_pool(out: str | Path, seed: int = 0, size: int = 96) -> Path:
    """One dummy per emotion in `out` (images + dummies.json); returns the JSON path.

    For a positive target the bright smiling scene is correct, for a negative one the dark frowning one."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for emotion in EMOTIONS:
        rng = np.random.default_rng(mix_seed(seed, "dummy", emotion))
        positive = emotion in POSITIVE
        files = {}
        for role, happy in (("correct", positive), ("wrong", not positive)):
            rel = f"images/{emotion}_{role}.png"
            image = draw_scene(happy, rng, size)
            atomic_write(out / rel, lambda tmp, im=image: im.save(tmp, format="PNG"))
            files[role] = rel
        entries.append({"id": f"dummy_{emotion}", "target": emotion, **files})
    return atomic_write_text(out / DUMMY_JSON, json.dumps({"dummies": entries}, indent=1))
