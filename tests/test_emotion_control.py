"""Continuous emotion control: emotion guidance, direction scale, intensity presets, valence-arousal targets."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emoeditor.cli import edit as test_cli
from emoeditor.constants import EMOTIONS, VA_NORMS
from emoeditor.editing.intensity import INTENSITIES, apply_intensity, intensity_settings
from emoeditor.editing.pipeline import EmoEditorPipeline, ddim_step
from emoeditor.editors.emoeditor import EmoEditorEditor
from emoeditor.emotions import parse_target
from emoeditor.errors import EmoEditorError, InvalidTargetError
from emoeditor.models.latents import decode_latents
from emoeditor.valence_arousal import mixture_to_va, parse_va, va_path, va_to_mixture

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def editor(assets):
    return EmoEditorEditor.from_pretrained(assets / "model", assets / "predictor", num_inference_steps=2)


def _images(n=2, size=64):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))


def _gens(n=2):
    return [torch.Generator().manual_seed(10 + i) for i in range(n)]


def _unet_batches(pipe):
    """Record the batch size of every UNet call."""
    sizes = []
    handle = pipe.unet.register_forward_hook(lambda mod, args, kwargs, out: sizes.append(args[0].shape[0]),
                                             with_kwargs=True)
    return sizes, handle


# ------------------------------------------------------------------------------ emotion guidance
def test_guidance_one_is_the_plain_edit_with_no_extra_branch(editor):
    images, targets = _images(), torch.stack([parse_target("fear"), parse_target("awe:1,excitement:1")])
    plain = editor(images, targets, _gens()).images
    sizes, handle = _unet_batches(editor.pipe)
    try:
        guided = EmoEditorEditor(editor.pipe, editor.predictor, num_inference_steps=2, emotion_guidance=1.0,
                                 direction_scale=1.0)(images, targets, _gens()).images
        assert sizes == [2, 2]  # one UNet call of B rows per step: no tau(0) branch
        sizes.clear()
        strong = EmoEditorEditor(editor.pipe, editor.predictor, num_inference_steps=2,
                                 emotion_guidance=2.0)(images, targets, _gens()).images
        assert sizes == [4, 4]  # the tau(0) branch rides in the same call: 2B rows per step
    finally:
        handle.remove()
    assert torch.equal(plain, guided)
    assert (strong - plain).abs().max() > 1e-5  # random weights: the condition moves the output only a little


def test_guidance_formula_equals_a_hand_computed_step():
    """One DDIM step: eps = eps(tau(0)) + s (eps(tau(d)) - eps(tau(0))), computed here from the UNet directly.

    On the shipped miniature, whose edits depend on their condition (a random-weight UNet hardly does)."""
    editor = EmoEditorEditor.from_pretrained(REPO / "mini_world" / "model", REPO / "mini_world" / "emo_predictor")
    pipe: EmoEditorPipeline = editor.pipe
    images = _images(1)
    d = parse_target("sadness")[None] - editor.predictor.probs(images)
    g = torch.Generator().manual_seed(3)
    side = 64 // pipe.vae_scale_factor
    latents0 = torch.randn(1, 4, side, side, generator=g)
    noise = torch.randn(1, 4, side, side, generator=g)
    start, s = 700, 4.0

    def edit(scale):
        return pipe(images, d, generator=torch.Generator().manual_seed(0), num_inference_steps=1,
                    start_timesteps=[start], noise=noise, image_latents=latents0, emotion_guidance=scale).images

    out = edit(s)
    with torch.no_grad():
        t = torch.tensor([1])  # one step from T: the official schedule's only timestep, k * (T // 1) + 1
        noisy = pipe.scheduler.add_noise(latents0, noise, t)
        model_in = torch.cat([noisy, pipe.encode_condition(images)], dim=1)
        codes = pipe.emotion_encoder(torch.cat([d, torch.zeros_like(d)]))  # tau(d), tau(0) in one UNet batch
        eps_d, eps_0 = pipe.unet(model_in.repeat(2, 1, 1, 1), t.repeat(2), encoder_hidden_states=codes).sample
        eps = eps_0 + s * (eps_d - eps_0)
        latents = ddim_step(eps[None], t, t - start, noisy, pipe.scheduler.alphas_cumprod,
                            pipe.scheduler.final_alpha_cumprod, pipe.scheduler.config.prediction_type)
        expected = decode_latents(pipe.vae, latents)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert (out - edit(1.0)).abs().max() > 1e-3  # 100x the tolerance above: a wrong formula would fail it


def test_guidance_zero_ignores_the_target(editor):
    """s = 0 leaves eps(tau(0)) alone: the same seed gives the same edit whatever the target."""
    image = _images(1).expand(3, -1, -1, -1)
    targets = torch.stack([parse_target("fear"), parse_target("awe"), parse_target("anger:1,sadness:1")])
    gens = [torch.Generator().manual_seed(7) for _ in range(3)]
    out = EmoEditorEditor(editor.pipe, editor.predictor, num_inference_steps=2, emotion_guidance=0.0)(
        image, targets, gens).images
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_direction_scale_scales_the_encoder_input(editor):
    images, targets = _images(), torch.stack([parse_target("anger"), parse_target("contentment")])
    seen = []
    handle = editor.pipe.emotion_encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    try:
        EmoEditorEditor(editor.pipe, editor.predictor, num_inference_steps=1, direction_scale=0.4)(
            images, targets, _gens())
    finally:
        handle.remove()
    direction = targets - editor.predictor.probs(images)
    torch.testing.assert_close(seen[0], 0.4 * direction)


def test_nonfinite_guidance_is_refused(editor):
    with pytest.raises(Exception, match="finite"):
        editor.pipe(_images(1), torch.zeros(1, 8), num_inference_steps=1, emotion_guidance=float("nan"))


# ------------------------------------------------------------------------------ intensity
def test_intensity_presets_and_explicit_values_win():
    assert intensity_settings("medium") == {"emotion_guidance": 1.0, "ssim_low": 0.3, "ssim_high": 0.8,
                                            "confidence": 0.8}
    low, high = INTENSITIES["low"], INTENSITIES["high"]
    assert low["emotion_guidance"] < 1 < high["emotion_guidance"] and low["confidence"] < high["confidence"]
    assert high["ssim_high"] < low["ssim_high"]  # high asks for a bigger change before it stops
    assert apply_intensity("high", {"confidence": 0.7, "ssim_low": None}) == {**high, "confidence": 0.7}
    assert apply_intensity(None, {"confidence": None, "emotion_guidance": 2.0}) == {"emotion_guidance": 2.0}
    with pytest.raises(EmoEditorError, match="low, medium, high"):
        intensity_settings("extreme")


# ------------------------------------------------------------------------------ valence-arousal
@pytest.mark.parametrize("emotion", EMOTIONS)
def test_each_norm_point_maps_to_its_own_category_and_back(emotion):
    mixture = va_to_mixture(*VA_NORMS[emotion])
    assert abs(float(mixture.sum()) - 1) < 1e-6 and (mixture >= 0).all()
    assert EMOTIONS[int(mixture.argmax())] == emotion and mixture.max() > 0.5
    assert mixture_to_va(parse_target(emotion)) == pytest.approx(VA_NORMS[emotion], abs=1e-4)


def test_va_mixture_kernel_by_hand_and_far_points():
    v, a = 5.0, 4.5
    norms = np.array([VA_NORMS[e] for e in EMOTIONS])
    w = np.exp(-((norms - [v, a]) ** 2).sum(1) / (2 * 1.5 ** 2))
    w /= w.sum()
    w[w < 0.05] = 0
    np.testing.assert_allclose(va_to_mixture(v, a, bandwidth=1.5).numpy(), w / w.sum(), atol=1e-6)
    corner = va_to_mixture(9, 9)  # far from every norm: the nearest category, no underflow
    assert EMOTIONS[int(corner.argmax())] == "excitement" and torch.isfinite(corner).all()
    # the expectation of a mixture is the weighted mean of the norms
    mix = parse_target("awe:0.25,fear:0.75")
    assert mixture_to_va(mix) == pytest.approx((0.25 * 6.85 + 0.75 * 2.93, 0.25 * 3.83 + 0.75 * 6.14), abs=1e-4)


@pytest.mark.parametrize("spec", ["7", "a,b", "7,6,5", "nan,3", "0.5,5", "5,10"])
def test_bad_va_targets_are_named(spec):
    with pytest.raises(InvalidTargetError, match="valence-arousal target"):
        parse_va(spec)


# ------------------------------------------------------------------------------ test.py
def _argv(assets, out, *extra):
    return ["--config", str(REPO / "configs" / "infer_tiny.yaml"), "--model_dir", str(assets / "model"),
            "--predictor_path", str(assets / "predictor"), "--input_path", str(assets / "imgs" / "coffee.png"),
            "--test_save_dir", str(out), "--num_inference_steps", "2", "--num_loop", "2", "--quiet", *extra]


def _traces(out):
    return [json.loads(p.read_text()) for p in sorted((out / "traces").glob("*.json"))]


def test_flags_compose_with_all_and_mixtures(assets, tmp_path):
    test_cli.main(_argv(assets, tmp_path / "all", "--target_emo", "all", "--intensity", "high",
                        "--emotion_guidance", "1.3", "--direction_scale", "0.5"))
    traces = _traces(tmp_path / "all")
    assert len(traces) == 7
    for trace in traces:
        high = INTENSITIES["high"]
        assert trace["thresholds"]["confidence"] == high["confidence"]  # from the preset
        assert trace["thresholds"]["ssim_low"] == high["ssim_low"]
        assert trace["edit"]["emotion_guidance"] == 1.3 and trace["edit"]["direction_scale"] == 0.5  # explicit
        assert trace["intensity"] == "high"
        assert trace["source_va"] == pytest.approx(mixture_to_va(trace["source_probs"]), abs=1e-4)
        for it in trace["iterations"]:
            assert it["va"] == pytest.approx(mixture_to_va(it["probs"]), abs=1e-4)

    test_cli.main(_argv(assets, tmp_path / "mix", "--target_emo", "awe:0.5,fear:0.5", "--intensity", "low"))
    (trace,) = _traces(tmp_path / "mix")
    assert trace["target"] == pytest.approx([0, 0, 0.5, 0, 0, 0, 0.5, 0])
    assert trace["thresholds"]["ssim_high"] == INTENSITIES["low"]["ssim_high"]
    assert trace["edit"]["emotion_guidance"] == INTENSITIES["low"]["emotion_guidance"]


def test_target_va_runs_as_its_mixture_with_a_path_plot(assets, tmp_path):
    out = tmp_path / "va"
    test_cli.main(_argv(assets, out, "--target_va", "7.5,6", "--save_strip", "--emotion_guidance", "1.5"))
    (trace,) = _traces(out)
    assert trace["target_va"] == [7.5, 6.0]
    assert trace["target"] == pytest.approx(va_to_mixture(7.5, 6).tolist())
    assert len(va_path(trace)) == len(trace["iterations"]) + 1
    strip = np.asarray(Image.open(next((out / "strips").glob("*.png"))))
    assert strip.shape[0] > 64 + 400 and (strip[-400:] < 128).any()  # the path plot under the tiles
    # the same edit from its mixture written out by hand gives the same image
    mixture = ",".join(f"{e}:{w!r}" for e, w in zip(EMOTIONS, va_to_mixture(7.5, 6).tolist()) if w > 0)
    test_cli.main(_argv(assets, tmp_path / "mix", "--target_emo", mixture, "--emotion_guidance", "1.5"))
    (a,), (b,) = (list(d.glob("*.png")) for d in (out, tmp_path / "mix"))
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.parametrize("extra, message", [
    (["--target_emo", "awe", "--target_va", "7,6"], "not allowed with argument"),
    (["--target_va", "12,3"], "outside the norms"),
    (["--emotion_guidance", "inf"], "--emotion_guidance inf"),
    (["--intensity", "extreme"], "invalid choice"),
])
def test_bad_control_flags_exit_2(assets, tmp_path, capsys, extra, message):
    from emoeditor.config import run_cli

    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: test_cli.main(_argv(assets, tmp_path / "x", *extra)))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_method_spec_intensity_sets_the_loop(assets):
    from emoeditor.editors.registry import MethodContext, parse_method

    context = MethodContext(model=str(assets / "model"), predictor=str(assets / "predictor"))
    loop = parse_method("ours:intensity=low,confidence=0.7,num_inference_steps=1").build(context)
    assert loop.critic.confidence == 0.7 and loop.critic.ssim_high == INTENSITIES["low"]["ssim_high"]
    assert loop.editor.emotion_guidance == INTENSITIES["low"]["emotion_guidance"]


def test_guidance_sweep_script(assets, tmp_path):
    from repo_scripts import load_script

    sweep = load_script("scripts/sweep_emotion_guidance.py")
    rows = sweep.main(["--model_dir", str(assets / "model"), "--predictor_path", str(assets / "predictor"),
                       "--images", "coffee", "chelsea", "--scales", "0", "1", "--num_inference_steps", "2",
                       "--out", str(tmp_path)])
    assert [r["emotion_guidance"] for r in rows] == [0, 1] and all(r["edits"] == 16 for r in rows)
    # s = 0: each image's edit is the same for all eight targets, so its top class is the target exactly once
    assert rows[0]["top1_is_target"] == 0.125
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"] == rows
    assert Image.open(tmp_path / "sweep.png").size[0] > 300
