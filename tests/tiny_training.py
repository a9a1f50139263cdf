"""A tiny trainable EmoEditor (UNet + emotion encoder), random loss inputs and tiny training flags, shared by
the training tests."""

import torch

from emoeditor.cli.train import default_args
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


def tiny_train_args(out, base_dir, data_root, json_path, **overrides):
    """train.py's flags for a tiny CPU run on the toy EmoPair, writing under `out`; `overrides` win."""
    kw = dict(base_model=str(base_dir), json_path=str(json_path), data_root=str(data_root), image_size=64,
              encoder_hidden=list(TINY_ENCODER_HIDDEN), batch_size=4, num_workers=0, cpu=True, mixed_precision="no",
              save_model_dir=str(out / "models"), train_save_dir=str(out / "logs"), no_progress=True, image_every=0,
              checkpoint_every=0)
    kw.update(overrides)
    return default_args(**kw)
