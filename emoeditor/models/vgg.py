"""VGG19 features by layer name, for the style-transfer baselines (NST's Gram and content losses,
CLIPstyler's content loss).

Layers are named as in Gatys et al. and CLIPstyler: ``conv4_2`` is the output of the second
convolution of block 4 before its ReLU, ``relu4_2`` after it, ``pool4`` the block's max-pool.
Inputs are images in [0, 1]; the ImageNet normalisation torchvision's weights expect happens
inside, so callers never normalise. The real weights are torchvision's ImageNet VGG19 (a local
``.pth``/``.safetensors`` file, or torchvision's own download for users with network); the tiny
trunk has the same 16-convolution layout with a few channels, for offline tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn
from torchvision.models import vgg

from emoeditor.errors import MethodError
from emoeditor.fileio import missing_path
from emoeditor.models.components import seeded_init

VGG19_WIDTHS = (64, 128, 256, 512, 512)
TINY_VGG19_WIDTHS = (4, 8, 8, 16, 16)
CONVS_PER_BLOCK = (2, 2, 4, 4, 4)  # VGG19 ("configuration E")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_cfg(widths: Sequence[int]) -> list:
    cfg: list = []
    for width, convs in zip(widths, CONVS_PER_BLOCK):
        cfg += [width] * convs + ["M"]
    return cfg


def layer_names() -> list[str]:
    """The name of every module of VGG19's ``features``, in order (conv1_1, relu1_1, ..., pool5)."""
    names = []
    for block, convs in enumerate(CONVS_PER_BLOCK, start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


class VGGFeatures(nn.Module):
    """VGG19's convolutional trunk, frozen, returning the activations of the layers asked for."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        names = layer_names()
        if len(features) != len(names):
            raise ValueError(f"expected VGG19's {len(names)} feature modules, got {len(features)}")
        self.features = features.eval().requires_grad_(False)
        self.names = names
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """{layer: activation} for `layers`, from (B, 3, H, W) images in [0, 1]; runs only as deep as needed."""
        unknown = [name for name in layers if name not in self.names]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; names look like conv4_2, relu1_1, pool3")
        last = max(self.names.index(name) for name in layers)
        wanted = set(layers)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out = {}
        for name, module in zip(self.names[:last + 1], self.features):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out


def _trunk(widths: Sequence[int]) -> nn.Sequential:
    return vgg.make_layers(_layer_cfg(widths), batch_norm=False)


def tiny_vgg19(seed: int = 0) -> VGGFeatures:
    """VGG19's layout with a few channels per layer and seeded random weights (tests, the tiny default)."""
    with seeded_init(seed):
        return VGGFeatures(_trunk(TINY_VGG19_WIDTHS))


def load_vgg19(source: Optional[str | Path] = None, device: str | torch.device = "cpu") -> VGGFeatures:
    """torchvision's ImageNet VGG19 trunk.

    `source`: a state-dict file (torchvision's ``vgg19-dcbbabee.pth``, loaded with weights_only, or a
    .safetensors file), with keys ``features.N.*`` (the whole model) or ``N.*`` (the trunk alone);
    None: torchvision's own weights (its cache, or a download where there is network)."""
    if source is None:
        try:
            model = vgg.vgg19(weights=vgg.VGG19_Weights.IMAGENET1K_V1)
        except OSError as exc:  # torchvision's download without network
            raise MethodError(f"torchvision's VGG19 could not be loaded ({exc}); pass vgg=<a local copy of "
                              "vgg19-dcbbabee.pth>") from None
        return VGGFeatures(model.features).to(device)
    path = Path(source)
    if not path.is_file():
        raise MethodError(f"{missing_path(path, 'the VGG19 weights')}; pass torchvision's vgg19-dcbbabee.pth "
                          "(or a .safetensors copy of it), or leave it unset to use torchvision's download")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    trunk = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    features = _trunk(VGG19_WIDTHS)
    try:
        features.load_state_dict(trunk)
    except RuntimeError as exc:
        raise MethodError(f"{path} is not a VGG19 state dict ({str(exc).splitlines()[0]})") from None
    return VGGFeatures(features).to(device)
