"""The emotion encoder (Sec. 3.1): an 8-d emotion vector to a (77, 768) text-like embedding."""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from emoeditor.constants import EMOTION_ENCODER_HIDDEN, NUM_EMOTIONS, TEXT_EMBED_DIM, TEXT_SEQ_LEN


class EmotionEncoder(ModelMixin, ConfigMixin):
    """MLP 8 -> 256 -> 512 -> 768 -> 77*768 with ReLU between layers.

    The layers live in ``self.fc`` (an nn.Sequential) so state-dict keys are ``fc.0``,
    ``fc.2``, ``fc.4``, ``fc.6`` exactly as in the official ``model_emoenc.pt``.
    With ``learned_null=True`` it also holds ``null_embedding``, the unconditional embedding
    that cond dropout trains and classifier-free guidance uses; otherwise the null is zeros.
    As a ModelMixin it saves/loads with ``save_pretrained``/``from_pretrained`` (safetensors).
    """

    @register_to_config
    def __init__(
        self,
        num_emotions: int = NUM_EMOTIONS,
        hidden_dims: Sequence[int] = EMOTION_ENCODER_HIDDEN,
        seq_len: int = TEXT_SEQ_LEN,
        embed_dim: int = TEXT_EMBED_DIM,
        learned_null: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_emotions
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, seq_len * embed_dim))
        self.fc = nn.Sequential(*layers)
        # The "unconditional" embedding for cond dropout / classifier-free guidance. Only a
        # learned one is a parameter, so the default state dict stays exactly the official one.
        self.null_embedding = nn.Parameter(torch.zeros(seq_len, embed_dim)) if learned_null else None

    def null(self, batch_size: int) -> torch.Tensor:
        """(B, seq_len, embed_dim) null embedding: learned if configured, else zeros."""
        if self.null_embedding is not None:
            return self.null_embedding.unsqueeze(0).expand(batch_size, -1, -1)
        weight = self.fc[-1].weight
        return weight.new_zeros(batch_size, self.config.seq_len, self.config.embed_dim)

    def forward(self, emotion: torch.Tensor) -> torch.Tensor:
        emotion = emotion.to(dtype=self.fc[0].weight.dtype)
        out = self.fc(emotion.reshape(-1, self.config.num_emotions))
        return out.view(-1, self.config.seq_len, self.config.embed_dim)
