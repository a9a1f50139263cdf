"""The tiny presets load through the same paths as real weights and behave deterministically."""

import json

import pytest
import torch

from emoeditor.errors import MissingWeightsError
from emoeditor.models.components import load_base_components
from emoeditor.models.predictor import build_resnet18, load_predictor
from emoeditor.models.tiny import (
    TINY_IMAGE_SIZE,
    tiny_emotion_encoder,
    tiny_predictor,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)


def test_base_folder_layout_and_loading(tiny_base_dir):
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_base_dir / sub).is_dir()
    index = json.loads((tiny_base_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInstructPix2PixPipeline"
    parts = load_base_components(tiny_base_dir)
    assert parts["unet"].config.in_channels == 8
    sched = parts["scheduler"].config
    assert (sched.beta_start, sched.beta_end, sched.steps_offset, sched.clip_sample, sched.set_alpha_to_one) == \
        (0.00085, 0.012, 1, False, False)
    tok = parts["tokenizer"]
    ids = tok(["make it happier"], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    assert ids[0, 0] == tok.bos_token_id and len(set(ids[0, 1:5].tolist())) == 4  # 'm','a','k','e</w>'
    emb = parts["text_encoder"](ids).last_hidden_state
    assert emb.shape == (1, 77, 32) and torch.isfinite(emb).all()


def test_same_seed_same_weights(tmp_path):
    a, b = tiny_unet(3).state_dict(), tiny_unet(3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(tiny_unet(4).state_dict()["conv_in.weight"], a["conv_in.weight"])


def test_missing_base_folder_is_clear(tmp_path):
    with pytest.raises(MissingWeightsError, match="unet"):
        load_base_components(tmp_path)
    # A mistyped relative path reads like a hub id (offline in tests): both readings are named, the folder first.
    with pytest.raises(MissingWeightsError, match=r"^base model folder no_such_dir/base does not exist, nor does "
                                                  r"its folder no_such_dir/ .*, and loading it as a hub id failed"):
        load_base_components("no_such_dir/base")


def test_predictor_roundtrip_and_official_pt(tiny_predictor_dir):
    pred = load_predictor(tiny_predictor_dir)
    assert pred.image_size == TINY_IMAGE_SIZE and not pred.normalize
    probs = pred.probs(torch.rand(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert probs.shape == (2, 8) and torch.allclose(probs.sum(-1), torch.ones(2))
    # the official-layout .pt loads into a plain torchvision resnet18 with weights_only=True
    state = torch.load(tiny_predictor_dir / "emo_predictor.pt", weights_only=True)
    net = build_resnet18()
    net.load_state_dict(state)
    x = torch.rand(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert torch.allclose(torch.softmax(net.eval()(x), -1), pred.probs(x), atol=1e-6)


def test_missing_predictor_says_where_to_get_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="emo_predictor"):
        load_predictor(tmp_path / "nope.pt")


def test_building_components_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_unet(0), tiny_vae(0), tiny_text_encoder(0), tiny_emotion_encoder(0), tiny_predictor(0)
    assert torch.equal(torch.rand(3), expected)
