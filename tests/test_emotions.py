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


@pytest.mark.parametrize("bad, message", [
    ("awe:3e38,fear:3e38", "beyond what float32 holds"),  # summed to inf in float32: an all-zero target
    ("awe:1e300,fear:1e300", "beyond what float32 holds"),
    ([3e38, 3e38, 0, 0, 0, 0, 0, 0], "beyond what float32 holds"),
    ("awe:1,fear:1e-50", "fear is too small"),  # would silently become a one-hot awe
    ("awe:1,awe:-0.5", "names awe twice"),
    ("awe,awe", "names awe twice"),
    ("awe:0.5,2:0.5", "names awe twice"),  # a name and its index
])
def test_overflowing_vanishing_and_repeated_targets_are_errors(bad, message):
    with pytest.raises(InvalidTargetError, match=message):
        parse_target(bad)


def test_mixtures_are_normalised_in_float64():
    # float32 would round these subnormal weights to 1.4e-45 and 2.8e-45 (1/3 and 2/3)
    assert torch.equal(parse_target("awe:1e-45,fear:3e-45"), torch.tensor([0, 0, 0.25, 0, 0, 0, 0.75, 0]))
    vec = parse_target("awe:0.1,excitement:0.2,fear:0.7")
    assert vec.dtype == torch.float32 and abs(float(vec.double().sum()) - 1) < 1e-7
