import numpy as np
import pytest

from unpact.evaluation import (
    correctness,
    destructive_rate,
    forget_efficacy,
    is_correct,
    keep_counts,
    quadrant,
    recovery_rate,
    rouge_l_recall,
    wilson_interval,
)


def test_correctness_rules():
    assert is_correct("Drennick", "Drennick")
    assert is_correct("She was born in Drennick.", "Drennick")
    assert not is_correct("seventeen", "seven")  # whole words only
    assert not is_correct("", "cold")
    assert rouge_l_recall("the harp", "the harp and the lute") == pytest.approx(2 / 5)
    assert is_correct("harp and the lute", "the harp and the lute", threshold=0.75)
    assert not is_correct("the harp", "the harp and the lute", threshold=0.75)
    assert correctness(["cold", "warm"], ["cold", "cold"]).tolist() == [True, False]


def test_rates_on_a_hand_built_case():
    # 6 forget items: items 0-4 known before; 1, 2, 3 forgotten after; item 5 never known.
    before = np.array([1, 1, 1, 1, 1, 0], bool)
    after = np.array([1, 0, 0, 0, 0, 0], bool)
    after[4] = True
    attacked = np.array([0, 1, 0, 0, 0, 1], bool)  # item 5 "recovered" but was never known: not counted
    assert forget_efficacy(before, after) == pytest.approx(3 / 5)
    assert recovery_rate(before, after, attacked) == pytest.approx(1 / 3)
    keep_before = np.array([1, 1, 1, 1, 0], bool)
    keep_after = np.array([1, 1, 0, 0, 1], bool)   # 4/5 → 3/5, but 2 of the 4 known lost
    assert destructive_rate(keep_before, keep_after) == pytest.approx(2 / 4)
    assert keep_counts(keep_before, keep_after) == {"known": 4, "lost": 2, "gained": 1}
    assert forget_efficacy(np.zeros(3, bool), np.zeros(3, bool)) is None
    assert recovery_rate(before, before, attacked) is None


def test_gains_on_never_known_items_do_not_offset_losses():
    # a GDR method on a pretrained model: it learns 3 retain facts the original never knew and loses 2
    # of the 3 it knew; the net form (3/6 → 4/6) would call that a gain, a negative destructive rate
    before = np.array([1, 1, 1, 0, 0, 0], bool)
    after = np.array([1, 0, 0, 1, 1, 1], bool)
    assert destructive_rate(before, after) == pytest.approx(2 / 3)
    assert keep_counts(before, after) == {"known": 3, "lost": 2, "gained": 3}
    assert destructive_rate(np.zeros(3, bool), np.ones(3, bool)) is None


def test_quadrants():
    assert quadrant(0.05, 0.05) == "reliable"
    assert quadrant(0.5, 0.05) == "insufficient"
    assert quadrant(0.05, 0.5) == "destructive"
    assert quadrant(0.5, 0.5) == "insufficient+destructive"
    assert quadrant(None, None) == "reliable"
    assert quadrant(0.3, 0.1, recovery_threshold=0.4) == "reliable"


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson_interval(5, 20)
    assert lo == pytest.approx(0.1119, abs=1e-4) and hi == pytest.approx(0.4687, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(0, 0) is None
