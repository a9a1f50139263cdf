"""VAE encode/decode conventions, shared by training and inference so they cannot drift.

- The image being denoised goes in as a posterior *sample* times the latent scale (0.18215).
- The condition (source) image goes in as the posterior *mode*, unscaled (InstructPix2Pix).
- Images enter the VAE in [-1, 1]; the official training script fed [0, 1] instead
  (``input_range="zero_one"``), kept as an option for exact reproduction.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from emoeditor.constants import LATENT_SCALE, VAE_INPUT_RANGES

Generators = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def vae_input(images: torch.Tensor, input_range: str = "minus_one_one") -> torch.Tensor:
    """[0, 1] images to what the VAE is fed."""
    if input_range == "minus_one_one":
        return images * 2 - 1
    if input_range == "zero_one":
        return images
    raise ValueError(f"unknown VAE input range {input_range!r}; choose one of {VAE_INPUT_RANGES}")


def latent_dist(vae: AutoencoderKL, images: torch.Tensor,
                input_range: str = "minus_one_one") -> DiagonalGaussianDistribution:
    x = vae_input(images, input_range).to(device=vae.device, dtype=vae.dtype)
    return vae.encode(x).latent_dist


def sample_latents(dist: DiagonalGaussianDistribution, generator: Generators = None) -> torch.Tensor:
    """Scaled posterior sample; with a list of generators each row draws from its own."""
    return dist.sample(generator=list(generator) if isinstance(generator, (list, tuple)) else generator) * LATENT_SCALE


def encode_latents(vae: AutoencoderKL, images: torch.Tensor, generator: Generators = None,
                   input_range: str = "minus_one_one") -> torch.Tensor:
    return sample_latents(latent_dist(vae, images, input_range), generator)


def encode_condition(vae: AutoencoderKL, images: torch.Tensor, input_range: str = "minus_one_one") -> torch.Tensor:
    """Posterior mode, unscaled: the InstructPix2Pix image condition."""
    return latent_dist(vae, images, input_range).mode()


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents back to [0, 1] images."""
    images = vae.decode(latents.to(dtype=vae.dtype) / LATENT_SCALE).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)
