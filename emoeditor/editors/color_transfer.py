"""Colour transfer (Table 1 "CT"): Pitié et al.'s N-dimensional PDF transfer toward a reference image.

The paper's CT baseline (Pitié, Kokaram, Dahyot 2007) recolours the source with the colour
distribution of "an additional reference image from the target emotion category ... randomly
selected from EmoSet" (:mod:`emoeditor.data.reference_pool`). The iterative distribution transfer
rotates both colour point clouds by a random 3-D rotation, matches each of the three 1-D marginals
of the source to the reference's (quantile matching), rotates back, and repeats, so the joint
3-D distribution converges to the reference's; the regrain step then restores the source's
gradients where the transfer stretched flat areas into grain (Pitié 2007, Sec. 5). The authors'
MATLAB code projects on 6 axes per iteration (3 axes and their diagonals, rotated) and maps back with
a pseudo-inverse; here each iteration is one orthonormal basis, so rotating back is the transpose.

Each row draws its reference and then its rotations from its own generator; the batched work is
sorting, searching and per-pixel arithmetic (3-term sums written out), so a row's result is the
same bits alone or in any batch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from emoeditor.data.reference_pool import DEFAULT_SPLIT, POOL_SPLITS, ReferencePool, method_pool
from emoeditor.editors.base import Editor, EditResult
from emoeditor.editors.registry import MethodContext, choice, parse_bool, positive_int, register_editor
from emoeditor.imageio import MIN_SIDE

ITERATIONS = 20  # x 3 axes: as many 1-D matchings as the authors' demo (10 iterations x 6 axes)
REGRAIN_ITERATIONS = (4, 16, 32, 64, 64, 64)  # solver sweeps per level, finest first (Pitié's regrain.m)
REGRAIN_SMOOTHNESS = 1.0


def random_rotations(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 3, 3) float64 rotations, uniform on SO(3): QR of Gaussian matrices, signs fixed."""
    gauss = torch.randn(count, 3, 3, generator=generator, dtype=torch.float64, device=generator.device)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar measure on O(3)
    q[..., :, 0] *= torch.sign(torch.linalg.det(q)).unsqueeze(-1)  # reflections -> rotations
    return q


def _times(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x @ m for x (B, N, 3), m (B, 3, 3), as explicit 3-term sums: the same bits for a row in any batch."""
    return x[..., 0:1] * m[:, None, 0] + x[..., 1:2] * m[:, None, 1] + x[..., 2:3] * m[:, None, 2]


def match_marginals(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each column of x (B, N, K) mapped onto the distribution of y's (B, M, K) column.

    A value's empirical CDF (its average rank, so equal values stay equal) is read off y's
    quantile function, linearly interpolated between order statistics (NumPy's 'linear' quantile)."""
    n, m = x.shape[1], y.shape[1]
    xs = x.transpose(1, 2).contiguous()
    sorted_x = xs.sort(-1).values
    ranks = torch.searchsorted(sorted_x, xs) + torch.searchsorted(sorted_x, xs, right=True) - 1
    pos = ranks.to(x.dtype) / 2 / max(n - 1, 1) * (m - 1)
    sorted_y = y.transpose(1, 2).sort(-1).values
    low = pos.floor().long().clamp(0, max(m - 2, 0))
    high = (low + 1).clamp(max=m - 1)
    return torch.lerp(sorted_y.gather(-1, low), sorted_y.gather(-1, high), pos - low).transpose(1, 2)


def pdf_transfer(source: torch.Tensor, reference: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Iterative distribution transfer of colours (B, N, 3) toward (B, M, 3), one rotation (B, T, 3, 3) per step."""
    x = source
    for t in range(rotations.shape[1]):
        r = rotations[:, t]
        x = _times(match_marginals(_times(x, r), _times(reference, r)), r.transpose(-1, -2))
    return x


def _next(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The neighbour after each pixel along `dim` (the border repeated)."""
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim)


def _prev(t: torch.Tensor, dim: int) -> torch.Tensor:
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, 0, 1), t.narrow(dim, 0, n - 1)], dim)


def _regrain_solve(out: torch.Tensor, source: torch.Tensor, colours: torch.Tensor, sweeps: int, level: int,
                   smoothness: float) -> torch.Tensor:
    """Relaxation sweeps toward J with J's gradients close to the source's (weight phi, large in flat
    areas) and J's colours close to the transferred ones (weight psi, large at edges)."""
    dx = _next(source, -1) - _prev(source, -1)
    dy = _next(source, -2) - _prev(source, -2)
    sq = dx ** 2 + dy ** 2
    delta = (sq[:, 0:1] + sq[:, 1:2] + sq[:, 2:3]).sqrt()
    psi = (256 * delta / 5).clamp(max=1)
    phi = 30 * 2.0 ** (-level) / (1 + 10 * delta / smoothness)
    neighbours = [(_next, -1), (_next, -2), (_prev, -1), (_prev, -2)]
    weights = [(shift(phi, dim) + phi) / 2 for shift, dim in neighbours]
    den = psi + weights[0] + weights[1] + weights[2] + weights[3]
    rho = 0.2
    for _ in range(sweeps):
        num = psi * colours
        for w, (shift, dim) in zip(weights, neighbours):
            num = num + w * (shift(out, dim) - shift(source, dim) + source)
        out = num / den * (1 - rho) + rho * out
    return out


def regrain(source: torch.Tensor, colours: torch.Tensor, sweeps: Sequence[int] = REGRAIN_ITERATIONS,
            smoothness: float = REGRAIN_SMOOTHNESS, level: int = 0,
            out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pitié 2007's grain reduction of (B, 3, H, W) `colours` (the transfer of `source`), coarse to fine,
    starting from the source: each level halves the image while both sides stay above 20 px and sweeps
    remain. The colours are settled at the coarse levels (where the gradient weight phi is small), so
    an image too small for a deep pyramid (e.g. 64 px: two levels) keeps more of the source's colours."""
    out = source if out is None else out
    h, w = source.shape[-2:]
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    if len(sweeps) > 1 and h2 > 20 and w2 > 20:
        def down(t):
            return F.interpolate(t, size=(h2, w2), mode="bilinear", align_corners=False)
        coarse = regrain(down(source), down(colours), sweeps[1:], smoothness, level + 1, down(out))
        out = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return _regrain_solve(out, source, colours, sweeps[0], level, smoothness)


class ColorTransferEditor(Editor):
    """Recolours each source with a reference of its target emotion drawn from a pool."""

    name = "ct"

    def __init__(self, pool: ReferencePool, iterations: int = ITERATIONS, regrain: bool = True,
                 size: Optional[int] = None):
        self.pool = pool
        self.iterations = iterations
        self.regrain = regrain
        self.size = size  # reference side in pixels; None: the source's size

    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        b, _, h, w = images.shape
        refs, rotations, traces = [], [], []
        for target, gen in zip(targets, generators):
            ref, path, emotion = self.pool.draw_for(target, gen, self.size or (h, w))
            refs.append(ref)
            rotations.append(random_rotations(self.iterations, gen))
            # "transfer_iterations": the harness reads a trace's "iterations" as the critic loop's list
            traces.append({"method": "ct", "pool": self.pool.source, "reference": path, "emotion": emotion,
                           "target": target.tolist(), "transfer_iterations": self.iterations, "regrain": self.regrain})
        source = images.to(torch.float64)
        ref = torch.stack(refs).to(images.device, torch.float64)
        colours = pdf_transfer(source.flatten(2).transpose(1, 2), ref.flatten(2).transpose(1, 2),
                               torch.stack(rotations).to(images.device))
        out = colours.transpose(1, 2).reshape(b, 3, h, w)
        if self.regrain:
            out = regrain(source, out)
        return EditResult(images=out.clamp(0, 1).to(images.dtype), traces=traces)


def reference_side(value: str) -> int:
    if int(value) < MIN_SIDE:
        raise ValueError(f"must be at least {MIN_SIDE} (pixels)")
    return int(value)


# The options every reference-based method takes (CT, NST).
REFERENCE_OPTIONS = {"pool": str, "split": choice(*POOL_SPLITS), "size": reference_side, "weights": choice("tiny")}
OPTIONS = {**REFERENCE_OPTIONS, "iterations": positive_int, "regrain": parse_bool}


@register_editor("ct", paper_row="CT", options=OPTIONS)
def _color_transfer(options: dict, context: MethodContext) -> Editor:
    """Options: pool (EmoSet folder or JSON {emotion: [paths]}; required unless weights=tiny, which uses toy
    references), split (EmoSet split the references come from: train by default, so test sources are never
    references; or val, test, all), iterations (rotations, default 20), regrain (true/false, default true),
    size (reference side in pixels; default the source's size)."""
    pool = method_pool("ct", options.get("pool"), options.get("split", DEFAULT_SPLIT),
                       tiny=options.get("weights") == "tiny")
    return ColorTransferEditor(pool, iterations=positive_int(options.get("iterations", ITERATIONS)),
                               regrain=parse_bool(options.get("regrain", "true")),
                               size=reference_side(options["size"]) if "size" in options else None)
