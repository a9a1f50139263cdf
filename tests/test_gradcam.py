"""Grad-CAM of P: the library call matches Grad-CAM done by hand, and its hooks never pile up."""

import cv2
import numpy as np
import pytest
import torch

from emoeditor.models.predictor import load_predictor
from emoeditor.scoring.gradcam import emotion_cam, emotion_region, target_layer


@pytest.fixture(scope="module")
def predictor(tiny_predictor_dir):
    return load_predictor(tiny_predictor_dir)  # frozen, as every caller gets it


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _manual_gradcam(predictor, images, classes):
    """Selvaraju et al.: ReLU(sum_k mean(dy_c/dA_k) A_k) on layer4[-1], min-max scaled, bilinear up."""
    net = predictor.net
    store = {}
    handle = net.layer4[-1].register_forward_hook(lambda m, i, o: store.update(act=o))
    with torch.enable_grad():
        x = images.clone().requires_grad_(True)
        logits = predictor(x)
        act = store["act"]
        grads = torch.autograd.grad(logits[torch.arange(len(classes)), classes].sum(), act)[0]
    handle.remove()
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * act).sum(1)).detach().numpy()
    out = []
    for c in cam:
        c = c - c.min()
        c = c / (1e-7 + c.max())
        out.append(cv2.resize(np.float32(c), images.shape[-2:][::-1]))
    return torch.from_numpy(np.stack(out))


def test_cam_matches_hand_computation(predictor, images):
    with torch.no_grad():
        top = predictor(images).argmax(-1)
    cams = emotion_cam(predictor, images)  # official: explain the predicted class
    assert cams.shape == (3, 64, 64) and cams.dtype == torch.float32
    assert cams.min() >= 0 and cams.amax((1, 2)).sub(1).abs().max() < 1e-5
    assert torch.allclose(cams, _manual_gradcam(predictor, images, top), atol=1e-5)

    other = (top + 3) % 8
    cams_other = emotion_cam(predictor, images, target_classes=other)
    assert torch.allclose(cams_other, _manual_gradcam(predictor, images, other), atol=1e-5)
    assert not torch.allclose(cams_other, cams)


def test_cam_batched_equals_one_by_one_and_under_no_grad(predictor, images):
    with torch.no_grad():  # callers in eval loops often hold no_grad
        batched = emotion_cam(predictor, images)
    single = torch.cat([emotion_cam(predictor, images[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(emotion_cam(predictor, images.clone()), batched, atol=1e-6)
    assert torch.equal(emotion_region(batched), batched > 0.5)
    assert not any(p.requires_grad for p in predictor.parameters())  # still frozen
    assert not predictor.training


def _hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


def test_hooks_released_over_100_calls(predictor, images):
    before = _hook_count(predictor)
    for _ in range(100):
        emotion_cam(predictor, images[:1])
    assert _hook_count(predictor) == before
    assert len(target_layer(predictor)._forward_hooks) == 0


def test_cam_rejects_bad_shapes(predictor, images):
    with pytest.raises(ValueError, match="B, 3, H, W"):
        emotion_cam(predictor, images[0])
    with pytest.raises(ValueError, match="target classes"):
        emotion_cam(predictor, images, target_classes=[0])
