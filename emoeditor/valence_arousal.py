"""Valence-arousal targets: a point of the plane as a mixture of Mikels' categories, and back.

Each category sits at its word's published norm (`constants.VA_NORMS`, Warriner et al. 2013, both
axes on the 1-9 rating scale). A point ``x = (V, A)`` becomes the mixture

    w_i ∝ exp(-|x - n_i|^2 / (2 bandwidth^2)),   then weights below ``min_weight`` dropped, renormalised,

a Gaussian kernel over the eight norm points ``n_i``. The drop matters: the critic's "support"
confidence is P's mass on the target's non-zero entries, so a kernel mixture with eight tiny but
non-zero weights would make every candidate 100% on target. The inverse is the expectation
``sum_i p_i n_i``: P's probabilities map to the (V, A) they imply, a one-hot exactly to its norm.
That is what traces record per critic iteration and what ``--save_strip`` plots.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from emoeditor.constants import EMOTIONS, VA_NORMS, VA_RANGE
from emoeditor.errors import InvalidTargetError

VA_BANDWIDTH = 0.5  # kernel width in rating-scale units: a category's own norm point is >50% that category
VA_MIN_WEIGHT = 0.05  # mixture weights below this are dropped (the critic's support stays the near categories)


def norm_points() -> torch.Tensor:
    """(8, 2) float64: (valence, arousal) of each category, in `EMOTIONS` order."""
    return torch.tensor([VA_NORMS[e] for e in EMOTIONS], dtype=torch.float64)


def parse_va(spec: str | Sequence[float]) -> tuple[float, float]:
    """``"V,A"`` (or a pair) -> (valence, arousal), checked against the 1-9 scale of the norms."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    lo, hi = VA_RANGE
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise InvalidTargetError(f"valence-arousal target {spec!r} must be two numbers 'V,A' on the {lo:g}-{hi:g} "
                                 f"scale, e.g. 7.5,6 (happy and excited) or 2.5,3 (sad and calm)")
    if not all(lo <= v <= hi for v in values):
        raise InvalidTargetError(f"valence-arousal target {spec!r} lies outside the norms' {lo:g}-{hi:g} scale; "
                                 f"give both values in [{lo:g}, {hi:g}]")
    return values[0], values[1]


def va_to_mixture(valence: float, arousal: float, bandwidth: float = VA_BANDWIDTH,
                  min_weight: float = VA_MIN_WEIGHT) -> torch.Tensor:
    """The (8,) float32 target mixture of a point of the plane (module docstring: the kernel)."""
    if not bandwidth > 0:
        raise InvalidTargetError(f"valence-arousal bandwidth must be > 0, got {bandwidth}")
    if not 0 <= min_weight <= 1 / len(EMOTIONS):  # the largest kernel weight is at least 1/8: one always stays
        raise InvalidTargetError(f"valence-arousal min_weight must be in [0, 1/{len(EMOTIONS)}], got {min_weight}")
    point = torch.tensor([valence, arousal], dtype=torch.float64)
    sq = ((norm_points() - point) ** 2).sum(1)
    weights = torch.softmax(-sq / (2 * bandwidth ** 2), 0)  # log-sum-exp: no underflow far from every norm
    weights = torch.where(weights >= min_weight, weights, torch.zeros_like(weights))
    return (weights / weights.sum()).float()


def mixture_to_va(probs: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """The expected (valence, arousal) under an 8-d distribution (P's probabilities or a target)."""
    probs = torch.as_tensor(probs, dtype=torch.float64).flatten().cpu()
    if probs.numel() != len(EMOTIONS):
        raise InvalidTargetError(f"expected {len(EMOTIONS)} probabilities, got {probs.numel()}")
    va = (probs / probs.sum()) @ norm_points()
    return round(float(va[0]), 4), round(float(va[1]), 4)


def va_path(trace: dict) -> list[tuple[float, float]]:
    """(V, A) of the source, then of every critic iteration, from a trace."""
    return [tuple(trace["source_va"])] + [tuple(it["va"]) for it in trace["iterations"]]


def va_path_figure(trace: dict, ax=None, title: Optional[str] = "valence-arousal path (P's expectation)"):
    """The critic's path in the plane: the eight norm points, the source, each iteration (numbered),
    the returned image (ringed) and the target; returns the matplotlib Figure."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in a web server's threads

    if ax is None:
        fig = Figure(figsize=(4, 4), dpi=100)
        ax = fig.subplots()
    else:
        fig = ax.figure
    norms = norm_points().numpy()
    ax.scatter(norms[:, 0], norms[:, 1], c="0.6", s=18, zorder=2)
    for (v, a), name in zip(norms, EMOTIONS):
        ax.annotate(name, (v, a), textcoords="offset points", xytext=(3, 3), fontsize=7, color="0.35")
    path = va_path(trace)
    xs, ys = zip(*path)
    ax.plot(xs, ys, "-", color="tab:blue", lw=1, zorder=3)
    ax.scatter(xs[1:], ys[1:], color="tab:blue", s=16, zorder=4)
    for k, (v, a) in enumerate(path[1:], start=1):
        ax.annotate(str(k), (v, a), textcoords="offset points", xytext=(-8, -9), fontsize=7, color="tab:blue")
    ax.scatter([xs[0]], [ys[0]], marker="s", color="black", s=30, zorder=5, label="source")
    target = trace.get("target_va") or mixture_to_va(trace["target"])
    ax.scatter([target[0]], [target[1]], marker="*", color="tab:red", s=120, zorder=5, label="target")
    returned = trace.get("returned")
    if returned is not None:
        v, a = path[returned + 1]  # SOURCE_INDEX (-1) is the source at position 0
        ax.scatter([v], [a], facecolors="none", edgecolors="tab:green", s=160, lw=2, zorder=6, label="returned")
    lo, hi = VA_RANGE
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="valence", ylabel="arousal")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
