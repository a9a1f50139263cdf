"""LPIPS (the `lpips` package, AlexNet trunk, v0.1 linear layers) loaded offline with weights_only reads.

`lpips.LPIPS(net="alex")` would download torchvision's AlexNet and unpickle its own linear layers;
here the trunk comes from a local file (the torch hub cache by default) and both files are read with
``torch.load(weights_only=True)``. A random-weight LPIPS (seeded) serves the tiny runs and tests.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch

from emoeditor.errors import MissingWeightsError
from emoeditor.models.components import seeded_init

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
LPIPS_VERSION = "0.1"
# state-dict keys no weights file holds: constant input scaling, and `lins`, a second name for lin0..lin4
NOT_IN_FILES = ("scaling_layer.", "lins.")


def default_alexnet_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def _bare_lpips():
    import lpips

    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" for the random trunk
        warnings.simplefilter("ignore")
        return lpips.LPIPS(pretrained=False, net="alex", version=LPIPS_VERSION, pnet_rand=True, verbose=False)


def _trunk_state(model, alexnet: dict) -> dict:
    """torchvision's features.<i>.* keys as lpips' net.slice<k>.<i>.* (its slices keep the feature indices)."""
    where = {name: f"net.{slice_name}.{name}" for slice_name, block in model.net.named_children()
             for name, _ in block.named_children()}
    state = {}
    for key, value in alexnet.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[1] in where:
            state[f"{where[parts[1]]}.{'.'.join(parts[2:])}"] = value
    return state


def load_lpips(alexnet_path: Optional[str | Path] = None, device: str | torch.device = "cpu",
               random_seed: Optional[int] = None) -> torch.nn.Module:
    """LPIPS with AlexNet from `alexnet_path` (default: the torch hub cache); random weights if `random_seed`."""
    if random_seed is not None:
        with seeded_init(random_seed):
            model = _bare_lpips()
        return model.to(device).eval().requires_grad_(False)
    import lpips

    path = Path(alexnet_path) if alexnet_path else default_alexnet_path()
    if not path.is_file():
        raise MissingWeightsError(f"LPIPS needs torchvision's AlexNet weights at {path}, which is missing; download "
                                  f"{ALEXNET_URL} and pass --lpips_alexnet <that file> (or put it in "
                                  f"{default_alexnet_path().parent}/)")
    model = _bare_lpips()
    trunk = _trunk_state(model, torch.load(path, map_location="cpu", weights_only=True))
    linear = torch.load(Path(lpips.__file__).parent / "weights" / f"v{LPIPS_VERSION}" / "alex.pth",
                        map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict({**trunk, **linear}, strict=False)
    missing = [k for k in missing if not k.startswith(NOT_IN_FILES)]
    if missing or unexpected:
        raise MissingWeightsError(f"{path}: not torchvision AlexNet weights for LPIPS (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def lpips_distance(model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) LPIPS of [0, 1] image batches (B, 3, H, W), as float64 on the CPU."""
    device = next(model.parameters()).device
    return model(a.to(device).float(), b.to(device).float(), normalize=True).flatten().double().cpu()
