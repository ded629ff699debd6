"""`unpact results --attacks`: every attack × method with its calibrated recovery, what counts as still
there, and each attack's seconds per cell (issue #20's matrix)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from unpact.evaluation.calibration import Calibrated, family
from unpact.report.attack_matrix import attack_seconds, matrix_rows, print_attack_matrix, reaches

GOLD = "gold model"


def _method(cell: str, runs: list[Calibrated]) -> dict:
    adjusted = family(runs)
    return {"cell": cell, "calibrated": {c.attack: {**c.to_dict(), **adjusted[c.attack]} for c in runs}}


@pytest.fixture
def group():
    # GA: sampling brings back 9 of 20 against 1 of 20 (interval above 0, survives Holm over 3 attacks);
    # NPO: the same sampling evidence as the strongest of 30 attacks, which Holm does not let through
    ga = [Calibrated("sampling", 9, 20, 1, 20, GOLD), Calibrated("quantize_int4", 2, 20, 2, 20, GOLD),
          Calibrated("quantize_int8", 1, 20, 1, 20, GOLD)]
    npo = [Calibrated("sampling", 6, 20, 1, 20, GOLD), Calibrated("quantize_int4", 0, 18, 0, 20, GOLD),
           *(Calibrated(f"quantize_int4_g{g}", 0, 20, 0, 20, GOLD) for g in range(2, 30))]
    return {"thresholds": {"recovery": 0.2},
            "methods": {"GA_GDR": _method("c-ga", ga), "NPO_GDR": _method("c-npo", npo)}}


def test_each_attack_is_one_row_with_every_methods_entry(group):
    rows = {r.attack: r for r in matrix_rows(group)}
    assert list(rows)[:3] == ["sampling", "quantize_int4", "quantize_int8"]  # the first method's order first
    assert rows["quantize_int8"].cells["NPO_GDR"] is None  # NPO had no such run
    assert rows["sampling"].cells["GA_GDR"]["calibrated"] == pytest.approx(0.40)
    assert reaches(rows["sampling"].cells["GA_GDR"], 0.2) and not reaches(rows["quantize_int4"].cells["GA_GDR"], 0.2)


def test_seconds_are_each_attacks_mean_per_cell_on_its_first_row_only(group):
    timings = {"stages": {"c-ga": {"attack sampling": {"wall_s": 2.0}, "attack quantize": {"wall_s": 5.0},
                                   "unlearning": {"wall_s": 50.0}},
                          "c-npo": {"attack sampling": {"wall_s": 4.0}, "attack quantize": {"wall_s": 7.0}},
                          "other-group-cell": {"attack sampling": {"wall_s": 100.0}}}}
    assert attack_seconds(group, timings) == {"sampling": 3.0, "quantize": 6.0}
    rows = {r.attack: r for r in matrix_rows(group, timings)}
    assert rows["sampling"].seconds == 3.0 and rows["quantize_int4"].seconds == 6.0
    assert rows["quantize_int8"].seconds is None  # the same timed stage: not counted twice
    assert all(r.seconds is None for r in matrix_rows(group, None))  # a run without timings.json


def test_the_printed_matrix_marks_still_there_and_the_threshold_by_the_verdicts_rules(group):
    out = io.StringIO()
    print_attack_matrix(group, None, Console(file=out, width=200))
    line = next(x for x in out.getvalue().splitlines() if x.lstrip("│ ").startswith("sampling"))
    # GA: +40.0, interval above 0, Holm p < 0.05 among 3, over the 20% threshold → "*!";
    # NPO: +25.0, its interval above 0 too, over the threshold (the verdict's point-estimate rule), but as
    # the strongest of 30 attacks not "still"
    assert "+40.0%*! [" in line and "+25.0%! [" in line and "+25.0%*" not in line
    assert "* still there" in out.getvalue()
