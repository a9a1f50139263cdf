"""The critic's accept rules and policies on scripted (SSIM, P) values."""

import random

import pytest
import torch

from emoeditor.constants import EMOTIONS
from emoeditor.editing.critic import (
    SOURCE_INDEX,
    Critic,
    CriticConfig,
    make_critic,
    official_keep,
    paper_accept,
    same_valence_as_target,
    target_confidence,
    top_is_target,
)
from emoeditor.emotions import onehot, parse_target

AWE = EMOTIONS.index("awe")
FEAR = EMOTIONS.index("fear")


def probs_with(top: int, p: float, second: int | None = None) -> torch.Tensor:
    """A probability vector with mass p on `top`, the rest on `second` (or spread evenly)."""
    v = torch.zeros(8, dtype=torch.float64)
    v[top] = p
    if second is not None:
        v[second] = 1 - p
    else:
        others = [i for i in range(8) if i != top]
        v[others] = (1 - p) / 7
    return v


def run(critic: Critic, outcomes):
    for ssim, probs in outcomes:
        assert not critic.done
        critic.observe(ssim, probs)
        if critic.done:
            break
    return critic


# ---------------------------------------------------------------- pure rules

def test_paper_accept_boundaries():
    t = onehot("awe")
    assert paper_accept(0.5, probs_with(AWE, 0.85), t)
    assert not paper_accept(0.3, probs_with(AWE, 0.85), t)  # strict lower bound
    assert not paper_accept(0.8, probs_with(AWE, 0.85), t)  # strict upper bound
    assert not paper_accept(0.5, probs_with(AWE, 0.8), t)  # confidence must exceed 0.8
    assert not paper_accept(0.5, probs_with(FEAR, 0.9), t)
    assert paper_accept(0.25, probs_with(AWE, 0.85), t, ssim_low=0.2)  # thresholds are arguments


def test_official_keep_is_or():
    t = onehot("awe")
    assert official_keep(0.6, probs_with(FEAR, 0.9), t)  # SSIM in (0.5, 0.8) suffices
    assert official_keep(0.95, probs_with(AWE, 0.3), t)  # top class is the target suffices
    assert not official_keep(0.5, probs_with(FEAR, 0.9), t)
    assert not official_keep(0.8, probs_with(FEAR, 0.9), t)


def test_mixture_confidence_and_top_class():
    mix = parse_target("awe:0.5,excitement:0.5")
    exc = EMOTIONS.index("excitement")
    p = torch.zeros(8)
    p[AWE], p[exc], p[FEAR] = 0.3, 0.55, 0.15
    assert target_confidence(p, mix) == pytest.approx(0.85)  # mass on the support
    assert target_confidence(p, mix, "weighted") == pytest.approx(0.5 * 0.3 + 0.5 * 0.55)
    assert top_is_target(p, mix)
    assert paper_accept(0.5, p, mix)
    assert not paper_accept(0.5, p, mix, confidence_mode="weighted")
    p2 = torch.zeros(8)
    p2[FEAR], p2[AWE], p2[exc] = 0.4, 0.35, 0.25
    assert not top_is_target(p2, mix) and not paper_accept(0.5, p2, mix)
    # one-hot: both modes are P(target)
    q = probs_with(AWE, 0.7)
    assert target_confidence(q, onehot("awe")) == target_confidence(q, onehot("awe"), "weighted") == pytest.approx(0.7)


def test_same_valence():
    assert same_valence_as_target(EMOTIONS.index("amusement"), onehot("awe"))
    assert not same_valence_as_target(FEAR, onehot("awe"))
    assert same_valence_as_target(FEAR, parse_target("awe:0.5,sadness:0.5"))


def test_config_defaults_per_policy_and_validation():
    assert (CriticConfig("paper").ssim_low, CriticConfig("paper").confidence) == (0.3, 0.8)
    assert (CriticConfig("official").ssim_low, CriticConfig("official").confidence) == (0.5, 0.6)
    assert CriticConfig("paper", confidence=0.7).confidence == 0.7
    for bad in (dict(critic="nope"), dict(num_loop=0), dict(confidence_mode="x"), dict(direction_probs="y")):
        with pytest.raises(ValueError):
            CriticConfig(**bad)


# ---------------------------------------------------------------- paper policy

def test_paper_accepts_first_passing_candidate_and_chains_inputs():
    src = probs_with(FEAR, 0.9)
    c = make_critic(CriticConfig("paper"), onehot("awe"), src)
    outcomes = [(0.9, probs_with(AWE, 0.95)),  # SSIM too high
                (0.5, probs_with(AWE, 0.7)),  # confidence too low
                (0.5, probs_with(AWE, 0.9)),  # accept
                (0.5, probs_with(AWE, 0.99))]
    run(c, outcomes)
    assert c.done and c.returned == 2 and len(c.iterations) == 3
    assert [it.input_index for it in c.iterations] == [SOURCE_INDEX, 0, 1]  # output -> next input
    assert [it.accepted for it in c.iterations] == [False, False, True]
    assert torch.allclose(c.direction_probs, src.float())  # P(source) stays the direction
    tr = c.trace()
    assert tr["accepted"] and tr["returned"] == 2 and "accepted" in tr["reason"]


def test_paper_falls_back_to_highest_target_confidence_within_num_loop():
    c = make_critic(CriticConfig("paper", num_loop=4), onehot("awe"), probs_with(FEAR, 0.9))
    confs = [0.2, 0.75, 0.4, 0.5, 0.99]
    run(c, [(0.95, probs_with(AWE, p)) for p in confs])
    assert c.done and len(c.iterations) == 4 and c.returned == 1
    assert not c.trace()["accepted"] and "highest target confidence" in c.reason


def test_paper_direction_can_follow_the_input():
    c = make_critic(CriticConfig("paper", direction_probs="input"), onehot("awe"), probs_with(FEAR, 0.9))
    p1 = probs_with(AWE, 0.5)
    c.observe(0.9, p1)
    assert torch.allclose(c.direction_probs, p1.float())


def test_none_is_one_pass():
    c = make_critic(CriticConfig("none"), onehot("awe"), probs_with(FEAR, 0.9))
    c.observe(0.99, probs_with(FEAR, 0.99))
    assert c.done and c.returned == 0 and len(c.iterations) == 1


# ---------------------------------------------------------------- official policy

def official_reference(outcomes, tgt_label, num_loop, bound_total=True):
    """A literal transcription of the official test.py control flow on scripted (ssim, probs).

    Images are replaced by their iteration index (-1 = source); returns (returned index,
    number of edits, input index of every edit, the probs the direction used per edit).
    """
    positive = {"amusement", "awe", "contentment", "excitement"}
    classes = EMOTIONS
    pred_img = [-1]
    best_tgt_prob, best_tgt_list, best_same_prob, best_same_list = 0, [], 0, []
    inputs, directions = [], []
    src_probs = "source"
    edited = -1
    it = 0

    def one_edit(edited, direction):
        nonlocal best_tgt_prob, best_same_prob, it
        inputs.append(edited)
        directions.append(direction)
        ssim, probs = outcomes[it]
        out = it
        it += 1
        label = int(probs.argmax())
        if (0.5 < ssim < 0.8) or label == tgt_label:
            if (classes[label] in positive) == (classes[tgt_label] in positive):
                if probs[label] > best_same_prob:
                    best_same_prob = float(probs[label])
                    best_same_list.append(out)
            if probs[tgt_label] > best_tgt_prob:
                best_tgt_prob = float(probs[tgt_label])
                best_tgt_list.append(out)
            pred_img.append(out)
            return out, label, probs
        return pred_img[-1], label, probs

    edited, label, first_probs = one_edit(edited, src_probs)
    while best_tgt_prob < 0.6 and len(pred_img) < num_loop and (not bound_total or it < num_loop):
        edited, label, _ = one_edit(edited, 0)  # 0 = "P(first edit)"
    if label != tgt_label:
        if best_tgt_prob > 0.6:
            pred_img.append(best_tgt_list[-1])
        elif best_same_prob != 0:
            pred_img.append(best_same_list[-1])
        elif best_tgt_prob != 0:
            pred_img.append(best_tgt_list[-1])
    return pred_img[-1], it, inputs, directions


def random_outcomes(rng: random.Random, n: int):
    outs = []
    for _ in range(n):
        logits = torch.tensor([rng.gauss(0, 2) for _ in range(8)])
        if rng.random() < 0.3:
            logits[AWE] += rng.uniform(0, 5)
        outs.append((rng.choice([0.2, 0.45, 0.55, 0.7, 0.85, rng.random()]), torch.softmax(logits, 0)))
    return outs


@pytest.mark.parametrize("num_loop", [1, 2, 5, 30])
def test_official_policy_matches_a_transcription_of_test_py(num_loop):
    rng = random.Random(num_loop)
    for trial in range(150):
        outcomes = random_outcomes(rng, num_loop)
        src = probs_with(FEAR, 0.9)
        c = run(make_critic(CriticConfig("official", num_loop=num_loop), onehot("awe"), src), outcomes)
        ret, n, inputs, directions = official_reference(outcomes, AWE, num_loop)
        assert c.done and len(c.iterations) == n <= num_loop
        assert c.returned == ret, (trial, c.reason)
        assert [it.input_index for it in c.iterations] == inputs


def test_official_direction_uses_first_edit_probs_forever():
    src = probs_with(FEAR, 0.9)
    c = make_critic(CriticConfig("official", num_loop=5), onehot("awe"), src)
    assert torch.allclose(c.direction_probs, src.float())
    first = probs_with(EMOTIONS.index("sadness"), 0.5)
    c.observe(0.95, first)  # rejected, but its softmax becomes the direction
    assert torch.allclose(c.direction_probs, first.float())
    c.observe(0.6, probs_with(EMOTIONS.index("anger"), 0.9))  # kept, direction unchanged
    assert torch.allclose(c.direction_probs, first.float())


def test_official_bounds_consecutive_rejections_and_returns_source():
    c = run(make_critic(CriticConfig("official", num_loop=7), onehot("awe"), probs_with(FEAR, 0.9)),
            [(0.95, probs_with(FEAR, 0.9))] * 50)
    # the official script would loop forever here (nothing is ever kept)
    assert c.done and len(c.iterations) == 7 and c.returned == SOURCE_INDEX
    assert all(it.input_index == SOURCE_INDEX for it in c.iterations)


def test_official_stops_at_confidence_and_falls_back_to_same_valence():
    c = run(make_critic(CriticConfig("official"), onehot("awe"), probs_with(FEAR, 0.9)),
            [(0.6, probs_with(EMOTIONS.index("contentment"), 0.7)),  # kept, same valence
             (0.6, probs_with(FEAR, 0.5, AWE)),  # kept, target conf 0.5
             (0.95, probs_with(FEAR, 0.9))])  # dropped
    assert not c.done and c.next_input == 1  # the last kept edit is edited again
    c.observe(0.95, probs_with(AWE, 0.65, FEAR))  # kept (top is the target), conf 0.65 >= 0.6 -> stop
    assert c.done and len(c.iterations) == 4 and c.returned == 3 and c.iterations[3].input_index == 1
    c2 = run(make_critic(CriticConfig("official", num_loop=3), onehot("awe"), probs_with(FEAR, 0.9)),
             [(0.6, probs_with(EMOTIONS.index("contentment"), 0.7)), (0.6, probs_with(FEAR, 0.6, AWE)),
              (0.9, probs_with(FEAR, 0.9))])
    # official bound: len([source] + kept) < num_loop, so 2 kept edits end a num_loop=3 run
    assert c2.done and len(c2.iterations) == 2 and c2.returned == 0 and "same-valence" in c2.reason


@pytest.mark.parametrize("critic", ["paper", "official"])
def test_replay_at_smaller_num_loop_equals_a_shorter_run(critic):
    from emoeditor.editing.critic import replay

    rng = random.Random(7)
    for _ in range(40):
        outcomes = random_outcomes(rng, 30)
        full = run(make_critic(CriticConfig(critic, num_loop=30), onehot("awe"), probs_with(FEAR, 0.9)), outcomes)
        for k in (1, 3, 10, 30):
            short = run(make_critic(CriticConfig(critic, num_loop=k), onehot("awe"), probs_with(FEAR, 0.9)), outcomes)
            again = replay(full.trace(), k)
            assert (again.returned, len(again.iterations)) == (short.returned, len(short.iterations))
    with pytest.raises(ValueError, match="cannot replay"):
        replay(full.trace(), 31)
