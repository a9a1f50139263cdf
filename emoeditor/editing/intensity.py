"""One knob for how strongly to edit: ``--intensity low|medium|high``.

A preset sets the emotion guidance of every edit (see `EmoEditorPipeline`) and when the critic is
satisfied: the target confidence it needs and the SSIM band a candidate must fall in (an edit
too close to the source, above ``ssim_high``, has not changed enough; one below ``ssim_low`` has
lost the scene). "medium" is the paper's edit: guidance 1 and the paper critic's thresholds.

| intensity | emotion_guidance | confidence | ssim_low | ssim_high |
|-----------|------------------|------------|----------|-----------|
| low       | 0.75             | 0.6        | 0.5      | 0.9       |
| medium    | 1.0              | 0.8        | 0.3      | 0.8       |
| high      | 1.5              | 0.9        | 0.2      | 0.7       |

A value given explicitly (``--confidence 0.7``, ``:emotion_guidance=2``) wins over the preset's.
"""

from __future__ import annotations

from typing import Optional

from emoeditor.constants import PAPER_CRITIC
from emoeditor.errors import EmoEditorError

INTENSITIES = {
    "low": {"emotion_guidance": 0.75, "confidence": 0.6, "ssim_low": 0.5, "ssim_high": 0.9},
    "medium": {"emotion_guidance": 1.0, **PAPER_CRITIC},
    "high": {"emotion_guidance": 1.5, "confidence": 0.9, "ssim_low": 0.2, "ssim_high": 0.7},
}


def intensity_settings(name: str) -> dict:
    """The preset's settings (a copy): emotion_guidance, confidence, ssim_low, ssim_high."""
    key = str(name).strip().lower()
    if key not in INTENSITIES:
        raise EmoEditorError(f"unknown intensity {name!r}; choose one of {', '.join(INTENSITIES)}")
    return dict(INTENSITIES[key])


def apply_intensity(name: Optional[str], explicit: dict) -> dict:
    """`explicit` (None values = not given) completed from the preset `name` (None: no preset)."""
    settings = intensity_settings(name) if name else {}
    settings.update({k: v for k, v in explicit.items() if v is not None})
    return settings
