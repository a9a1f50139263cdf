"""Each metric against a hand-derived value; ESMI against an independent run of the official recipe."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import entropy

from emoeditor.models.predictor import EmotionPredictor, build_resnet18, load_predictor
from emoeditor.scoring import metrics


def _probs(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def _pad8(vals):
    return list(vals) + [0.0] * (8 - len(vals))


# ------------------------------------------------------------------------------- emotion metrics

def test_kl_divergence_hand_values_and_scipy():
    p = _probs(_pad8([0.5, 0.25, 0.25]), _pad8([0.5, 0.25, 0.25]), [0.125] * 8)
    t = torch.tensor([0, 1, 3])
    kl = metrics.kl_divergence(t, p)
    assert kl.tolist() == pytest.approx([math.log(2), math.log(4), math.log(8)])
    # Zero probability on the target class is infinitely far, as in scipy.
    assert math.isinf(metrics.kl_divergence(torch.tensor([5]), p[:1]).item())
    # Multi-emotion target (awe 0.5 + excitement 0.5), unnormalised probabilities: scipy's entropy.
    g = torch.Generator().manual_seed(0)
    q = torch.rand(4, 8, generator=g, dtype=torch.float64) + 0.01
    tv = torch.zeros(4, 8, dtype=torch.float64)
    tv[:, 2] = tv[:, 5] = 0.5
    expected = [entropy(tv[i].numpy(), q[i].numpy()) for i in range(4)]
    assert metrics.kl_divergence(tv, q).tolist() == pytest.approx(expected, rel=1e-12)


def test_emr_top_class_in_target_support():
    probs = _probs(_pad8([0.1, 0.7, 0.2]), _pad8([0.6, 0.3, 0.1]), _pad8([0.2, 0.2, 0.6]))
    assert metrics.emr(probs, torch.tensor([1, 1, 2])).tolist() == [True, False, True]
    multi = torch.zeros(3, 8)
    multi[:, 0] = multi[:, 2] = 0.5  # amusement + awe
    assert metrics.emr(probs, multi).tolist() == [False, True, True]


def test_esr_strictly_closer_to_target():
    src = _probs([0.125] * 8, _pad8([0.5, 0.5]), _pad8([0.5, 0.5]))
    out = _probs(_pad8([0.5, 0.5]), [0.125] * 8, _pad8([0.5, 0.5]))
    # KL to class 0: src log 8 / log 2 / log 2, out log 2 / log 8 / log 2 (a tie is not a shift).
    assert metrics.esr(src, out, torch.tensor([0, 0, 0])).tolist() == [True, False, False]


# ------------------------------------------------------------------------------------ image metrics

def test_enrd_on_a_known_mask():
    src = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    out = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    out[1, :, :, :4] = 0  # second output only differs on the right half
    neutral = torch.zeros(2, 8, 8, dtype=torch.bool)
    neutral[:, :4, :] = True  # top half: 32 of 64 pixels
    # image: mean over all 64 pixels of the masked difference; region: over the 32 neutral ones.
    assert metrics.enrd(src, out, neutral).tolist() == pytest.approx([100 * 32 / 64, 100 * 16 / 64])
    assert metrics.enrd(src, out, neutral, reduction="region").tolist() == pytest.approx([100.0, 50.0])
    assert metrics.enrd(src, out, torch.zeros_like(neutral), reduction="region").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="reduction"):
        metrics.enrd(src, out, neutral, reduction="sum")


def _step(col, value=(255, 255, 255), size=16):
    """A vertical step edge; Canny(200, 500) marks exactly column col-1 (all rows)."""
    img = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    img[0, :, :, col:] = torch.tensor(value, dtype=torch.uint8)[:, None, None]
    return img


def test_canny_edge_map_of_a_step():
    edges = metrics.canny_edges(_step(8))[0]
    expected = torch.zeros(16, 16, dtype=torch.uint8)
    expected[:, 7] = 255
    assert torch.equal(edges, expected)


def test_ess_hand_values():
    blank = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    n = 16 * 16
    assert metrics.ess(_step(8), blank).item() == pytest.approx(255 * 16 / n)
    assert metrics.ess(_step(8), _step(4)).item() == pytest.approx(255 * 32 / n)  # two disjoint columns
    # A brightness change that keeps the edge where it was leaves the structure untouched.
    assert metrics.ess(_step(8), _step(8, (230, 230, 230))).item() == 0.0
    # Pure blue step: grey value 29 has no edge, the strongest colour channel does.
    blue = _step(8, (0, 0, 255))
    assert metrics.ess(blue, blank).item() == 0.0
    assert metrics.ess(blue, blank, grayscale=False).item() == pytest.approx(255 * 16 / n)


# A 3x3 Sobel step of height v has L1 gradient 4v, so with the paper's Canny(200, 500) a grey step
# starts to count as an edge between v = 120 (480) and v = 130 (520); Canny(100, 200) would already
# mark a 0 -> 100 step. These pin the thresholds: changing CANNY_THRESHOLDS breaks them.

@pytest.mark.parametrize("grayscale", [True, False])
def test_canny_default_thresholds_ignore_a_mid_contrast_step(grayscale):
    column7 = torch.zeros(16, 16, dtype=torch.uint8)
    column7[:, 7] = 255
    for v in (60, 100, 120):
        mid = _step(8, (v, v, v))
        assert not metrics.canny_edges(mid, grayscale=grayscale).any(), v
        assert torch.equal(metrics.canny_edges(mid, (100, 200), grayscale)[0], column7), v
    assert torch.equal(metrics.canny_edges(_step(8, (130, 130, 130)), grayscale=grayscale)[0], column7)


def test_canny_low_threshold_200_decides_hysteresis():
    """Top half a strong 0 -> 255 step; the bottom half continues it with a weak step of v.

    Gradient 4v above the low threshold 200 (v = 60) is followed from the strong edge; below it
    (v = 45, gradient 180) it is not.
    """
    def mixed(v):
        img = _step(8)
        img[0, :, 8:, 8:] = v
        return img

    assert metrics.canny_edges(mixed(60))[0, 10:, 7].eq(255).all()
    assert not metrics.canny_edges(mixed(45))[0, 10:].any()


@pytest.mark.parametrize("grayscale", [True, False])
def test_ess_default_thresholds_on_a_mid_contrast_source(grayscale):
    blank = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    mid = _step(8, (100, 100, 100))
    assert metrics.ess(mid, blank, grayscale=grayscale).item() == 0.0
    assert metrics.ess(mid, blank, (100, 200), grayscale).item() == pytest.approx(255 * 16 / 256)
    assert metrics.ess(_step(8), blank, grayscale=grayscale).item() == pytest.approx(255 * 16 / 256)


def test_esmi_parts_by_hand():
    kl_src = torch.tensor([math.log(4), math.log(4), 1.0], dtype=torch.float64)
    kl_out = torch.tensor([math.log(2), math.log(8), 1.0], dtype=torch.float64)
    src = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    out = src.clone()
    out[:, :, :2, :] = 40   # change in the top half (8 px of 16) ...
    out[:, :, 2:, :2] = 40  # ... and in 4 more pixels
    region = torch.zeros(3, 4, 4, dtype=torch.bool)
    region[:, :2, :] = True  # the emotion region is the top half
    parts = metrics.esmi(kl_src, kl_out, src, out, region)
    s_str = (40 * 8 / 16) / (40 * 12 / 16)  # L1 in region (over all pixels) / full L1 = 2/3
    assert parts["s_emo"].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert parts["s_str"].tolist() == pytest.approx([s_str] * 3)
    assert parts["esmi"].tolist() == pytest.approx([0.5 * s_str + 0.25, 0.5 * s_str, 0.5 * s_str])


def test_uint8_round_trip_and_pil_resize():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    assert torch.equal(metrics.images_to_uint8(u8.float() / 255), u8)
    assert metrics.resize_uint8(u8, 16) is u8
    small = metrics.resize_uint8(u8.contiguous(), 8)
    pil = np.array(Image.fromarray(u8[0].permute(1, 2, 0).numpy()).resize((8, 8)))
    assert torch.equal(small[0].permute(1, 2, 0), torch.from_numpy(pil))


# ------------------------------------------------------------------------------------------- ESMI

def _official_esmi(net, src_path, edit_path, tgt_idx):
    """metric_ESMI.py re-done step by step (numpy/scipy/PIL), for an 8-way resnet18 `net`."""
    from pytorch_grad_cam import GradCAM
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])
    eps = 1e-10
    target = np.zeros(8)
    target[tgt_idx] = 1
    src_pil = Image.open(src_path).resize((224, 224)).convert("RGB")
    edit_pil = Image.open(edit_path).resize((224, 224)).convert("RGB")
    src_t, edit_t = tf(src_pil).unsqueeze(0), tf(edit_pil).unsqueeze(0)
    src_sm = torch.softmax(net(src_t)[0], dim=0).detach().numpy()
    edit_sm = torch.softmax(net(edit_t)[0], dim=0).detach().numpy()
    kld_src, kld_edit = entropy(target, src_sm), entropy(target, edit_sm)
    s_emo = max(0, kld_src - kld_edit) / (kld_src + eps)
    with GradCAM(model=net, target_layers=[net.layer4[-1]]) as cam:
        gray = cam(input_tensor=src_t.requires_grad_(True), targets=None)[0, :]
    cam3 = np.repeat((gray > 0.5).astype(np.uint8)[:, :, None], 3, axis=2)
    src_np, edit_np = np.array(src_pil), np.array(edit_pil)

    def cal_l1(a, b):
        return np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64)))

    s_str = cal_l1(src_np * cam3, edit_np * cam3) / (cal_l1(src_np, edit_np) + eps)
    return 0.5 * s_str + 0.5 * s_emo, s_str, s_emo


def test_esmi_equals_official_script(tmp_path):
    from skimage import data

    torch.manual_seed(0)
    net = build_resnet18().eval()
    with torch.no_grad():  # a decisive head so the KLs are far from uniform
        net.fc.weight.mul_(20)
    predictor = EmotionPredictor(net, image_size=224).eval()  # official input: 224, no normalisation

    src_np = data.chelsea()  # 300x451: exercises the resize to 224
    edit_np = src_np.copy()
    edit_np[:150] = (edit_np[:150].astype(np.int32) * [1.3, 0.8, 0.6]).clip(0, 255).astype(np.uint8)
    Image.fromarray(src_np).save(tmp_path / "src.png")
    Image.fromarray(edit_np).save(tmp_path / "edit.png")

    def load01(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255

    for tgt in (0, 4):  # S_emo > 0 for amusement, clamped to 0 for disgust
        expected = _official_esmi(net, tmp_path / "src.png", tmp_path / "edit.png", tgt)
        res = metrics.compute_all(predictor, load01(src_np), load01(edit_np), torch.tensor([tgt]))
        got = (res["esmi"].item(), res["s_str"].item(), res["s_emo"].item())
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert 0 < res["s_str"].item() < 1  # a real mix of emotion and neutral regions


# ------------------------------------------------------------------------------------- compute_all

def test_compute_all_consistent_with_parts(tiny_predictor_dir):
    predictor = load_predictor(tiny_predictor_dir)
    g = torch.Generator().manual_seed(0)
    src = torch.rand(3, 3, 64, 64, generator=g)
    out = (src + 0.3 * torch.rand(3, 3, 64, 64, generator=g)).clamp(0, 1)
    targets = torch.tensor([0, 4, 7])
    res = metrics.compute_all(predictor, src, out, targets, size=None)
    assert res["cams"].shape == (3, 64, 64)
    src_u8, out_u8 = metrics.images_to_uint8(src), metrics.images_to_uint8(out)
    region = res["cams"] > 0.5
    assert torch.allclose(res["enrd"], metrics.enrd(src_u8, out_u8, ~region))
    assert torch.allclose(res["ess"], metrics.ess(src_u8, out_u8))
    assert torch.equal(res["emr"], res["probs_out"].argmax(-1) == targets)
    assert torch.equal(res["esr"], metrics.esr(res["probs_src"], res["probs_out"], targets))
    assert (res["enrd"] > 0).all() and (res["esmi"] >= 0).all() and (res["esmi"] <= 1).all()

    # An unchanged output: nothing moved, no emotion shift, no structural change.
    same = metrics.compute_all(predictor, src, src, targets, size=None)
    assert same["enrd"].tolist() == [0.0] * 3 and same["ess"].tolist() == [0.0] * 3
    assert not same["esr"].any() and same["s_emo"].tolist() == [0.0] * 3
    summary = metrics.summarize(res)
    assert summary["emr"] == pytest.approx(100 * res["emr"].double().mean().item())
    assert summary["enrd"] == pytest.approx(res["enrd"].mean().item())


def test_compute_all_rejects_mismatched_inputs(tiny_predictor_dir):
    predictor = load_predictor(tiny_predictor_dir)
    with pytest.raises(ValueError, match="differ"):
        metrics.compute_all(predictor, torch.rand(1, 3, 64, 64), torch.rand(1, 3, 32, 32), [0], size=None)
    with pytest.raises(ValueError, match="cam_target"):
        metrics.compute_all(predictor, torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), [0], cam_target="x")
