"""scripts/bench_train.py runs at tiny size on CPU and reports every mode."""

import json
import math

from repo_scripts import load_script


def test_bench_tiny_cpu(tmp_path):
    bench = load_script("scripts/bench_train.py")
    out = tmp_path / "bench.json"
    bench.main(["--tiny", "--device", "cpu", "--batch_size", "2", "--steps", "1", "--warmup", "1",
                "--modes", "official_fp16", "default", "fastest", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["tiny"] and report["batch_size"] == 2
    assert set(report["modes"]) == {"official_fp16", "default", "fastest"}
    for name, res in report["modes"].items():
        assert "error" not in res, (name, res)
        assert res["samples_per_s"] > 0 and res["losses_finite"] and res["trainable_params"] > 0
        assert 0 <= res["changed_weight_fraction"] <= 1
    modes = report["modes"]
    assert modes["official_fp16"]["settings"]["eps"] == 1e-3 and modes["default"]["settings"]["eps"] == 1e-8
    # Same seed and data: the cached-latent mode starts from the same loss as the per-step-encode mode.
    assert math.isclose(modes["fastest"]["loss_first"], modes["default"]["loss_first"], rel_tol=2e-2)
    assert modes["default"]["changed_weight_fraction"] > 0.5  # fp32 master weights take every update
    # The official pipe.enable_attention_slicing() is in the official-style timing; ours use SDPA.
    assert modes["official_fp16"]["attention_processor"] == "SlicedAttnProcessor"
    assert modes["default"]["attention_processor"] == modes["fastest"]["attention_processor"] == "AttnProcessor2_0"


def test_a_failing_mode_is_recorded_and_the_json_written_after_each_mode(tmp_path, monkeypatch):
    import pytest

    bench = load_script("scripts/bench_train.py")
    real, calls = bench.build_components, []

    def flaky(tiny, device, seed=0):
        calls.append(1)
        if len(calls) == 2:  # the second mode fails while building (e.g. out of memory on a small card)
            raise ValueError("no room")
        if len(calls) == 3:  # the third kills the whole run
            raise KeyboardInterrupt
        return real(tiny, device, seed)

    monkeypatch.setattr(bench, "build_components", flaky)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--tiny", "--device", "cpu", "--batch_size", "2", "--steps", "1", "--warmup", "0",
                    "--modes", "default", "official_fp16", "fastest", "--out", str(out)])
    modes = json.loads(out.read_text())["modes"]
    assert list(modes) == ["default", "official_fp16"] and modes["default"]["samples_per_s"] > 0
    assert modes["official_fp16"]["error"] == "ValueError: no room"


def test_full_size_configs_match_sd15_ip2p_parameter_counts():
    """The benchmark's random-weight models have the public SD1.5-Ip2p sizes (built on the meta device)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from emoeditor.constants import CLIP_VIT_L14_TEXT_CONFIG, SD15_IP2P_UNET_CONFIG, SD15_VAE_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_IP2P_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
        text = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L14_TEXT_CONFIG))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # SD1.5 UNet 859,520,964 + 4 extra input channels of conv_in (4 * 320 * 3 * 3 = 11,520)
    assert count(unet) == 859_520_964 + 11_520
    assert count(vae) == 83_653_863 and count(text) == 123_060_480
