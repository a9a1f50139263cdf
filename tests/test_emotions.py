import pytest
import torch

from emoeditor.constants import EMOTIONS
from emoeditor.emotions import (
    emotion_index,
    emotion_input,
    other_emotions,
    parse_target,
    same_valence,
    target_label,
    target_valence,
    valence,
)
from emoeditor.errors import InvalidTargetError


def test_official_order():
    assert EMOTIONS == ("amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness")


@pytest.mark.parametrize("spec,idx", [("awe", 2), ("AWE", 2), (" sadness ", 7), (0, 0), ("5", 5)])
def test_single_targets_are_onehot(spec, idx):
    vec = parse_target(spec)
    assert vec.shape == (8,)
    assert vec[idx] == 1 and vec.sum() == 1


def test_mixture_is_normalised():
    vec = parse_target("awe:0.5,excitement:0.5")
    assert torch.allclose(vec, torch.tensor([0, 0, 0.5, 0, 0, 0.5, 0, 0]))
    assert torch.equal(parse_target("awe:1, excitement:1"), vec)
    assert torch.allclose(parse_target([0, 0, 1, 0, 0, 3, 0, 0]), torch.tensor([0, 0, 0.25, 0, 0, 0.75, 0, 0]))
    assert target_label(vec) == "awe50-excitement50"
    assert target_label(parse_target("fear")) == "fear"


@pytest.mark.parametrize("bad", ["joy", "awe:x", "awe:nan", "awe:-1", "", "awe:0", "12", [1.0, 2.0],
                                 [float("nan")] * 8])
def test_bad_targets_name_the_problem(bad):
    with pytest.raises(InvalidTargetError) as err:
        parse_target(bad)
    if bad == "joy":
        assert "amusement" in str(err.value) and "joy" in str(err.value)


def test_valence_groups():
    assert [valence(e) for e in EMOTIONS] == ["positive", "negative", "positive", "positive",
                                              "negative", "positive", "negative", "negative"]
    assert same_valence("awe", "excitement") and not same_valence("awe", "fear")
    assert target_valence(parse_target("awe:0.5,fear:0.5")) == "mixed"
    assert other_emotions("awe") == [e for e in EMOTIONS if e != "awe"]
    assert emotion_index("disgust") == 4


def test_emotion_input_modes():
    target = parse_target("awe")
    src = torch.full((8,), 1 / 8)
    assert torch.allclose(emotion_input(target, src, "direction"), target - src)
    assert torch.equal(emotion_input(target, src, "onehot"), target)
    with pytest.raises(ValueError):
        emotion_input(target, None, "direction")
