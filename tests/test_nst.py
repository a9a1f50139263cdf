"""NST (Gatys et al.): losses that fall, the content term's pull, per-row determinism and clear errors (tiny VGG19)."""

import json

import numpy as np
import pytest
import torch

from emoeditor.constants import EMOTIONS
from emoeditor.data.reference_pool import toy_reference_pool
from emoeditor.data.toy import load_toy_photo, random_crop
from emoeditor.editors.discovery import parse_method
from emoeditor.editors.nst import CONTENT_LAYER, STYLE_LAYERS, gram
from emoeditor.editors.registry import MethodContext
from emoeditor.errors import MethodError
from emoeditor.imageio import save_image
from emoeditor.models.vgg import tiny_vgg19


def sources(n, size=64):
    rng = np.random.default_rng(3)
    photos = ["astronaut", "chelsea", "rocket"]
    crops = [random_crop(load_toy_photo(photos[i % 3]), size, rng) for i in range(n)]
    return torch.stack([torch.from_numpy(c).permute(2, 0, 1) for c in crops]).float()


def onehot(*names):
    return torch.stack([torch.eye(8)[EMOTIONS.index(n)] for n in names])


def build(options):
    return parse_method(f"nst:weights=tiny,{options}").build(MethodContext())


def losses(image, source, reference):
    """Content and style losses recomputed here, from the tiny VGG's features (einsum Grams)."""
    vgg = tiny_vgg19(seed=0)
    layers = (CONTENT_LAYER, *STYLE_LAYERS)
    out, src, ref = (vgg(x[None], layers) for x in (image, source, reference))

    def g(f):
        return torch.einsum("bchw,bdhw->bcd", f, f) / f[0].numel()
    content = torch.mean((out[CONTENT_LAYER] - src[CONTENT_LAYER]) ** 2)
    return float(content), float(sum(torch.mean((g(out[k]) - g(ref[k])) ** 2) for k in STYLE_LAYERS))


def test_gram_is_normalised_by_the_feature_size():
    f = torch.randn(2, 4, 5, 3)
    expected = torch.stack([x.reshape(4, -1) @ x.reshape(4, -1).T for x in f]) / 60
    torch.testing.assert_close(gram(f), expected)


def test_style_loss_falls_and_content_stays_bounded():
    image, target = sources(1), onehot("fear")
    result = build("steps=15")(image, target, torch.Generator().manual_seed(0))
    trace = result.traces[0]
    out = result.images[0]
    assert 0 <= out.min() and out.max() <= 1 and (out - image[0]).abs().mean() > 0.02
    reference = toy_reference_pool().draw("fear", torch.Generator().manual_seed(0), 64)[0]
    assert trace["reference"] == toy_reference_pool().draw("fear", torch.Generator().manual_seed(0))[1]
    content0, style0 = losses(image[0], image[0], reference)
    content, style = losses(out, image[0], reference)
    assert content0 == 0 and trace["content_loss"]["start"] == 0
    assert trace["style_loss"]["start"] == pytest.approx(style0, rel=1e-4)
    assert trace["style_loss"]["end"] == pytest.approx(style, rel=1e-3)
    assert trace["content_loss"]["end"] == pytest.approx(content, rel=1e-3)
    assert style < style0 / 50
    assert trace["content_weight"] * content < trace["style_weight"] * style0 / 10  # bounded by what it traded for
    assert trace["optimizer"] == "lbfgs" and 15 <= trace["evaluations"] <= 19  # <= 1.25 evaluations per iteration


def test_content_weight_pulls_toward_the_source_and_adam_works():
    image, target, seed = sources(1), onehot("fear"), 0
    free = build("steps=15,content_weight=0")(image, target, torch.Generator().manual_seed(seed)).traces[0]
    held = build("steps=15,content_weight=1e12")(image, target, torch.Generator().manual_seed(seed)).traces[0]
    assert held["content_loss"]["end"] < free["content_loss"]["end"] / 10
    assert held["style_loss"]["end"] < held["style_loss"]["start"] / 5
    adam = build("steps=20,optimizer=adam,lr=0.02")(image, target, torch.Generator().manual_seed(seed)).traces[0]
    assert adam["optimizer"] == "adam" and adam["evaluations"] == 20
    assert adam["style_loss"]["end"] < adam["style_loss"]["start"] / 10


def test_deterministic_per_row_with_mixed_targets():
    spec = parse_method("nst:weights=tiny,steps=4")
    assert spec.paper_row == "NST"
    editor = spec.build(MethodContext())
    images, targets, seeds = sources(3), onehot("sadness", "awe", "anger"), [5, 6, 7]
    batch = editor(images, targets, [torch.Generator().manual_seed(s) for s in seeds])
    assert batch.images.shape == images.shape
    for i, seed in enumerate(seeds):
        alone = editor(images[i:i + 1], targets[i:i + 1], torch.Generator().manual_seed(seed))
        assert torch.equal(alone.images[0], batch.images[i])
        assert alone.traces[0] == batch.traces[i]
    assert [t["emotion"] for t in batch.traces] == ["sadness", "awe", "anger"]
    assert all(t["reference"].startswith(f"toy/{t['emotion']}_") for t in batch.traces)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(MethodError, match=r"nst needs reference images.*nst:pool=PATH"):
        parse_method("nst").build(MethodContext())
    with pytest.raises(MethodError, match=r"reference pool of nst \(option pool=\) .*no_pool does not exist"):
        parse_method(f"nst:weights=tiny,pool={tmp_path / 'no_pool'}").build(MethodContext())
    with pytest.raises(MethodError, match=r"nst option vgg=: the VGG19 weights .*vgg19.pth does not exist"):
        parse_method(f"nst:weights=tiny,vgg={tmp_path / 'vgg19.pth'}").build(MethodContext())
    torch.save(tiny_vgg19(0).features.state_dict(), tmp_path / "tiny.pth")  # loads, but is no VGG19
    with pytest.raises(MethodError, match=r"nst option vgg=: .*tiny.pth is not a VGG19 state dict"):
        parse_method(f"nst:weights=tiny,vgg={tmp_path / 'tiny.pth'}").build(MethodContext())
    for bad, what in [("steps=0", "steps"), ("optimizer=sgd", "optimizer"), ("style_weight=-1", "style_weight"),
                      ("lr=0", "lr"), ("content_layer=conv4_2", "unknown option")]:
        with pytest.raises(MethodError, match=what):
            parse_method(f"nst:{bad}")
    save_image(sources(1)[0], tmp_path / "refs" / "a.png")
    (tmp_path / "refs" / "pool.json").write_text(json.dumps({"fear": ["a.png"]}))
    editor = build(f"steps=2,pool={tmp_path / 'refs' / 'pool.json'}")
    assert editor(sources(1), onehot("fear"), torch.Generator()).traces[0]["reference"] == str(tmp_path / "refs/a.png")
    with pytest.raises(MethodError, match=r"pool.json has no images of disgust"):
        editor(sources(1), onehot("disgust"), torch.Generator())
