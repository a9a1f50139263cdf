"""The "Ip2p" baseline (stock InstructPix2Pix, target word as instruction) and Ip2p in the critic loop."""

import pytest
import torch

from emoeditor.constants import EMOTIONS
from emoeditor.editors.discovery import parse_method
from emoeditor.editors.ip2p import Ip2pEditor, tiny_ip2p_pipeline
from emoeditor.editors.registry import MethodContext
from emoeditor.errors import MethodError

STEPS = 2


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _images(n=2, h=64, w=64, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _onehot(*names):
    return torch.eye(8)[[EMOTIONS.index(n) for n in names]]


@pytest.fixture(scope="module")
def editor():
    return parse_method(f"ip2p:weights=tiny,num_inference_steps={STEPS},batch_size=2").build(MethodContext())


def test_default_spec_builds():
    editor = parse_method("ip2p:weights=tiny").build(MethodContext())
    assert isinstance(editor, Ip2pEditor) and editor.name == "ip2p"
    # the stock pipeline's defaults, at the tiny components' 64px
    assert (editor.num_inference_steps, editor.guidance_scale, editor.image_guidance_scale, editor.size) == \
        (100, 7.5, 1.5, 64)


def test_instruction_is_the_target_word_with_stock_pipeline(editor):
    """The edit equals a direct call of the stock pipeline with prompt = the target's word."""
    x, targets = _images(2), _onehot("excitement", "fear")
    out = editor(x, targets, _gens(1, 2))
    pipe = tiny_ip2p_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    for i, word in enumerate(["excitement", "fear"]):
        ref = pipe(prompt=[word, word], image=torch.cat([x[i:i + 1]] * 2), num_inference_steps=STEPS,
                   generator=_gens(i + 1, 0), output_type="pt").images[0]
        assert torch.equal(out.images[i], ref.clamp(0, 1))
        trace = out.traces[i]
        assert trace["instruction"] == word and trace["target_emotion"] == word
        settings = (trace["num_inference_steps"], trace["guidance_scale"], trace["image_guidance_scale"])
        assert settings == (STEPS, 7.5, 1.5)
        assert trace["model"] == "tiny-ip2p-seed0"
    assert (out.images - x).abs().mean() > 0.01  # it edited


def test_resized_to_size_and_back(editor):
    x = _images(1, 80, 72)
    out = editor(x, _onehot("awe"), _gens(3))
    assert out.images.shape == x.shape and out.images.min() >= 0 and out.images.max() <= 1
    small = editor(torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True),
                   _onehot("awe"), _gens(3)).images
    back = torch.nn.functional.interpolate(small, size=(80, 72), mode="bilinear", antialias=True).clamp(0, 1)
    assert torch.allclose(out.images, back, atol=1e-5)


def test_row_is_deterministic_alone_or_in_a_mixed_batch(editor):
    x = _images(3, seed=5)
    mixture = torch.tensor([[0.0, 0.6, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0]])
    targets = torch.cat([_onehot("amusement", "sadness"), mixture])
    batch = editor(x, targets, _gens(7, 8, 9))
    for i in range(3):
        alone = editor(x[i:i + 1], targets[i:i + 1], _gens(7 + i))
        assert torch.equal(alone.images[0], batch.images[i])
    assert batch.traces[2]["instruction"] == "anger"  # a mixture's argmax word, with the full target recorded
    assert batch.traces[2]["target"] == pytest.approx(mixture[0].tolist())
    assert not torch.equal(batch.images[0], editor(x[:1], targets[:1], _gens(70)).images[0])  # the seed matters


def test_loads_a_diffusers_folder(tiny_base_dir):
    """A local folder in the diffusers layout gives the same model as the in-memory tiny one."""
    spec = f"ip2p:model={tiny_base_dir},num_inference_steps={STEPS},size=64,batch_size=1"
    from_folder = parse_method(spec).build(MethodContext())
    tiny = parse_method(f"ip2p:weights=tiny,num_inference_steps={STEPS},batch_size=1").build(MethodContext())
    x = _images(1, seed=2)
    a = from_folder(x, _onehot("disgust"), _gens(4))
    assert torch.equal(a.images, tiny(x, _onehot("disgust"), _gens(4)).images)
    assert a.traces[0]["model"] == str(tiny_base_dir)


def test_missing_model_folder_is_named(tmp_path):
    missing = tmp_path / "no_such_ip2p"
    with pytest.raises(MethodError, match="no_such_ip2p") as err:
        parse_method(f"ip2p:model={missing}").build(MethodContext())
    assert "model=" in str(err.value)


def test_bad_options_fail_at_parse_time():
    with pytest.raises(MethodError, match="size"):
        parse_method("ip2p:size=60")
    with pytest.raises(MethodError, match="weights"):
        parse_method("ip2p:weights=huge")


def test_ip2p_in_the_critic_loop(tiny_predictor_dir):
    """ip2p+critic re-edits each output with the same instruction until the critic stops it."""
    spec = (f"ip2p+critic:weights=tiny,num_inference_steps={STEPS},num_loop=2,batch_size=2,confidence=0.99,"
            f"predictor={tiny_predictor_dir}")
    loop = parse_method(spec).build(MethodContext())
    x, targets = _images(2, seed=3), _onehot("contentment", "anger")
    out = loop(x, targets, _gens(11, 12))
    # independently: edit the source, then that edit, drawing from the same generator
    editor = parse_method(f"ip2p:weights=tiny,num_inference_steps={STEPS},batch_size=2").build(MethodContext())
    for i, word in enumerate(["contentment", "anger"]):
        gen = _gens(11 + i)
        first = editor(x[i:i + 1], targets[i:i + 1], gen).images
        second = editor(first, targets[i:i + 1], gen).images
        assert torch.equal(out.candidates[i][0], first[0]) and torch.equal(out.candidates[i][1], second[0])
        trace = out.traces[i]
        assert len(trace["iterations"]) == 2 and trace["iterations"][1]["input_index"] == 0
        assert torch.equal(out.images[i], out.candidates[i][trace["returned"]])
        assert trace["edit"]["instruction"] == word and trace["edit"]["method"] == "ip2p"
