"""The demo's plots (matplotlib Figures, which gr.Plot shows as images).

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global registry to leak into and
safe in the server's worker threads.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emoeditor.constants import EMOTIONS, VA_NORMS, VA_RANGE


def probs_figure(before: Sequence[float], after: Sequence[float], target: Sequence[float]) -> Figure:
    """Grouped bars of P(emotion) on the source and on the returned edit; the target's emotions in bold."""
    x = np.arange(len(EMOTIONS))
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.bar(x - 0.2, before, width=0.4, label="source", color="#9aa5b1")
    ax.bar(x + 0.2, after, width=0.4, label="edit", color="#d9480f")
    ax.set_xticks(x, EMOTIONS, rotation=30, ha="right")
    for label, weight in zip(ax.get_xticklabels(), target):
        if weight > 0:
            label.set_fontweight("bold")
    ax.set_ylim(0, 1.2)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("P(emotion)")
    ax.set_title("P's probabilities on the source and the edit (target in bold)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", ncols=2)
    fig.tight_layout()
    return fig


LABEL_OFFSETS = {"anger": (4, -11), "contentment": (4, -11)}  # points; these two sit close to fear and amusement


class VAPlane:
    """The clickable valence-arousal plane: a fixed-size image of the 1-9 rating plane with the eight
    categories at their norms; `to_va` maps a clicked pixel back to (valence, arousal)."""

    def __init__(self, size_px: int = 360, dpi: int = 100):
        self.size_px, self.dpi = size_px, dpi

    def _draw(self, point: Optional[tuple[float, float]]):
        fig = Figure(figsize=(self.size_px / self.dpi,) * 2, dpi=self.dpi)
        canvas = FigureCanvasAgg(fig)
        ax = fig.subplots()
        norms = np.array([VA_NORMS[e] for e in EMOTIONS])
        ax.scatter(norms[:, 0], norms[:, 1], c="#495057", s=22, zorder=2)
        for (v, a), name in zip(norms, EMOTIONS):
            ax.annotate(name, (v, a), textcoords="offset points", xytext=LABEL_OFFSETS.get(name, (4, 3)), fontsize=8,
                        color="#343a40")
        if point is not None:
            ax.scatter([point[0]], [point[1]], marker="*", color="#d9480f", s=180, zorder=3)
        lo, hi = VA_RANGE
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="valence (unhappy → happy)", ylabel="arousal (calm → excited)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        canvas.draw()
        return fig, ax, canvas

    def image(self, point: Optional[tuple[float, float]] = None) -> np.ndarray:
        """(H, W, 3) uint8: the plane, with the chosen point as a star."""
        _, _, canvas = self._draw(point)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def to_va(self, x: float, y: float) -> tuple[float, float]:
        """Image pixel (x right, y down) -> (valence, arousal), clipped to the rating scale."""
        fig, ax, _ = self._draw(None)
        v, a = ax.transData.inverted().transform((x, fig.bbox.height - y))
        lo, hi = VA_RANGE
        return float(np.clip(v, lo, hi)), float(np.clip(a, lo, hi))

    def to_pixel(self, valence: float, arousal: float) -> tuple[float, float]:
        """(valence, arousal) -> image pixel (x right, y down); the inverse of `to_va` inside the plane."""
        fig, ax, _ = self._draw(None)
        x, y = ax.transData.transform((valence, arousal))
        return float(x), float(fig.bbox.height - y)
