"""Recovery against a control that never knew (`unpact.evaluation.calibration`): the interval, the
p-value and which attack decides."""

from __future__ import annotations

import numpy as np
import pytest

from unpact.evaluation import wilson_interval
from unpact.evaluation.calibration import (
    GOLD,
    NEVER_KNOWN,
    Calibrated,
    calibrate,
    excess_p_value,
    family,
    holm,
    insufficient,
    newcombe_interval,
    strongest,
    verdict_note,
)


def test_newcombe_hybrid_score_interval_matches_the_papers_worked_examples():
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert newcombe_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    assert newcombe_interval(1, 0, 1, 5) is None


def test_the_p_value_is_one_sided_for_more_recovery_than_the_control():
    assert excess_p_value(6, 10, 0, 10) == pytest.approx(0.005418, abs=1e-6)  # Fisher, hypergeometric tail
    assert excess_p_value(0, 10, 6, 10) == pytest.approx(1.0)
    assert excess_p_value(3, 0, 1, 4) is None


def test_an_attack_that_hits_as_often_without_the_knowledge_is_calibrated_to_zero():
    c = Calibrated("sampling", hits=10, n=20, control_hits=10, control_n=20, control_kind="gold model")
    assert c.rate == c.control == 0.5 and c.value == 0.0
    assert c.ci95[0] < 0 < c.ci95[1] and c.p_value > 0.5
    assert not insufficient(c, threshold=0.2)
    assert "under the 20% threshold" in verdict_note(c, 0.2)


def test_an_attack_far_above_its_control_makes_the_method_insufficient_and_is_named():
    weak = Calibrated("paraphrase", hits=2, n=20, control_hits=0, control_n=20, control_kind="gold model")
    strong = Calibrated("relearn", hits=12, n=20, control_hits=0, control_n=20, control_kind="gold model")
    best = strongest([weak, strong])
    assert best is strong and best.value == pytest.approx(0.6)
    assert insufficient(best, 0.2) and best.ci95[0] > 0.2 and best.p_value < 1e-4
    note = verdict_note(best, 0.2)
    assert note.startswith("relearn brings back 60.0% of 20 forgotten items") and "includes 0" not in note


def test_a_small_sample_over_the_threshold_says_its_interval_includes_zero():
    c = Calibrated("few_shot", hits=1, n=3, control_hits=0, control_n=3, control_kind="never-known items")
    assert insufficient(c, 0.2)
    assert "includes 0" in verdict_note(c, 0.2)


def test_no_forgotten_items_or_no_control_decides_nothing():
    assert strongest([Calibrated("sampling", 0, 0, 1, 5, "gold model")]) is None
    assert strongest([]) is None
    assert "no attack could be calibrated" in verdict_note(None, 0.2)


def test_gold_and_never_known_controls_count_what_they_should():
    forgotten = np.array([True, True, True, False])
    attacks = {"sampling": [True, False, True, True], "relearn": [False, False, False, False]}
    gold = {"kind": GOLD, "known": [True, True, True, True], "attacks": {"sampling": [False, True, False, False]}}
    by_name = {c.attack: c for c in calibrate(attacks, forgotten, gold)}
    assert (by_name["sampling"].hits, by_name["sampling"].n) == (2, 3)  # the 4th item was not forgotten
    assert (by_name["sampling"].control_hits, by_name["sampling"].control_n) == (1, 4)
    assert by_name["relearn"].value is None  # the gold model was not attacked that way: no value
    never = {"kind": NEVER_KNOWN, "attacks": {"sampling": [True, False, False, False, False]}}
    assert calibrate({"sampling": attacks["sampling"]}, forgotten, never)[0].control == pytest.approx(0.2)


def test_without_any_control_the_raw_rate_decides_and_says_so():
    c = calibrate({"few_shot": [True, True, False]}, np.array([True, True, True]), None)[0]
    assert c.uncontrolled and c.value == pytest.approx(2 / 3) and c.p_value is None
    assert c.ci95 == pytest.approx(wilson_interval(2, 3))
    assert "no control to read it against" in verdict_note(c, 0.2)
    d = Calibrated("sampling", 3, 10, 1, 10, "gold model").to_dict()
    assert d["calibrated"] == pytest.approx(0.2) and len(d["ci95"]) == 2 and 0 < d["p_value"] < 1


def test_holm_adjusts_each_p_value_for_the_family_of_attacks():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → made non-decreasing
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.6]) == pytest.approx([1.0, None, 1.0])  # capped; None is not in the family
    assert holm([0.004]) == [0.004] and holm([]) == []


def test_the_strongest_of_many_attacks_is_not_evidence_by_its_own_p_value_alone():
    # 1 strong-looking attack among 20: alone p < 0.05, after Holm over 20 it could be chance
    lucky = Calibrated("many_shot_k16", hits=7, n=30, control_hits=1, control_n=30, control_kind="gold model")
    others = [Calibrated(f"a{i}", hits=1, n=30, control_hits=1, control_n=30, control_kind="gold model")
              for i in range(19)]
    adjusted = family([lucky, *others])
    assert lucky.p_value < 0.05 and adjusted["many_shot_k16"]["n_tests"] == 20
    assert adjusted["many_shot_k16"]["p_holm"] == pytest.approx(min(1.0, 20 * lucky.p_value))
    note = verdict_note(lucky, 0.15, **adjusted["many_shot_k16"])
    assert "after Holm's correction over 20 attacks" in note and "luck of the strongest" in note
    assert insufficient(lucky, 0.15)  # the verdict stays on the point estimate: never reliable by doubt
    alone = family([lucky])["many_shot_k16"]
    assert "Holm" not in verdict_note(lucky, 0.15, **alone)  # one attack: nothing to correct
