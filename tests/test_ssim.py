"""The batched torch SSIM equals the official cal_ssim (OpenCV grey + scikit-image, win 51)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from emoeditor.editing.critic import paper_accept
from emoeditor.scoring.ssim import batch_ssim, grey_batch, grey_uint8, ssim_reference, ssim_reference_batch, ssim_torch


def photos(size=224):
    out = []
    for im in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket()):
        x = torch.from_numpy(im).permute(2, 0, 1).float()[None] / 255
        out.append(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)


def edits(img, gen):
    """Candidates spanning the SSIM range the critic sees: noise, blur, flips, colour shifts."""
    return torch.cat([(img + s * torch.randn(img.shape, generator=gen)).clamp(0, 1) for s in (0.02, 0.08, 0.15, 0.3)]
                     + [F.avg_pool2d(img, 5, 1, 2), img.flip(-1), 1 - img, (img * 0.6 + 0.3).clamp(0, 1),
                        img.roll(7, -1)])


def test_grey_matches_the_official_quantise_then_opencv_per_image():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((6, 3, 40, 50), dtype=np.float32))
    ours = grey_batch(x)
    assert ours.shape == (6, 1, 40, 50) and ours.dtype == torch.uint8
    # official: img.mul(255).clamp(0, 255).byte() (truncation), HWC, cv2 RGB2GRAY, one image at a time
    ref = np.stack([grey_uint8(i.mul(255).clamp(0, 255).byte().permute(1, 2, 0).numpy()) for i in x])
    assert np.array_equal(ours[:, 0].numpy(), ref)


def test_torch_ssim_agrees_with_skimage_on_photos_and_flips_no_decision():
    gen = torch.Generator().manual_seed(0)
    target = torch.zeros(8)
    target[2] = 1
    probs = torch.zeros(8)
    probs[2] = 0.9
    for img in photos():
        img = img[None]
        cands = edits(img, gen)
        src = img.expand_as(cands)
        ours, ref = ssim_torch(src, cands), ssim_reference_batch(src, cands)
        assert ours.dtype == torch.float64 and ours.shape == (cands.shape[0],)
        assert (ours - ref).abs().max() < 1e-9  # same float64 maths, summation order only
        assert ref.min() < 0.3 and ref.max() > 0.8  # the cases straddle the thresholds
        for a, b in zip(ours.tolist(), ref.tolist()):
            assert paper_accept(a, probs, target) == paper_accept(b, probs, target)


def test_reference_is_the_official_call_on_uint8():
    from skimage.metrics import structural_similarity

    img = photos(96)[:1]
    noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    a = img[0].mul(255).clamp(0, 255).byte().permute(1, 2, 0).numpy()
    b = noisy[0].mul(255).clamp(0, 255).byte().permute(1, 2, 0).numpy()
    expected = structural_similarity(grey_uint8(a), grey_uint8(b), win_size=51)
    assert ssim_reference(a, b) == pytest.approx(expected, abs=0)
    assert batch_ssim(img, noisy, "skimage").item() == pytest.approx(expected, abs=0)
    assert batch_ssim(img, noisy, "torch").item() == pytest.approx(expected, abs=1e-6)
    assert ssim_torch(img, img).item() == pytest.approx(1.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        ssim_torch(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="backend"):
        batch_ssim(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), "nope")
