"""One EmoEditor edit as a diffusers pipeline (paper Sec. 3.1, official ip2p.py).

The folder it saves (``save_pretrained``) is the exported model: unet/, vae/, scheduler/,
emotion_encoder/ and optionally text_encoder/ + tokenizer/ (used only for training's L_emb),
plus model_index.json, which also records how the model was trained (emotion_input,
vae_input_range, lambda_emb, cond_dropout) so inference needs no flags to match it.

Two VAE input conventions live in the config, because the official code uses two:
``vae_input_range`` is what the VAE was fed in *training* (official: [0, 1], "zero_one"; a
record, never read here), ``inference_vae_input_range`` what an edit feeds it (official
inference: 2x-1, "minus_one_one", for every model, whatever its training fed). The edit reads
only the latter, from the config, so a loaded model always edits the way it was saved to.

The official edit draws a start timestep T per edit and mutates the shared scheduler
(``num_train_timesteps = T; set_timesteps(30)``). We never mutate the scheduler: each row gets
the same timesteps from the pure :func:`official_timesteps` and is stepped by the batched
:func:`ddim_step`, so every image in a batch can have its own T and a job's output does not
depend on its batch-mates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from emoeditor.constants import LAMBDA_EMB, NOISE_START_RANGE, NUM_INFERENCE_STEPS, VAE_INPUT_RANGES
from emoeditor.errors import PipelineInputError
from emoeditor.models.emotion_encoder import EmotionEncoder
from emoeditor.models.latents import decode_latents, encode_condition, encode_latents

Generators = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def official_timesteps(start: int, num_steps: int = NUM_INFERENCE_STEPS, steps_offset: int = 1) -> torch.Tensor:
    """The timesteps the official code denoises through for start T (descending, length `num_steps`).

    Equals DDIMScheduler("leading" spacing) after ``num_train_timesteps = T; set_timesteps(num_steps)``:
    ``k * (T // num_steps) + steps_offset`` for k = num_steps-1 ... 0 (T=905 -> 871, 841, ..., 1).
    """
    start, num_steps = int(start), int(num_steps)
    ratio = start // num_steps
    if ratio < 1:
        raise PipelineInputError(f"start timestep {start} is smaller than num_inference_steps={num_steps}; "
                                 f"use a start timestep >= the number of steps")
    return torch.arange(num_steps - 1, -1, -1, dtype=torch.long) * ratio + steps_offset


def ddim_step(model_output: torch.Tensor, timesteps: torch.Tensor, prev_timesteps: torch.Tensor,
              sample: torch.Tensor, alphas_cumprod: torch.Tensor, final_alpha_cumprod: torch.Tensor,
              prediction_type: str = "epsilon") -> torch.Tensor:
    """Deterministic DDIM update (eta = 0) with a timestep per row.

    Same maths as ``DDIMScheduler.step`` (no clipping/thresholding: the SD v1 config has neither),
    but `timesteps`/`prev_timesteps` are (B,) so each row follows its own schedule; a negative
    previous timestep uses `final_alpha_cumprod`, as the scheduler does at the last step.
    """
    shape = (-1,) + (1,) * (sample.ndim - 1)
    alphas_cumprod = alphas_cumprod.to(sample.device)
    final = torch.as_tensor(final_alpha_cumprod, dtype=alphas_cumprod.dtype, device=sample.device)
    timesteps, prev_timesteps = timesteps.to(sample.device), prev_timesteps.to(sample.device)
    alpha_t = alphas_cumprod[timesteps]
    alpha_prev = torch.where(prev_timesteps >= 0, alphas_cumprod[prev_timesteps.clamp(min=0)], final)
    alpha_t = alpha_t.to(sample.dtype).view(shape)
    alpha_prev = alpha_prev.to(sample.dtype).view(shape)
    beta_t = 1 - alpha_t
    if prediction_type == "epsilon":
        pred_x0 = (sample - beta_t ** 0.5 * model_output) / alpha_t ** 0.5
        pred_eps = model_output
    elif prediction_type == "sample":
        pred_x0 = model_output
        pred_eps = (sample - alpha_t ** 0.5 * pred_x0) / beta_t ** 0.5
    elif prediction_type == "v_prediction":
        pred_x0 = alpha_t ** 0.5 * sample - beta_t ** 0.5 * model_output
        pred_eps = alpha_t ** 0.5 * model_output + beta_t ** 0.5 * sample
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    return alpha_prev ** 0.5 * pred_x0 + (1 - alpha_prev) ** 0.5 * pred_eps


@dataclass
class EmoEditorOutput(BaseOutput):
    """An edit plus everything that was drawn for it, so it can be replayed exactly.

    images: (B, 3, H, W) in [0, 1] (or a list of PIL images); start_timesteps: (B,) the T of
    each row; noise: (B, 4, h, w) the initial noise; image_latents: (B, 4, h, w) the scaled
    posterior sample the noise was added to.
    """

    images: Union[torch.Tensor, list]
    start_timesteps: torch.Tensor
    noise: torch.Tensor
    image_latents: torch.Tensor


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
        inference_vae_input_range: str = "minus_one_one",
    ):
        super().__init__()
        for name, value in (("vae_input_range", vae_input_range),
                            ("inference_vae_input_range", inference_vae_input_range)):
            if value not in VAE_INPUT_RANGES:
                raise PipelineInputError(f"{name} must be one of {', '.join(VAE_INPUT_RANGES)}, got {value!r}")
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler, emotion_encoder=emotion_encoder,
                              text_encoder=text_encoder, tokenizer=tokenizer)
        # An export without inference_vae_input_range (older folders) loads with the default:
        # the 2x-1 every model was edited with before the key existed.
        self.register_to_config(emotion_input=emotion_input, vae_input_range=vae_input_range,
                                lambda_emb=lambda_emb, cond_dropout=cond_dropout,
                                inference_vae_input_range=inference_vae_input_range)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_condition(self, images: torch.Tensor) -> torch.Tensor:
        """Condition latents (posterior mode) of [0, 1] source images: compute once per job, reuse per iteration."""
        self._check_images(images, "images")
        return encode_condition(self.vae, images.to(self._execution_device), self.config.inference_vae_input_range)

    # ------------------------------------------------------------------ checks
    def _check_images(self, images, name: str, batch_size: Optional[int] = None):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise PipelineInputError(f"{name} must be a (B, 3, H, W) tensor in [0, 1], got {got}")
        if batch_size is not None and images.shape[0] != batch_size:
            raise PipelineInputError(f"{name} has {images.shape[0]} rows for a batch of {batch_size}")
        f = self.vae_scale_factor
        if images.shape[-2] % f or images.shape[-1] % f:
            raise PipelineInputError(f"{name}: height and width must be multiples of {f}, got "
                                     f"{tuple(images.shape[-2:])}; resize the images (e.g. to 224x224)")
        lo, hi = images.min().item(), images.max().item()
        if lo < -1e-3 or hi > 1 + 1e-3 or not np.isfinite(lo + hi):
            raise PipelineInputError(f"{name} must hold values in [0, 1], got range [{lo:.3g}, {hi:.3g}]")

    @staticmethod
    def _row_generators(generator: Generators, batch_size: int) -> Optional[list]:
        if generator is None or isinstance(generator, torch.Generator):
            return None
        generator = list(generator)
        if len(generator) != batch_size:
            raise PipelineInputError(f"got {len(generator)} generators for a batch of {batch_size}; "
                                     f"pass one per image (or a single generator)")
        return generator

    def _draw_start_timesteps(self, generator: Generators, batch_size: int, noise_range, per_batch_t: bool):
        lo, hi = int(noise_range[0]), int(noise_range[1])
        if not 0 <= lo <= hi < self.scheduler.config.num_train_timesteps:
            raise PipelineInputError(f"noise_range {noise_range} must satisfy 0 <= low <= high < "
                                     f"{self.scheduler.config.num_train_timesteps}")
        rows = self._row_generators(generator, batch_size)

        def draw(g, n):  # inclusive range, as the official torch.randint(low, high + 1)
            device = g.device if g is not None else "cpu"
            return torch.randint(lo, hi + 1, (n,), generator=g, device=device).cpu()

        if per_batch_t:  # official: one T for the whole batch, from the first generator
            return draw(rows[0] if rows else generator, 1).expand(batch_size).clone()
        if rows is None:
            return draw(generator, batch_size)
        return torch.cat([draw(g, 1) for g in rows])

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        emotion_inputs: torch.Tensor,
        condition_images: Optional[torch.Tensor] = None,
        condition_latents: Optional[torch.Tensor] = None,
        generator: Generators = None,
        num_inference_steps: int = NUM_INFERENCE_STEPS,
        start_timesteps: Optional[Union[torch.Tensor, Sequence[int]]] = None,
        noise: Optional[torch.Tensor] = None,
        noise_range: tuple = NOISE_START_RANGE,
        per_batch_t: bool = False,
        guidance_scale: float = 1.0,
        emotion_guidance: float = 1.0,
        output_type: str = "pt",
        image_latents: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ):
        """Edit `images` toward the emotions encoded from `emotion_inputs` (one official ip2p edit).

        Randomness: each row draws from its own generator (a list of B), in the fixed order T,
        posterior sample, initial noise; the draws happen even when `start_timesteps`/`noise` are
        given, so a replay with a fresh generator of the same seed is exact and overriding T
        alone keeps the same noise. A single generator (or None: torch's global RNG, as the
        official code) serves the whole batch. The VAE is fed as ``config.inference_vae_input_range``
        says (2x-1 unless a model was saved otherwise: official inference, even for weights trained
        on [0, 1]). `guidance_scale` > 1 applies classifier-free guidance against ``emotion_encoder.null``.

        `emotion_guidance` s scales the emotional change: eps = eps(tau(0)) + s (eps(tau(d)) - eps(tau(0))),
        where tau(0), the encoding of a zero input ("no emotional change" for the direction input), is the
        unconditional branch, so models trained without cond dropout can be guided too. s = 1 skips the
        extra branch: exactly the plain edit. With both, the emotion-guided prediction is then CFG's
        conditional one. All branches go through the UNet in one batched call per step.
        """
        # 1. Check inputs
        self._check_images(images, "images")
        batch_size = images.shape[0]
        device = self._execution_device
        if (not isinstance(emotion_inputs, torch.Tensor) or emotion_inputs.ndim != 2
                or emotion_inputs.shape != (batch_size, self.emotion_encoder.config.num_emotions)):
            got = (tuple(emotion_inputs.shape) if isinstance(emotion_inputs, torch.Tensor)
                   else type(emotion_inputs).__name__)
            raise PipelineInputError(f"emotion_inputs must be ({batch_size}, "
                                     f"{self.emotion_encoder.config.num_emotions}), got {got}")
        if output_type not in ("pt", "pil", "np"):
            raise PipelineInputError(f"output_type must be 'pt', 'pil' or 'np', got {output_type!r}")
        if not (np.isfinite(guidance_scale) and np.isfinite(emotion_guidance)):
            raise PipelineInputError(f"guidance_scale ({guidance_scale}) and emotion_guidance ({emotion_guidance}) "
                                     f"must be finite numbers")
        if guidance_scale > 1 and self.config.cond_dropout <= 0:
            warnings.warn("guidance_scale > 1 but this model was not trained with cond dropout "
                          "(cond_dropout=0): its unconditional branch was never trained",
                          stacklevel=3)  # the caller, past torch.no_grad's wrapper
        rows = self._row_generators(generator, batch_size)
        gen = rows if rows is not None else generator

        # 2. Draw (or take) the start timestep of every row and its timestep schedule
        drawn_t = self._draw_start_timesteps(generator, batch_size, noise_range, per_batch_t)
        if start_timesteps is not None:
            start_timesteps = torch.as_tensor(start_timesteps, dtype=torch.long).flatten().cpu()
            if start_timesteps.shape != (batch_size,):
                raise PipelineInputError(f"start_timesteps must hold {batch_size} values, "
                                         f"got {tuple(start_timesteps.shape)}")
        else:
            start_timesteps = drawn_t
        if (start_timesteps < 0).any() or (start_timesteps >= self.scheduler.config.num_train_timesteps).any():
            raise PipelineInputError(f"start_timesteps must lie in [0, {self.scheduler.config.num_train_timesteps}), "
                                     f"got {start_timesteps.tolist()}")
        offset = self.scheduler.config.steps_offset
        schedule = torch.stack([official_timesteps(t, num_inference_steps, offset) for t in start_timesteps.tolist()])
        step_ratio = start_timesteps // num_inference_steps  # what the official scheduler steps back by

        # 3. Encode: emotion embedding, condition latents (mode), image latents (posterior sample)
        vae_range = self.config.inference_vae_input_range
        embeds = self.emotion_encoder(emotion_inputs.to(device)).to(self.unet.dtype)
        if condition_latents is None:
            condition_images = images if condition_images is None else condition_images
            self._check_images(condition_images, "condition_images", batch_size)
            condition_latents = encode_condition(self.vae, condition_images.to(device), vae_range)
        condition_latents = condition_latents.to(device=device, dtype=self.unet.dtype)
        sampled = encode_latents(self.vae, images.to(device), gen, vae_range).float()
        latents = sampled if image_latents is None else image_latents.to(device=device, dtype=torch.float32)
        if condition_latents.shape[0] != batch_size or condition_latents.shape[-2:] != latents.shape[-2:] \
                or latents.shape != sampled.shape:
            raise PipelineInputError(f"condition/image latents {tuple(condition_latents.shape)} / "
                                     f"{tuple(latents.shape)} do not match the images {tuple(images.shape)}")

        # 4. Prepare latents: noise once at each row's first timestep
        # Drawn in the VAE's dtype like the official randn_like(latents), so the same generator
        # gives the official noise in a half-precision run too; the denoising loop runs in float32.
        drawn_noise = randn_tensor(latents.shape, generator=gen, device=device, dtype=self.vae.dtype)
        if noise is None:
            noise = drawn_noise
        elif noise.shape != latents.shape:
            raise PipelineInputError(f"noise must have shape {tuple(latents.shape)}, got {tuple(noise.shape)}")
        noise = noise.to(device=device, dtype=torch.float32)
        latents = self.scheduler.add_noise(latents, noise, schedule[:, 0].to(device))

        # 5. Denoise: DDIM, eta = 0, each row on its own schedule; the guidance branches are extra rows
        do_emotion_guidance, do_cfg = emotion_guidance != 1, guidance_scale > 1
        branches = [embeds]
        if do_emotion_guidance:
            zero = torch.zeros_like(emotion_inputs, device=device)
            branches.append(self.emotion_encoder(zero).to(self.unet.dtype))
        if do_cfg:
            branches.append(self.emotion_encoder.null(batch_size).to(device, self.unet.dtype))
        n_branches = len(branches)
        embeds = torch.cat(branches)
        condition_latents = torch.cat([condition_latents] * n_branches)
        alphas_cumprod = self.scheduler.alphas_cumprod
        final_alpha = self.scheduler.final_alpha_cumprod
        prediction_type = self.scheduler.config.prediction_type
        for k in self.progress_bar(range(num_inference_steps)):
            t = schedule[:, k].to(device)
            model_in = torch.cat([latents] * n_branches).to(self.unet.dtype)
            model_in = torch.cat([model_in, condition_latents], dim=1)
            preds = self.unet(model_in, torch.cat([t] * n_branches),
                              encoder_hidden_states=embeds).sample.float().chunk(n_branches)
            noise_pred = preds[0]
            if do_emotion_guidance:
                noise_pred = preds[1] + emotion_guidance * (noise_pred - preds[1])
            if do_cfg:
                noise_pred = preds[-1] + guidance_scale * (noise_pred - preds[-1])
            latents = ddim_step(noise_pred, t, t - step_ratio.to(device), latents, alphas_cumprod,
                                final_alpha, prediction_type)

        # 6. Decode
        edited = decode_latents(self.vae, latents)
        self.maybe_free_model_hooks()
        if output_type == "pil":
            edited = self.numpy_to_pil(edited.cpu().permute(0, 2, 3, 1).numpy())
        elif output_type == "np":
            edited = edited.cpu().permute(0, 2, 3, 1).numpy()
        out = EmoEditorOutput(images=edited, start_timesteps=start_timesteps, noise=noise.cpu(),
                              image_latents=sampled.cpu() if image_latents is None else image_latents.cpu())
        return out if return_dict else out.to_tuple()
