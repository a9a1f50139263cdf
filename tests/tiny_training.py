"""A tiny trainable EmoEditor (UNet + emotion encoder) and random loss inputs, shared by the training tests."""

import torch

from emoeditor.models.emotion_encoder import EmotionEncoder
from emoeditor.models.tiny import TINY_ENCODER_HIDDEN, TINY_TEXT_DIM, tiny_unet
from emoeditor.training.trainer import EmoEditorDenoiser


def tiny_model(learned_null=False):
    torch.manual_seed(0)
    enc = EmotionEncoder(hidden_dims=TINY_ENCODER_HIDDEN, embed_dim=TINY_TEXT_DIM, learned_null=learned_null)
    if learned_null:
        torch.nn.init.normal_(enc.null_embedding)
    return EmoEditorDenoiser(tiny_unet(0), enc)


def loss_inputs(seed=1, batch=3):
    g = torch.Generator().manual_seed(seed)
    return dict(target_moments=torch.randn(batch, 8, 16, 16, generator=g),
                source_latent=torch.randn(batch, 4, 16, 16, generator=g),
                emotion=torch.randn(batch, 8, generator=g),
                text_embedding=torch.randn(batch, 77, TINY_TEXT_DIM, generator=g))
