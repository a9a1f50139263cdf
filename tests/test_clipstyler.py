"""CLIPstyler (Table 1 "Csty") on tiny random CLIP/VGG: losses, patch rejection, per-row determinism, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from emoeditor.constants import EMOTIONS
from emoeditor.editors.clipstyler import (
    IMAGENET_TEMPLATES,
    CLIPStylerEditor,
    StyleNet,
    directional_loss,
    init_stylenet,
    random_patches,
    release_postprocess,
    thresholded_mean,
    tiny_clip,
)
from emoeditor.editors.discovery import parse_method
from emoeditor.editors.registry import MethodContext
from emoeditor.errors import MethodError
from emoeditor.models.tiny import save_tiny_tokenizer
from emoeditor.models.vgg import tiny_vgg19

FAST = dict(size=64, crop_size=32, num_crops=4)


@pytest.fixture(scope="module")
def components():
    clip, tokenizer = tiny_clip()
    return clip, tokenizer, tiny_vgg19()


def make_editor(components, **kwargs) -> CLIPStylerEditor:
    clip, tokenizer, vgg = components
    return CLIPStylerEditor(clip, tokenizer, vgg, **{**FAST, **kwargs})


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def onehot(*indices: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(indices), 8).float()


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_spec_builds_tiny_editor_with_smoke_schedule():
    spec = parse_method("clipstyler:weights=tiny,steps=3")
    editor = spec.build(MethodContext())
    assert spec.paper_row == "Csty"
    assert editor.settings["steps"] == 3 and editor.settings["size"] == 64 and editor.settings["num_crops"] == 4
    assert editor.settings["lambda_patch"] == 9000 and editor.settings["thresh"] == 0.7  # release defaults kept
    out = editor(images(1), onehot(6), gens(0))
    assert out.images.shape == (1, 3, 64, 64) and out.traces[0]["text"] == "fear"


def test_total_loss_falls(components):
    """Each step draws new random patches, so one row's total is noisy (it rose on one seed at 30 steps):
    the mean over three rows falls, and every row's global directional loss falls."""
    editor = make_editor(components, steps=15, postprocess="none")
    traces = editor(images(3), onehot(7, 7, 7), gens(3, 4, 5)).traces
    first = sum(t["losses_first"]["total"] for t in traces)
    last = sum(t["losses_last"]["total"] for t in traces)
    assert last < 0.95 * first
    for trace in traces:
        assert trace["losses_last"]["dir"] < 0.7 * trace["losses_first"]["dir"]
        for losses in (trace["losses_first"], trace["losses_last"]):  # the release's weighted sum of its terms
            expected = (9000 * losses["patch"] + 150 * losses["content"] + 2e-3 * losses["tv"]
                        + 500 * losses["dir"])
            assert losses["total"] == pytest.approx(expected, rel=1e-5)
    assert traces[0]["steps"] == 15 and traces[0]["source_text"] == "a Photo" and traces[0]["text"] == "sadness"


def test_patch_rejection_zeroes_exactly_the_patches_below_thresh():
    losses = torch.tensor([0.2, 0.69, 0.7, 0.9, 1.5, 0.0], requires_grad=True)
    mean = thresholded_mean(losses, 0.7)
    assert mean.item() == pytest.approx((0.7 + 0.9 + 1.5) / 6)
    mean.backward()
    assert losses.grad.tolist() == pytest.approx([0, 0, 1 / 6, 1 / 6, 1 / 6, 0])


def _unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def test_directional_loss_matches_hand_computation():
    image = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    source = torch.tensor([[2.0, 0.0, 1.0]])
    text_direction = torch.tensor([_unit([1.0, 1.0, -1.0])])
    got = directional_loss(image, source, text_direction)
    s, t = _unit(source[0].tolist()), text_direction[0].tolist()
    for row, value in zip(image.tolist(), got.tolist()):
        d = _unit([a - b for a, b in zip(_unit(row), s)])
        assert value == pytest.approx(1 - sum(a * b for a, b in zip(d, t)), abs=1e-6)


def test_text_direction_is_the_normalised_difference_of_template_means(components):
    clip, tokenizer, _ = components
    editor = make_editor(components)

    def mean_embedding(word):
        rows = []
        for template in IMAGENET_TEMPLATES:  # one at a time: no padding involved
            out = clip.get_text_features(**tokenizer(template.format(word), return_tensors="pt"))
            rows.append(out if isinstance(out, torch.Tensor) else out.pooler_output)
        return F.normalize(torch.cat(rows).mean(0), dim=0)

    with torch.no_grad():
        expected = F.normalize(mean_embedding("awe") - mean_embedding("a Photo"), dim=0)
    assert torch.allclose(editor.text_direction("awe")[0], expected, atol=1e-5)


def test_patches_are_crops_of_the_image_and_follow_the_generator():
    image = images(1, seed=4)
    a = random_patches(image, torch.Generator().manual_seed(1), 32, 6, 32, distortion=0.0)
    assert a.shape == (6, 3, 32, 32)
    crops = image.unfold(2, 32, 1).unfold(3, 32, 1)  # every 32 px crop: (1, 3, 33, 33, 32, 32)
    for patch in a:  # no distortion: each patch is one crop of the image, unwarped
        err = (crops[0] - patch[:, None, None]).abs().amax(dim=(0, 3, 4))
        assert err.min() < 1e-5
    b = random_patches(image, torch.Generator().manual_seed(1), 32, 6, 32, distortion=0.0)
    c = random_patches(image, torch.Generator().manual_seed(2), 32, 6, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    warped = random_patches(image, torch.Generator().manual_seed(5), 32, 8, 48)
    assert warped.shape == (8, 3, 48, 48) and (warped == 0).any()  # perspective leaves fill-0 corners


def test_stylenet_weights_come_from_the_generator():
    nets = [init_stylenet(StyleNet(), g) for g in gens(7, 7, 8)]
    params = [torch.cat([p.flatten() for p in n.parameters()]) for n in nets]
    assert torch.equal(params[0], params[1]) and not torch.equal(params[0], params[2])
    out = nets[0](images(1))
    assert out.shape == (1, 3, 64, 64) and 0 <= out.min() and out.max() <= 1


def test_row_alone_equals_row_in_a_mixed_batch(components):
    editor = make_editor(components, steps=3)
    batch = images(2, seed=5)
    mixture = torch.tensor([[0, 0, 0, 0, 0, 0, 0.6, 0.4]])
    targets = torch.cat([mixture, onehot(0)])
    alone = editor(batch[:1], mixture, gens(11))
    together = editor(batch, targets, gens(11, 12))
    assert torch.equal(alone.images[0], together.images[0])
    assert together.traces[0]["text"] == EMOTIONS[6] and together.traces[1]["text"] == EMOTIONS[0]
    assert together.traces[0]["target"] == pytest.approx(mixture[0].tolist())
    assert alone.traces[0]["losses_last"] == together.traces[0]["losses_last"]
    # same image and seed, another target: only the text differs, and the output follows it
    other = editor(batch[:1], onehot(0), gens(11))
    assert not torch.equal(other.images[0], alone.images[0])


def test_release_postprocess_is_contrast_then_min_max():
    x = torch.tensor([0.1, 0.4, 0.8, 0.3, 0.5, 0.6, 0.2, 0.9, 0.7, 0.35, 0.45, 0.55]).view(1, 3, 2, 2)
    gray_mean = (0.2989 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]).mean()
    contrasted = (1.5 * x - 0.5 * gray_mean).clamp(0, 1)
    expected = (contrasted - contrasted.min()) / (contrasted.max() - contrasted.min())
    assert torch.allclose(release_postprocess(x), expected, atol=1e-4)


def test_missing_clip_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MethodError, match=r"option clip.*does not exist.*clip=<folder>"):
        parse_method(f"clipstyler:clip={tmp_path / 'no_clip'}").build(MethodContext())


def test_missing_vgg_file_is_a_clear_error(tmp_path):
    clip, _ = tiny_clip()
    clip.save_pretrained(tmp_path / "clip")
    save_tiny_tokenizer(tmp_path / "clip")
    with pytest.raises(MethodError, match=r"option vgg.*vgg19\.pth.*does not exist"):
        parse_method(f"clipstyler:clip={tmp_path / 'clip'},vgg={tmp_path / 'vgg19.pth'}").build(MethodContext())


@pytest.mark.parametrize("spec, words", [
    ("clipstyler:size=60", "size"), ("clipstyler:thresh=3", "thresh"), ("clipstyler:steps=0", "steps"),
    ("clipstyler:weights=big", "weights"), ("clipstyler:lamda_c=1", "lambda_c"),
])
def test_bad_options_fail_at_parse_time(spec, words):
    with pytest.raises(MethodError, match=words):
        parse_method(spec)


def test_tiny_refuses_real_weight_paths():
    with pytest.raises(MethodError, match="weights=tiny"):
        parse_method("clipstyler:weights=tiny,clip=x/y").build(MethodContext())
