"""Any method in the critic loop, configured from method-spec options (EmoEditor, ip2p+critic, lms+critic).

The loop itself is `emoeditor.editing.loop.CriticLoop`; this is the one place that turns a spec's
critic options (``critic``, ``num_loop``, ``ssim_low``, ...) and the harness's defaults into one.
"""

from __future__ import annotations

from typing import Callable

import torch

from emoeditor.constants import NUM_LOOP
from emoeditor.editing.critic import CONFIDENCE_MODES, CRITICS, DIRECTION_SOURCES, CriticConfig
from emoeditor.editing.loop import CriticLoop
from emoeditor.editors.base import Editor
from emoeditor.editors.registry import MethodContext, choice, parse_bool, parse_typed, positive_int
from emoeditor.errors import MethodError

# option -> converter, for register_editor(options=...)
CRITIC_OPTIONS = {
    "critic": choice(*CRITICS), "num_loop": positive_int, "ssim_low": float, "ssim_high": float,
    "confidence": float, "confidence_mode": choice(*CONFIDENCE_MODES), "direction_probs": choice(*DIRECTION_SOURCES),
    "return_candidates": parse_bool,
}


def critic_loop(editor: Editor, probs: Callable[[torch.Tensor], torch.Tensor], options: dict,
                context: MethodContext, batch_size: int) -> CriticLoop:
    """`editor` in the batched critic loop (paper Sec. 3.3). The CRITIC_OPTIONS in `options` are popped;
    the others default to the harness's (--critic, --num_loop, --return_candidates). `probs` is P's
    (B, 3, H, W) -> (B, 8)."""
    critic = {k: parse_typed(options.pop(k)) for k in CRITIC_OPTIONS if k in options and k != "return_candidates"}
    critic.setdefault("critic", context.critic)
    critic.setdefault("num_loop", context.num_loop or NUM_LOOP)
    return_candidates = parse_bool(options.pop("return_candidates", context.return_candidates))
    if critic["critic"] == "none":
        return_candidates = False  # one pass: the output is the only candidate
    try:
        config = CriticConfig(**critic)
    except (TypeError, ValueError) as exc:
        raise MethodError(f"{editor.name} critic options {critic}: {exc}") from None
    return CriticLoop(editor, probs, config, batch_size=batch_size, device=getattr(editor, "device", context.device),
                      return_candidates=return_candidates)
