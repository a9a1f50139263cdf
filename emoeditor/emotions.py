"""The emotion taxonomy and the one parser for target emotions.

A target is an 8-d non-negative vector summing to 1 in the order of `EMOTIONS`: a single
emotion is one-hot, a mixture such as ``awe:0.5,excitement:0.5`` spreads the mass.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from emoeditor.constants import EMOTIONS, NEGATIVE, NUM_EMOTIONS, POSITIVE
from emoeditor.errors import InvalidTargetError

TargetSpec = Union[str, int, Sequence[float], torch.Tensor]


def emotion_index(name: Union[str, int]) -> int:
    """Index of an emotion given by name (case-insensitive) or index."""
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        idx = int(name)
        if not 0 <= idx < NUM_EMOTIONS:
            raise InvalidTargetError(
                f"emotion index {idx} is out of range; use 0..{NUM_EMOTIONS - 1} ({', '.join(EMOTIONS)})")
        return idx
    key = str(name).strip().lower()
    if key not in EMOTIONS:
        raise InvalidTargetError(f"unknown emotion {name!r}; valid choices: {', '.join(EMOTIONS)}")
    return EMOTIONS.index(key)


def onehot(name: Union[str, int]) -> torch.Tensor:
    vec = torch.zeros(NUM_EMOTIONS)
    vec[emotion_index(name)] = 1.0
    return vec


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _normalise(weights: Sequence[float], spec: object) -> torch.Tensor:
    """Check and normalise in float64, then cast: float32 arithmetic turned huge weights into an
    all-zero target (``awe:3e38,fear:3e38`` summed to inf) and dropped tiny ones silently."""
    if len(weights) != NUM_EMOTIONS:
        raise InvalidTargetError(f"target {spec!r} must have {NUM_EMOTIONS} entries, got {len(weights)}")
    if not all(math.isfinite(w) for w in weights):
        raise InvalidTargetError(f"target {spec!r} contains NaN or infinite weights")
    if any(w < 0 for w in weights):
        raise InvalidTargetError(f"target {spec!r} has negative weights; weights must be >= 0")
    total = math.fsum(weights)
    if total <= 0:
        raise InvalidTargetError(f"target {spec!r} has no positive weight")
    if total > _FLOAT32_MAX:
        raise InvalidTargetError(f"target {spec!r}: the weights sum to {total:.3g}, beyond what float32 holds; "
                                 f"weights are relative, so write e.g. awe:0.5,fear:0.5")
    vec = torch.tensor([w / total for w in weights], dtype=torch.float32)
    lost = [EMOTIONS[i] for i, w in enumerate(weights) if w > 0 and vec[i] == 0]
    if lost:
        raise InvalidTargetError(f"target {spec!r}: the weight of {', '.join(lost)} is too small next to the "
                                 f"others to be represented; drop it or give it a larger weight")
    return vec


def parse_target(spec: TargetSpec) -> torch.Tensor:
    """Parse a name, an index, a mixture string or a vector into a normalised 8-d float tensor.

    Mixture weights are normalised to sum to 1, so ``awe:1,excitement:1`` equals
    ``awe:0.5,excitement:0.5``; a bare name in a mixture counts with weight 1; an emotion may be
    named once.
    """
    if isinstance(spec, torch.Tensor) or (isinstance(spec, Sequence) and not isinstance(spec, str)):
        return _normalise(torch.as_tensor(spec, dtype=torch.float64).flatten().tolist(), spec)
    if isinstance(spec, int):
        return onehot(spec)
    text = str(spec).strip()
    if not text:
        raise InvalidTargetError(f"empty target emotion; valid choices: {', '.join(EMOTIONS)}")
    weights = [0.0] * NUM_EMOTIONS
    named: dict[int, str] = {}  # emotion index -> the part that named it
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition(":")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise InvalidTargetError(
                f"target {text!r}: weight {weight!r} of {name!r} is not a number "
                f"(write e.g. awe:0.5,excitement:0.5)") from None
        if not math.isfinite(w):
            raise InvalidTargetError(f"target {text!r}: weight of {name!r} is {w}; weights must be finite")
        idx = emotion_index(name)
        if idx in named:  # 'awe:1,awe:-0.5' would otherwise be summed into something nobody wrote
            raise InvalidTargetError(f"target {text!r} names {EMOTIONS[idx]} twice ({named[idx]!r} and {part!r}); "
                                     f"give each emotion once")
        named[idx] = part
        weights[idx] = w
    return _normalise(weights, text)


def target_label(target: torch.Tensor) -> str:
    """A file-name-safe label: the emotion name for one-hot targets, else ``awe50-excitement50``."""
    target = torch.as_tensor(target).float()
    nz = [(i, float(w)) for i, w in enumerate(target) if w > 0]
    if len(nz) == 1:
        return EMOTIONS[nz[0][0]]
    return "-".join(f"{EMOTIONS[i]}{round(100 * w)}" for i, w in nz)


def valence(name: Union[str, int]) -> str:
    """'positive' or 'negative' (Mikels' grouping used by the paper)."""
    emo = EMOTIONS[emotion_index(name)]
    return "positive" if emo in POSITIVE else "negative"


def same_valence(a: Union[str, int], b: Union[str, int]) -> bool:
    return valence(a) == valence(b)


def target_valence(target: torch.Tensor) -> str:
    """Valence of a target vector: of its mass-weighted majority ('mixed' when balanced)."""
    target = torch.as_tensor(target).float()
    pos = float(sum(target[EMOTIONS.index(e)] for e in POSITIVE))
    neg = float(sum(target[EMOTIONS.index(e)] for e in NEGATIVE))
    if abs(pos - neg) < 1e-6:
        return "mixed"
    return "positive" if pos > neg else "negative"


def other_emotions(name: Union[str, int]) -> list[str]:
    """The 7 emotions other than `name` (the paper's editing protocol)."""
    idx = emotion_index(name)
    return [e for i, e in enumerate(EMOTIONS) if i != idx]


def emotion_input(target: torch.Tensor, source_probs: torch.Tensor | None, mode: str) -> torch.Tensor:
    """The emotion encoder's input: target - P(source) ('direction', official) or target ('onehot')."""
    if mode == "onehot":
        return target
    if mode == "direction":
        if source_probs is None:
            raise ValueError("emotion_input='direction' needs the predictor's softmax on the source")
        return target - source_probs
    raise InvalidTargetError(f"unknown emotion input mode {mode!r}; choose direction or onehot")
