"""A method's verdict across the seeds of a study: the worst seed decides, the counts say how often."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from unpact.config import GridConfig, from_dict, validate_grid
from unpact.evaluation.seeds import across_seeds
from unpact.report.console import print_summary
from unpact.study import Grid


def entry(method: str, seed: int, quadrant: str, efficacy: float, calibrated: float | None, destructive: float) -> dict:
    strongest = None if calibrated is None else {"attack": "relearn", "calibrated": calibrated}
    return {"method": method, "seed": seed, "quadrant": quadrant, "forget_efficacy": efficacy,
            "strongest_attack": strongest, "destructive_rate": destructive}


# the demo's RMU under five unlearning seeds on an Intel Xeon (2026-12-07): reliable under seed 0 only
RMU = [entry("RMU", 0, "reliable", 26 / 39, 0.137, 0.079), entry("RMU", 1, "insufficient", 27 / 39, 0.500, 0.066),
       entry("RMU", 2, "insufficient", 29 / 39, 0.531, 0.072), entry("RMU", 3, "insufficient", 27 / 39, 0.278, 0.068),
       entry("RMU", 4, "insufficient", 31 / 39, 0.461, 0.083)]


def test_one_insufficient_seed_makes_the_method_insufficient_across_seeds():
    out = across_seeds({f"RMU s{e['seed']}": e for e in reversed(RMU)})
    rmu = out["RMU"]
    assert rmu["seeds"] == [0, 1, 2, 3, 4] and rmu["verdict"] == "insufficient"
    assert rmu["quadrants"] == {"reliable": 1, "insufficient": 4}
    assert rmu["insufficient_seeds"] == [1, 2, 3, 4] and rmu["destructive_seeds"] == []
    assert rmu["strongest_calibrated"]["min"] == pytest.approx(0.137)
    assert rmu["strongest_calibrated"]["max"] == pytest.approx(0.531)
    assert rmu["strongest_calibrated"]["mean"] == pytest.approx((0.137 + 0.5 + 0.531 + 0.278 + 0.461) / 5)
    assert rmu["forget_efficacy"]["n"] == 5 and rmu["forget_efficacy"]["sd"] > 0


def test_reliable_only_under_every_seed_and_each_part_of_the_verdict_from_any_seed():
    methods = {
        "A s0": entry("A", 0, "reliable", 0.9, 0.02, 0.05), "A s1": entry("A", 1, "reliable", 0.95, 0.05, 0.06),
        "B s0": entry("B", 0, "destructive", 0.9, 0.0, 0.4), "B s1": entry("B", 1, "insufficient", 0.5, 0.3, 0.1),
        "C s0": entry("C", 0, "reliable", 0.0, None, 0.0), "C s1": entry("C", 1, "reliable", 0.0, None, 0.0),
        "D": entry("D", 0, "insufficient", 0.5, 0.6, 0.1),  # one seed: nothing to say across seeds
    }
    out = across_seeds(methods)
    assert set(out) == {"A", "B", "C"}
    assert out["A"]["verdict"] == "reliable" and out["A"]["quadrants"] == {"reliable": 2}
    assert out["B"]["verdict"] == "insufficient+destructive"
    assert out["B"]["insufficient_seeds"] == [1] and out["B"]["destructive_seeds"] == [0]
    assert out["C"]["strongest_calibrated"] is None  # nothing forgotten under any seed: no attack to read


def test_the_summary_prints_the_verdict_across_seeds():
    metrics = {"study": "s", "groups": [{"model_name": "m", "benchmark": "b", "methods": {},
                                         "across_seeds": across_seeds({f"RMU s{e['seed']}": e for e in RMU})}]}
    out = io.StringIO()
    print_summary(metrics, Console(file=out, width=120))
    text = out.getvalue()
    assert "Across seeds" in text
    row = next(line for line in text.splitlines() if "RMU" in line)
    assert "71.8% (67–79)" in row and "+38.1% (+14 to +53)" in row and row.rstrip(" │").endswith("insufficient")
    empty = io.StringIO()
    print_summary({"study": "s", "groups": [{"model_name": "m", "benchmark": "b", "methods": {}}]},
                  Console(file=empty, width=120))
    assert "Across seeds" not in empty.getvalue()


def test_a_study_with_two_seeds_holds_each_methods_verdict_across_them(tmp_path):
    cfg = validate_grid(from_dict(GridConfig, {
        "name": "two-seeds", "seeds": [0, 1], "keep_models": False,
        "models": [{"name": "tiny", "builtin": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2,
                                                "num_heads": 2, "max_epochs": 30, "lr": 0.004,
                                                "target_accuracy": 0.15, "seed": 2}}],
        "benchmarks": [{"name": "builtin", "builtin": {"n_entities": 10, "forget_fraction": 0.3}}],
        "methods": [{"method": "GA_GDR", "lr": 0.001, "epochs": 2}],
        "recovery": {"attacks": ["paraphrase"]},
        "evaluation": {"gold_model": False},
    }))
    metrics = Grid(cfg, tmp_path / "run").run()
    group = metrics["groups"][0]
    assert set(group["methods"]) == {"GA_GDR s0", "GA_GDR s1"}
    across = group["across_seeds"]["GA_GDR"]
    assert across["seeds"] == [0, 1] and sum(across["quadrants"].values()) == 2
    assert across["verdict"] in ("reliable", "insufficient", "destructive", "insufficient+destructive")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["groups"][0]["across_seeds"] == group["across_seeds"]
    assert "Across seeds" in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
