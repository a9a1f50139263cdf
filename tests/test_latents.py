import torch

from emoeditor.constants import LATENT_SCALE
from emoeditor.models.latents import decode_latents, encode_condition, encode_latents, vae_input
from emoeditor.models.tiny import tiny_vae


def test_conventions_match_direct_vae_calls():
    vae = tiny_vae(0).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        dist = vae.encode(2 * x - 1).latent_dist
        assert torch.allclose(encode_condition(vae, x), dist.mode())
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        expected = dist.sample(generator=g1) * LATENT_SCALE
        assert torch.allclose(encode_latents(vae, x, g2), expected)
        assert torch.allclose(vae_input(x, "zero_one"), x)
        out = decode_latents(vae, expected)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_per_row_generators_are_batch_independent():
    vae = tiny_vae(0).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
        batched = encode_latents(vae, x, gens)
        alone = encode_latents(vae, x[1:2], [torch.Generator().manual_seed(2)])
    assert torch.allclose(batched[1:2], alone, atol=1e-5)
