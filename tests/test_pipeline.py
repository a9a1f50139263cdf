"""One edit: official timestep schedule, batched DDIM, determinism, replay, save/load, CFG."""

import json

import numpy as np
import pytest
import torch

from emoeditor.constants import LATENT_SCALE, SD_V1_DDIM_CONFIG
from emoeditor.editing.pipeline import EmoEditorPipeline, ddim_step, official_timesteps
from emoeditor.errors import EmoEditorError
from emoeditor.imageio import to_uint8
from emoeditor.models.components import load_base_components, sd_v1_ddim_scheduler
from emoeditor.models.emotion_encoder import EmotionEncoder
from emoeditor.models.tiny import TINY_ENCODER_HIDDEN, TINY_IMAGE_SIZE, TINY_TEXT_DIM, tiny_emotion_encoder

STEPS = 4  # few steps keep the tests fast; the schedule maths is tested separately at 30


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def pipe(tiny_base_dir):
    p = EmoEditorPipeline(emotion_encoder=tiny_emotion_encoder(0), **load_base_components(tiny_base_dir, text=False))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(123)
    images = torch.rand(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=g)
    emotions = torch.randn(3, 8, generator=g)
    return images, emotions


@pytest.mark.parametrize("start", [700, 905, 980, 731])
@pytest.mark.parametrize("steps", [30, 7])
def test_official_timesteps_equal_mutated_scheduler(start, steps):
    scheduler = sd_v1_ddim_scheduler()
    scheduler.register_to_config(num_train_timesteps=start)
    scheduler.set_timesteps(steps)
    assert torch.equal(official_timesteps(start, steps), scheduler.timesteps)
    if (start, steps) == (905, 30):
        assert official_timesteps(start, steps)[:3].tolist() == [871, 841, 811]
        assert official_timesteps(start, steps)[-1].item() == 1


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_batched_ddim_step_equals_scheduler_step_row_by_row(prediction_type):
    starts = [700, 905, 980]
    steps = 30
    ref = sd_v1_ddim_scheduler()
    alphas = ref.alphas_cumprod.clone()
    g = torch.Generator().manual_seed(0)
    sample, model_out = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for k in (0, 11, steps - 1):  # first, middle, last (prev alpha = final_alpha_cumprod)
        t = torch.stack([official_timesteps(s, steps)[k] for s in starts])
        prev = t - torch.tensor(starts) // steps
        ours = ddim_step(model_out, t, prev, sample, alphas, ref.final_alpha_cumprod, prediction_type)
        for i, s in enumerate(starts):
            sch = sd_v1_ddim_scheduler()
            sch.register_to_config(num_train_timesteps=s, prediction_type=prediction_type)
            sch.set_timesteps(steps)
            assert torch.equal(sch.alphas_cumprod, alphas)  # alphas stay those of 1000 steps
            expected = sch.step(model_out[i:i + 1], int(t[i]), sample[i:i + 1], eta=0.0).prev_sample
            torch.testing.assert_close(ours[i:i + 1], expected, rtol=1e-6, atol=1e-6)
    assert SD_V1_DDIM_CONFIG["set_alpha_to_one"] is False and ref.final_alpha_cumprod == alphas[0]


def test_same_seed_gives_identical_bytes(pipe, inputs):
    images, emotions = inputs
    a = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS)
    b = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS)
    assert torch.equal(a.images, b.images) and torch.equal(a.noise, b.noise)
    assert a.images.shape == images.shape and a.images.min() >= 0 and a.images.max() <= 1
    assert ((a.start_timesteps >= 700) & (a.start_timesteps <= 980)).all()
    c = pipe(images, emotions, generator=gens(4, 5, 6), num_inference_steps=STEPS)
    assert not torch.equal(a.images, c.images)


def test_batch_rows_are_independent(pipe, inputs):
    images, emotions = inputs
    batched = pipe(images, emotions, generator=gens(10, 11, 12), num_inference_steps=STEPS)
    alone = pipe(images[1:2], emotions[1:2], generator=gens(11), num_inference_steps=STEPS)
    assert torch.equal(batched.start_timesteps[1:2], alone.start_timesteps)
    assert torch.equal(batched.noise[1:2], alone.noise)
    torch.testing.assert_close(batched.images[1:2], alone.images, rtol=0, atol=1e-4)
    diff = np.abs(to_uint8(batched.images[1]).astype(int) - to_uint8(alone.images[0]).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_per_batch_t_draws_one_start(pipe, inputs):
    images, emotions = inputs
    out = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS, per_batch_t=True)
    assert (out.start_timesteps == out.start_timesteps[0]).all()
    first = torch.randint(700, 981, (1,), generator=torch.Generator().manual_seed(1))
    assert out.start_timesteps[0] == first


def test_replay_with_explicit_start_and_noise(pipe, inputs):
    images, emotions = inputs
    original = pipe(images, emotions, generator=gens(7, 8, 9), num_inference_steps=STEPS)
    # A fresh generator with the same seed supplies the same posterior sample.
    replay = pipe(images, emotions, generator=gens(7, 8, 9), num_inference_steps=STEPS,
                  start_timesteps=original.start_timesteps, noise=original.noise)
    assert torch.equal(original.images, replay.images)
    # Replaying from the recorded latent needs no generator at all.
    no_gen = pipe(images, emotions, generator=gens(0, 0, 0), num_inference_steps=STEPS,
                  start_timesteps=original.start_timesteps, noise=original.noise,
                  image_latents=original.image_latents)
    assert torch.equal(original.images, no_gen.images)
    # Other start timesteps change the edit; the recorded T is the one used.
    other = pipe(images, emotions, generator=gens(7, 8, 9), num_inference_steps=STEPS,
                 start_timesteps=[700, 800, 980], noise=original.noise)
    assert other.start_timesteps.tolist() == [700, 800, 980]
    assert not torch.equal(other.images, original.images)


@pytest.mark.parametrize("as_list,later_iteration", [(True, False), (False, False), (True, True)])
def test_edit_matches_an_independent_official_style_computation(pipe, inputs, as_list, later_iteration):
    """Re-derive one edit as official ip2p.py does it (scheduler mutated, draws T, sample, noise).

    A later iteration edits another image (the last output) with the source as condition: the
    noised latent is the input's posterior sample, the condition the source's posterior mode.
    """
    images, emotions = inputs
    generator = gens(3) if as_list else torch.Generator().manual_seed(3)
    source = images[1:2] if later_iteration else images[:1]
    out = pipe(images[:1], emotions[:1], condition_images=source, generator=generator, num_inference_steps=STEPS)
    g = torch.Generator().manual_seed(3)
    start = int(torch.randint(700, 981, (1,), generator=g))
    assert start == out.start_timesteps.item()
    with torch.no_grad():
        latents = pipe.vae.encode(images[:1] * 2 - 1).latent_dist.sample(generator=g) * LATENT_SCALE
        cond = pipe.vae.encode(source * 2 - 1).latent_dist.mode()
        noise = torch.randn(latents.shape, generator=g)
        sch = sd_v1_ddim_scheduler()
        sch.register_to_config(num_train_timesteps=start)
        sch.set_timesteps(STEPS)
        latents = sch.add_noise(latents, noise, sch.timesteps[:1])
        embeds = pipe.emotion_encoder(emotions[:1])
        for t in sch.timesteps:
            eps = pipe.unet(torch.cat([latents, cond], 1), t, encoder_hidden_states=embeds).sample
            latents = sch.step(eps, t, latents).prev_sample
        expected = (pipe.vae.decode(latents / LATENT_SCALE).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(out.images, expected, rtol=0, atol=1e-5)


def test_condition_latents_passed_equal_computed(pipe, inputs):
    images, emotions = inputs
    source = torch.rand(images.shape, generator=torch.Generator().manual_seed(9))
    cond = pipe.encode_condition(source)
    a = pipe(images, emotions, condition_images=source, generator=gens(1, 2, 3), num_inference_steps=STEPS)
    b = pipe(images, emotions, condition_latents=cond, generator=gens(1, 2, 3), num_inference_steps=STEPS)
    c = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS)  # condition = images
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_guidance_scale_one_is_no_cfg_and_above_one_differs(pipe, inputs):
    images, emotions = inputs
    plain = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS)
    one = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS, guidance_scale=1.0)
    assert torch.equal(plain.images, one.images)
    with pytest.warns(UserWarning, match="cond dropout"):
        cfg = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS, guidance_scale=3.0)
    assert cfg.images.shape == plain.images.shape
    assert (cfg.images - plain.images).abs().max() > 1e-3


def test_save_pretrained_round_trip(pipe, inputs, tmp_path):
    images, emotions = inputs
    pipe.register_to_config(cond_dropout=0.1)
    try:
        pipe.save_pretrained(tmp_path / "model")
    finally:
        pipe.register_to_config(cond_dropout=0.0)
    loaded = EmoEditorPipeline.from_pretrained(tmp_path / "model")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.emotion_encoder, EmotionEncoder) and loaded.config.cond_dropout == 0.1
    assert loaded.emotion_encoder.config.hidden_dims == list(TINY_ENCODER_HIDDEN)
    assert loaded.emotion_encoder.config.embed_dim == TINY_TEXT_DIM
    assert (tmp_path / "model" / "emotion_encoder" / "diffusion_pytorch_model.safetensors").exists()
    a = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS)
    b = loaded(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS)
    assert torch.equal(a.images, b.images)


def test_vae_input_conventions_come_from_the_config(pipe, inputs, tmp_path):
    """The edit feeds the VAE as config.inference_vae_input_range says; vae_input_range (training) is a record."""
    images, emotions = inputs
    components = {k: v for k, v in pipe.components.items() if v is not None}
    trained_01 = EmoEditorPipeline(**components, vae_input_range="zero_one")  # official weights' config
    fed_01 = EmoEditorPipeline(**components, vae_input_range="zero_one", inference_vae_input_range="zero_one")
    for p in (trained_01, fed_01):
        p.set_progress_bar_config(disable=True)
    default = pipe(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS).images
    recorded_01 = trained_01(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS).images
    assert torch.equal(recorded_01, default)
    with torch.no_grad():
        assert torch.equal(fed_01.encode_condition(images), pipe.vae.encode(images).latent_dist.mode())
    edited_01 = fed_01(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS).images
    assert not torch.equal(edited_01, default)

    fed_01.save_pretrained(tmp_path / "model")
    loaded = EmoEditorPipeline.from_pretrained(tmp_path / "model")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.inference_vae_input_range == "zero_one"
    assert torch.equal(loaded(images, emotions, generator=gens(1, 2, 3), num_inference_steps=STEPS).images, edited_01)
    # An export from before the key existed was edited with 2x-1, and still is.
    index_path = tmp_path / "model" / "model_index.json"
    index = json.loads(index_path.read_text())
    del index["inference_vae_input_range"]
    index_path.write_text(json.dumps(index))
    assert EmoEditorPipeline.from_pretrained(tmp_path / "model").config.inference_vae_input_range == "minus_one_one"
    with pytest.raises(EmoEditorError, match="inference_vae_input_range.*minus_one_one"):
        EmoEditorPipeline(**components, inference_vae_input_range="0_1")


def test_output_types_and_dtype(pipe, inputs, tiny_base_dir):
    images, emotions = inputs
    pil = pipe(images[:1], emotions[:1], generator=gens(1), num_inference_steps=2, output_type="pil")
    assert len(pil.images) == 1 and pil.images[0].size == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    half = EmoEditorPipeline(emotion_encoder=tiny_emotion_encoder(0),
                             **load_base_components(tiny_base_dir, text=False)).to(dtype=torch.bfloat16)
    assert half.unet.dtype == torch.bfloat16
    half.set_progress_bar_config(disable=True)
    out = half(images[:1], emotions[:1], generator=gens(1), num_inference_steps=2)
    assert out.images.dtype == torch.float32 and torch.isfinite(out.images).all()
    assert pipe.unet.dtype == torch.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=torch.rand(1, 3, 62, 64)), "multiples"),
    (dict(images=torch.rand(1, 3, 64, 64) * 255), r"\[0, 1\]"),
    (dict(emotion_inputs=torch.rand(1, 7)), "emotion_inputs"),
    (dict(generator=gens(1, 2)), "generators"),
    (dict(start_timesteps=[1000]), "start_timesteps"),
])
def test_bad_inputs_name_the_argument(pipe, kwargs, match):
    args = dict(images=torch.rand(1, 3, 64, 64), emotion_inputs=torch.rand(1, 8), generator=gens(1),
                num_inference_steps=2)
    args.update(kwargs)
    with pytest.raises(EmoEditorError, match=match):
        pipe(**args)


def test_condition_latents_of_the_wrong_batch_are_refused(pipe, inputs):
    images, emotions = inputs
    cond = pipe.encode_condition(images[:2])
    with pytest.raises(EmoEditorError, match="condition/image latents"):
        pipe(images, emotions, condition_latents=cond, generator=gens(1, 2, 3), num_inference_steps=2)
