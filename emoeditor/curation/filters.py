"""Keep rules as pure functions over recorded scores: EPGS's three filters and EPAS's pair rules.

Shards record every candidate's scores; these functions decide from the scores alone, so a filter
is testable with scripted numbers and the counts under every rule come from the same records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from emoeditor.emotions import valence

# Supp. S1: P's top-1 confidence for the target > 0.9, 0.3 < SSIM < 0.6, LPIPS > 0.1.
EPGS_CONFIDENCE = 0.9
EPGS_SSIM = (0.3, 0.6)
EPGS_LPIPS = 0.1


@dataclass(frozen=True)
class EpgsThresholds:
    """The EPGS quality filters; every field is a flag of `curate_emopair.py epgs`."""

    confidence: float = EPGS_CONFIDENCE
    ssim_low: float = EPGS_SSIM[0]
    ssim_high: float = EPGS_SSIM[1]
    lpips_min: float = EPGS_LPIPS

    def as_dict(self) -> dict:
        return asdict(self)


def passes_confidence(scores: dict, t: EpgsThresholds) -> bool:
    """P's probability of the target on the edit is above the threshold (>= 0.5: the target is P's top-1)."""
    return scores["confidence"] > t.confidence


def passes_ssim(scores: dict, t: EpgsThresholds) -> bool:
    """The edit keeps the scene (SSIM above the low bound) yet changes it (below the high bound)."""
    return t.ssim_low < scores["ssim"] < t.ssim_high


def passes_lpips(scores: dict, t: EpgsThresholds) -> bool:
    """The edit differs perceptually from the source."""
    return scores["lpips"] > t.lpips_min


EPGS_FILTERS: dict[str, Callable[[dict, EpgsThresholds], bool]] = {
    "confidence": passes_confidence, "ssim": passes_ssim, "lpips": passes_lpips}


def rejected_by(scores: dict, t: EpgsThresholds) -> list[str]:
    """The names of the filters a candidate fails (empty: kept)."""
    return [name for name, passes in EPGS_FILTERS.items() if not passes(scores, t)]


@dataclass(frozen=True)
class EpasRule:
    """Which labelled Ip2p pairs EPAS keeps; `confidence` is the threshold of the 'confident' rule."""

    rule: str = "changed"
    confidence: float = 0.5

    def as_dict(self) -> dict:
        return asdict(self)


# Scores: class_source / class_target are P's top classes, confidence_target P's top-1 confidence on the target.
EPAS_RULES: dict[str, Callable[[dict, EpasRule], bool]] = {
    "all": lambda s, r: True,
    "changed": lambda s, r: s["class_source"] != s["class_target"],
    "cross_valence": lambda s, r: valence(s["class_source"]) != valence(s["class_target"]),
    "confident": lambda s, r: s["class_source"] != s["class_target"] and s["confidence_target"] > r.confidence,
}
EPAS_RULE_HELP = ("all: every readable pair; changed (default): P's top class differs between source and target; "
                  "cross_valence: the top classes differ in valence; confident: changed, and P's top-1 confidence "
                  "on the target above --epas_confidence")


def epas_keeps(scores: dict, rule: EpasRule) -> bool:
    return EPAS_RULES[rule.rule](scores, rule)


def epas_counts(records: list[dict], rule: EpasRule) -> dict[str, int]:
    """How many pairs every rule keeps (so the paper's 331,595 can be compared whatever rule ran)."""
    return {name: sum(keep(r["scores"], rule) for r in records) for name, keep in EPAS_RULES.items()}
