"""Neural style transfer (Table 1 "NST"): Gatys et al. 2016 toward a reference of the target emotion.

The image is optimised, starting from the source, so that its VGG19 features at ``relu4_2`` stay
those of the source (content loss) while the Gram matrices of its features at ``relu1_1``,
``relu2_1``, ``relu3_1``, ``relu4_1`` and ``relu5_1`` become those of the reference (style loss),
the reference being drawn from the pool as for CT (:mod:`emoeditor.data.reference_pool`).

Layers are post-ReLU: Gatys et al.'s Caffe model rectifies in place, so the blobs their paper calls
``conv1_1`` ... hold the activations after the ReLU (as in Johnson's neural-style); the PyTorch
tutorial hooks the convolutions themselves (pre-ReLU). The losses follow the tutorial, for which the
usual weights (style 1e6, content 1) are tuned: Gram matrices normalised by C·H·W, each a mean
squared error, the style loss the sum over its five layers. The pixels are an unconstrained tensor
whose clamp to [0, 1] is the image the losses see (and the output), so L-BFGS's strong-Wolfe line
search works on one consistent objective (the tutorial's in-place clamp between evaluations is undone
by a line search, and without one L-BFGS's fixed steps overshoot); `steps` counts L-BFGS iterations
(at most 1.25 evaluations each, torch's default cap) or Adam steps.

Each row is optimised on its own: L-BFGS's curvature estimate (and a summed loss's scale) would
otherwise couple the rows of a batch, and a row's result must not depend on its batch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from emoeditor.data.reference_pool import DEFAULT_SPLIT, ReferencePool, method_pool
from emoeditor.editors.base import Editor, EditResult
from emoeditor.editors.color_transfer import REFERENCE_OPTIONS, reference_side
from emoeditor.editors.registry import (
    MethodContext,
    choice,
    non_negative,
    positive_float,
    positive_int,
    register_editor,
)
from emoeditor.errors import MethodError
from emoeditor.models.vgg import VGGFeatures, load_vgg19, tiny_vgg19

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STEPS = 300
TINY_STEPS = 20  # weights=tiny: the tiny default runs in seconds, its numbers are noise anyway
STYLE_WEIGHT = 1e6
CONTENT_WEIGHT = 1.0
LEARNING_RATES = {"lbfgs": 1.0, "adam": 0.02}  # pixel units for Adam ([0, 1] images)


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, C) Gram matrices of (B, C, H, W) features, normalised by C·H·W (the tutorial's)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class NeuralStyleEditor(Editor):
    """Gatys-style optimisation of each source toward a reference of its target emotion."""

    name = "nst"

    def __init__(self, vgg: VGGFeatures, pool: ReferencePool, steps: int = STEPS, optimizer: str = "lbfgs",
                 content_weight: float = CONTENT_WEIGHT, style_weight: float = STYLE_WEIGHT,
                 lr: Optional[float] = None, size: Optional[int] = None):
        if optimizer not in LEARNING_RATES:
            raise MethodError(f"optimizer {optimizer!r}: choose one of {', '.join(LEARNING_RATES)}")
        self.vgg = vgg
        self.pool = pool
        self.steps = steps
        self.optimizer = optimizer
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.lr = LEARNING_RATES[optimizer] if lr is None else lr
        self.size = size  # reference side in pixels; None: the source's size

    @property
    def device(self) -> torch.device:
        return self.vgg.mean.device

    def losses(self, image: torch.Tensor, content: torch.Tensor,
               style: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(content loss, style loss), unweighted, of `image` against the targets' features and Grams."""
        feats = self.vgg(image, (CONTENT_LAYER, *STYLE_LAYERS))
        style_loss = sum(F.mse_loss(gram(feats[layer]), style[layer]) for layer in STYLE_LAYERS)
        return F.mse_loss(feats[CONTENT_LAYER], content), style_loss

    def transfer(self, source: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """One (1, 3, H, W) source styled after one (1, 3, h, w) reference; (image, loss record)."""
        with torch.no_grad():
            content = self.vgg(source, (CONTENT_LAYER,))[CONTENT_LAYER]
            style = {k: gram(v) for k, v in self.vgg(reference, STYLE_LAYERS).items()}
        pixels = source.clone(memory_format=torch.contiguous_format).requires_grad_(True)
        evaluations = [0]

        def objective() -> torch.Tensor:
            c, s = self.losses(pixels.clamp(0, 1), content, style)
            evaluations[0] += 1
            return self.content_weight * c + self.style_weight * s

        with torch.no_grad():
            start = [float(v) for v in self.losses(source, content, style)]
        if self.optimizer == "lbfgs":
            opt = torch.optim.LBFGS([pixels], lr=self.lr, max_iter=self.steps, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = objective()
                loss.backward()
                return loss
            opt.step(closure)
        else:
            opt = torch.optim.Adam([pixels], lr=self.lr)
            for _ in range(self.steps):
                opt.zero_grad()
                objective().backward()
                opt.step()
        with torch.no_grad():
            image = pixels.clamp(0, 1)
            end = [float(v) for v in self.losses(image, content, style)]
        record = {"content_loss": {"start": start[0], "end": end[0]}, "style_loss": {"start": start[1], "end": end[1]},
                  "evaluations": evaluations[0]}
        return image, record

    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        h, w = images.shape[-2:]
        outputs, traces = [], []
        for image, target, gen in zip(images, targets, generators):
            ref, path, emotion = self.pool.draw_for(target, gen, self.size or (h, w))
            with torch.enable_grad():
                out, record = self.transfer(image[None].to(self.device, torch.float32),
                                            ref[None].to(self.device, torch.float32))
            outputs.append(out[0])
            traces.append({"method": "nst", "pool": self.pool.source, "reference": path, "emotion": emotion,
                           "target": target.tolist(), "optimizer": self.optimizer, "steps": self.steps, "lr": self.lr,
                           "content_weight": self.content_weight, "style_weight": self.style_weight, **record})
        return EditResult(images=torch.stack(outputs).to(images.device, images.dtype), traces=traces)


OPTIONS = {**REFERENCE_OPTIONS, "vgg": str, "steps": positive_int, "optimizer": choice(*LEARNING_RATES),
           "content_weight": non_negative, "style_weight": non_negative, "lr": positive_float}


@register_editor("nst", paper_row="NST", options=OPTIONS)
def _nst(options: dict, context: MethodContext) -> Editor:
    """Options: pool, split, size (as CT's), vgg (torchvision's VGG19 state dict; unset: torchvision's own
    download), weights=tiny (a seeded tiny VGG19 and toy references for what is unset; 20 steps unless given),
    steps (default 300),
    optimizer (lbfgs or adam), content_weight (1), style_weight (1e6), lr (1 for L-BFGS, 0.02 for Adam)."""
    tiny = options.get("weights") == "tiny"
    pool = method_pool("nst", options.get("pool"), options.get("split", DEFAULT_SPLIT), tiny=tiny)
    if tiny and "vgg" not in options:
        vgg = tiny_vgg19(seed=0).to(context.device)
    else:
        try:
            vgg = load_vgg19(options.get("vgg"), context.device)
        except MethodError as exc:
            raise MethodError(f"nst option vgg=: {exc}") from None
    return NeuralStyleEditor(
        vgg, pool, steps=positive_int(options.get("steps", TINY_STEPS if tiny else STEPS)),
        optimizer=options.get("optimizer", "lbfgs"),
        content_weight=non_negative(options.get("content_weight", CONTENT_WEIGHT)),
        style_weight=non_negative(options.get("style_weight", STYLE_WEIGHT)),
        lr=positive_float(options["lr"]) if "lr" in options else None,
        size=reference_side(options["size"]) if "size" in options else None)
