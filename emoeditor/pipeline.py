"""One EmoEditor edit as a diffusers pipeline (paper Sec. 3.1, official ip2p.py).

The folder it saves (``save_pretrained``) is the exported model: unet/, vae/, scheduler/,
emotion_encoder/ and optionally text_encoder/ + tokenizer/ (used only for training's L_emb),
plus model_index.json, which also records how the model was trained (emotion_input,
vae_input_range, lambda_emb, cond_dropout) so inference needs no flags to match it.
"""

from __future__ import annotations

from typing import Optional

from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel

from .constants import LAMBDA_EMB
from .models.emotion_encoder import EmotionEncoder


class EmoEditorPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "emotion_encoder->vae->unet->vae"
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: DDIMScheduler,
        emotion_encoder: EmotionEncoder,
        text_encoder=None,
        tokenizer=None,
        emotion_input: str = "direction",
        vae_input_range: str = "minus_one_one",
        lambda_emb: float = LAMBDA_EMB,
        cond_dropout: float = 0.0,
    ):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler, emotion_encoder=emotion_encoder,
                              text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(emotion_input=emotion_input, vae_input_range=vae_input_range,
                                lambda_emb=lambda_emb, cond_dropout=cond_dropout)
