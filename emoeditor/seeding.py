"""The one seed mixer: every derived seed (training steps, editing jobs, evaluation jobs, augmentation).

Seeds are mixed, never added: ``seed + step`` makes (seed 1, step 0) and (seed 0, step 1) draw the
same noise, and Python's ``hash`` of a string changes between processes. sha256 of the parts'
text is stable across processes, machines and Python versions.
"""

from __future__ import annotations

import hashlib

import torch


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from integers and strings (sha256 of their '/'-joined text; ints as decimal)."""
    text = "/".join(str(int(p)) if not isinstance(p, str) else p for p in parts)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with ``mix_seed(*parts)``."""
    return torch.Generator(device=device).manual_seed(mix_seed(*parts))
