"""CT (Pitié et al.'s colour transfer): a NumPy reading of the algorithm, the distribution match, kept edges,
per-row determinism and clear errors."""

import json

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from scipy.stats import rankdata
from skimage.color import rgb2gray
from skimage.feature import canny

from emoeditor.constants import EMOTIONS
from emoeditor.data.toy import emotion_edit, load_toy_photo, random_crop
from emoeditor.data.toy_emoset import write_toy_emoset
from emoeditor.editors.color_transfer import REGRAIN_ITERATIONS, pdf_transfer, random_rotations, regrain
from emoeditor.editors.discovery import parse_method
from emoeditor.editors.registry import MethodContext
from emoeditor.errors import MethodError


def numpy_idt(source, reference, rotations):
    """Pitié's iterative transfer read plainly: rotate, match each marginal by ranks and quantiles, rotate back."""
    x = source.copy()
    for r in rotations:
        xr, yr = x @ r, reference @ r
        matched = np.stack([np.quantile(yr[:, k], (rankdata(xr[:, k]) - 1) / (len(xr) - 1)) for k in range(3)], 1)
        x = matched @ r.T
    return x


def numpy_regrain(src, col, sweeps=REGRAIN_ITERATIONS, level=0, out=None):
    """Pitié 2007's regrain (H, W, 3) as in the authors' MATLAB code, with OpenCV's bilinear resize."""
    out = src.copy() if out is None else out
    h, w = src.shape[:2]
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    if len(sweeps) > 1 and h2 > 20 and w2 > 20:
        def resize(a, size):
            return cv2.resize(a, size, interpolation=cv2.INTER_LINEAR)
        coarse = numpy_regrain(resize(src, (w2, h2)), resize(col, (w2, h2)), sweeps[1:], level + 1,
                               resize(out, (w2, h2)))
        out = resize(coarse, (w, h))
    shifts = [lambda a: np.concatenate([a[:, 1:], a[:, -1:]], 1), lambda a: np.concatenate([a[1:], a[-1:]], 0),
              lambda a: np.concatenate([a[:, :1], a[:, :-1]], 1), lambda a: np.concatenate([a[:1], a[:-1]], 0)]
    grad = np.sqrt(((shifts[0](src) - shifts[2](src)) ** 2 + (shifts[1](src) - shifts[3](src)) ** 2).sum(2))[..., None]
    psi = np.minimum(256 * grad / 5, 1)
    phi = 30 * 2.0 ** -level / (1 + 10 * grad)
    weights = [(s(phi) + phi) / 2 for s in shifts]
    den = psi + sum(weights)
    for _ in range(sweeps[0]):
        num = psi * col + sum(wt * (s(out) - s(src) + src) for wt, s in zip(weights, shifts))
        out = num / den * 0.8 + 0.2 * out
    return out


def sliced_wasserstein(a, b, projections=64, seed=0):
    dirs = np.random.default_rng(seed).normal(size=(projections, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return np.mean([np.mean((np.sort(a @ d) - np.sort(b @ d)) ** 2) for d in dirs]) ** 0.5


def edges(image):
    """Canny edges of the grey image, thresholds as gradient quantiles (so a contrast change keeps them)."""
    return canny(rgb2gray(image), sigma=1.5, low_threshold=0.8, high_threshold=0.9, use_quantiles=True)


def edge_agreement(a, b):
    """Fraction of a's edge pixels with an edge of b within one pixel, both ways (the smaller)."""
    ea, eb = edges(a), edges(b)
    return min((ea & binary_dilation(eb)).sum() / ea.sum(), (eb & binary_dilation(ea)).sum() / eb.sum())


def photo_pair(size, seed=0):
    rng = np.random.default_rng(seed)
    source = random_crop(load_toy_photo("astronaut"), size, rng)
    reference = emotion_edit(random_crop(load_toy_photo("coffee"), size, rng), "fear", 1.2)
    return source, reference


def to_tensor(hwc):
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)[None]


def test_rotations_are_seeded_rotations():
    r = random_rotations(8, torch.Generator().manual_seed(0))
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(3, dtype=r.dtype).expand(8, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(8, dtype=r.dtype))
    assert torch.equal(r, random_rotations(8, torch.Generator().manual_seed(0)))
    assert not torch.equal(r, random_rotations(8, torch.Generator().manual_seed(1)))


def test_transfer_and_regrain_match_a_numpy_reading():
    pairs = [photo_pair(64, seed) for seed in (0, 1)]
    rotations = torch.stack([random_rotations(6, torch.Generator().manual_seed(s)) for s in (0, 1)])
    src = torch.stack([torch.from_numpy(s.reshape(-1, 3)) for s, _ in pairs])
    ref = torch.stack([torch.from_numpy(r[::2].reshape(-1, 3)) for _, r in pairs])  # other pixel count
    out = pdf_transfer(src, ref, rotations)
    for i, (s, r) in enumerate(pairs):
        expected = numpy_idt(s.reshape(-1, 3), r[::2].reshape(-1, 3), rotations[i].numpy())
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-10)
    colours = out.transpose(1, 2).reshape(2, 3, 64, 64)
    sources = torch.cat([to_tensor(s) for s, _ in pairs])
    grained = regrain(sources, colours)
    for i, (s, _) in enumerate(pairs):
        expected = numpy_regrain(s, colours[i].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(grained[i].permute(1, 2, 0).numpy(), expected, atol=1e-10)


def test_output_takes_the_reference_colours_and_keeps_the_source_edges():
    source, reference = photo_pair(128)
    rotations = random_rotations(20, torch.Generator().manual_seed(0))[None]
    colours = pdf_transfer(torch.from_numpy(source.reshape(1, -1, 3)), torch.from_numpy(reference.reshape(1, -1, 3)),
                           rotations).reshape(128, 128, 3).clamp(0, 1)
    grained = regrain(to_tensor(source), colours.permute(2, 0, 1)[None])[0].permute(1, 2, 0).clamp(0, 1)
    ref = reference.reshape(-1, 3)

    def gaps(image):
        pixels = image.reshape(-1, 3)
        return (np.abs(pixels.mean(0) - ref.mean(0)).max(), np.abs(pixels.std(0) - ref.std(0)).max(),
                sliced_wasserstein(pixels, ref))

    before = np.array(gaps(source))
    assert before.min() > 0.15  # a real colour change to make
    assert np.all(np.array(gaps(colours.numpy())) < before / 50)
    mean_gap, std_gap, swd = gaps(grained.numpy())  # regrain trades some of the match for the source's gradients
    assert mean_gap < before[0] / 10 and std_gap < before[1] / 3 and swd < before[2] / 4
    unrelated = edge_agreement(source, random_crop(load_toy_photo("astronaut"), 128, np.random.default_rng(9)))
    assert unrelated < 0.3
    assert edge_agreement(source, colours.numpy()) > 0.6
    assert edge_agreement(source, grained.numpy()) > max(0.85, edge_agreement(source, colours.numpy()))


def onehot(*names):
    return torch.stack([torch.eye(8)[EMOTIONS.index(n)] for n in names])


def sources(n, size=64):
    rng = np.random.default_rng(3)
    photos = ["astronaut", "chelsea", "rocket"]
    return torch.stack([to_tensor(random_crop(load_toy_photo(photos[i % 3]), size, rng))[0] for i in range(n)]).float()


@pytest.mark.parametrize("regrain_opt", ["true", "false"])
def test_editor_is_deterministic_per_row_with_mixed_targets(regrain_opt):
    spec = parse_method(f"ct:weights=tiny,iterations=5,regrain={regrain_opt}")
    assert spec.paper_row == "CT"
    editor = spec.build(MethodContext())
    images, targets = sources(3), onehot("fear", "amusement", "sadness")
    seeds = [11, 12, 13]
    batch = editor(images, targets, [torch.Generator().manual_seed(s) for s in seeds])
    assert batch.images.shape == images.shape and batch.images.dtype == images.dtype
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    for i, seed in enumerate(seeds):
        alone = editor(images[i:i + 1], targets[i:i + 1], torch.Generator().manual_seed(seed))
        assert torch.equal(alone.images[0], batch.images[i])
        assert alone.traces[0] == batch.traces[i]
    for trace, name in zip(batch.traces, ["fear", "amusement", "sadness"]):
        assert trace["emotion"] == name and trace["reference"].startswith(f"toy/{name}_")
        assert trace["transfer_iterations"] == 5 and trace["regrain"] == (regrain_opt == "true")
    assert (batch.images - images).abs().mean() > 0.02  # it recoloured
    other = editor(images[:1], targets[:1], torch.Generator().manual_seed(99))
    assert not torch.equal(other.images[0], batch.images[0])  # another generator: other rotations (or reference)


def test_mixture_target_uses_its_largest_weight():
    editor = parse_method("ct:weights=tiny,iterations=2").build(MethodContext())
    target = torch.tensor([[0.2, 0.0, 0.5, 0.0, 0.0, 0.0, 0.3, 0.0]])
    out = editor(sources(1), target, torch.Generator().manual_seed(0))
    assert out.traces[0]["emotion"] == "awe" and out.traces[0]["target"] == pytest.approx(target[0].tolist())


def test_emoset_pool_draws_from_the_chosen_split(tmp_path):
    root = write_toy_emoset(tmp_path / "emoset", "release", per_class=(2, 0, 1), image_size=64, seed=0)
    test_list = {str(root / p) for _, p, _ in json.loads((root / "test.json").read_text())}
    images, targets = sources(2), onehot("anger", "awe")
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    train = parse_method(f"ct:pool={root},iterations=3").build(MethodContext())(images, targets, gens)
    assert not {t["reference"] for t in train.traces} & test_list
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    editor = parse_method(f"ct:pool={root},split=test,iterations=3,size=48").build(MethodContext())
    test = editor(images, targets, gens)
    assert {t["reference"] for t in test.traces} <= test_list
    assert all(t["pool"] == f"{root} (test split)" for t in test.traces)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(MethodError, match=r"ct needs reference images.*ct:pool=PATH"):
        parse_method("ct").build(MethodContext())
    with pytest.raises(MethodError, match=r"reference pool of ct \(option pool=\) .*missing_pool does not exist"):
        parse_method(f"ct:pool={tmp_path / 'missing_pool'}").build(MethodContext())
    for bad, what in [("iterations=0", "iterations"), ("regrain=maybe", "regrain"), ("size=8", "size"),
                      ("split=dev", "split"), ("weights=big", "weights"), ("rotations=3", "unknown option")]:
        with pytest.raises(MethodError, match=what):
            parse_method(f"ct:{bad}")
    photo = tmp_path / "fear.png"
    crop = random_crop(load_toy_photo("coffee"), 64, np.random.default_rng(0))
    cv2.imwrite(str(photo), (crop * 255).astype("uint8"))
    (tmp_path / "pool.json").write_text(json.dumps({"fear": ["fear.png"]}))
    editor = parse_method(f"ct:pool={tmp_path / 'pool.json'}").build(MethodContext())
    assert editor(sources(1), onehot("fear"), torch.Generator().manual_seed(0)).traces[0]["reference"] == str(photo)
    with pytest.raises(MethodError, match=r"pool.json has no images of awe"):
        editor(sources(1), onehot("awe"), torch.Generator().manual_seed(0))
