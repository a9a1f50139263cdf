"""The EmoPair validator's source_softmax sum check: |sum - 1| may be at most SOFTMAX_SUM_TOL = 1e-3.

(The other bad-field cases are in test_data.py's BAD_FIELD_CASES; these pin the tolerance itself.)
"""

import copy
import json
from pathlib import Path

import pytest

from emoeditor.constants import SOFTMAX_SUM_TOL
from emoeditor.data.emopair import validate_entries

TOL = 1e-3  # the documented tolerance, written out so that changing the constant is noticed


@pytest.fixture
def toy_entries(toy_emopair):
    return json.loads(Path(toy_emopair[1]).read_text())


def _problems_with_softmax(toy_emopair, toy_entries, probs):
    """The validator's report when entry 5 carries `probs` (image files are not checked)."""
    entries = copy.deepcopy(toy_entries)
    entries[5]["source_softmax"] = probs
    good, problems = validate_entries(entries, toy_emopair[0], check_images=False, progress=False)
    assert len(good) + len(problems) == len(entries)
    return problems


def _summing_to(total):
    return [total] + [0.0] * 7


def test_tolerance_constant():
    assert SOFTMAX_SUM_TOL == TOL


def test_softmax_summing_to_a_half_is_rejected_naming_the_sum(toy_emopair, toy_entries):
    problems = _problems_with_softmax(toy_emopair, toy_entries, [0.0625] * 8)
    assert len(problems) == 1 and problems[0].startswith("entry 5 ")
    assert "source_softmax sums to 0.5, not 1 (tolerance 0.001)" in problems[0]


@pytest.mark.parametrize("total", [1 + 0.9 * TOL, 1 - 0.9 * TOL, 1.0])
def test_softmax_sum_within_tolerance_is_accepted(toy_emopair, toy_entries, total):
    assert _problems_with_softmax(toy_emopair, toy_entries, _summing_to(total)) == []


def test_rounded_softmax_within_tolerance_is_accepted(toy_emopair, toy_entries):
    # Probabilities rounded to 4 decimals, as a JSON dump might, sum to 0.9998: still a softmax.
    probs = [0.1249, 0.1249, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]
    assert _problems_with_softmax(toy_emopair, toy_entries, probs) == []


@pytest.mark.parametrize("total, shown", [(1 + 1.5 * TOL, "1.0015"), (1 - 1.5 * TOL, "0.9985")])
def test_softmax_sum_just_outside_tolerance_is_rejected(toy_emopair, toy_entries, total, shown):
    problems = _problems_with_softmax(toy_emopair, toy_entries, _summing_to(total))
    assert len(problems) == 1 and problems[0].startswith("entry 5 ")
    assert f"source_softmax sums to {shown}, not 1 (tolerance 0.001)" in problems[0]
