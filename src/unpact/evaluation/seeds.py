"""How a method's verdict holds across the seeds of a study (docs/design.md, "Dilemma quadrant and
verdict").

One seed's verdict rests on one unlearning run: at a step size near its edge a method can forget 26
facts under one seed and 31 under the next, and its strongest attack bring back 19% or 52% of them.
Across seeds the verdict keeps the rule's direction: a method is reliable only if it is reliable under
every seed, insufficient if any seed's strongest calibrated attack reaches the threshold, destructive if
any seed destroys past it; the counts say how often each happened, so "insufficient in 1 of 5" and "in
5 of 5" read differently.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .quadrant import quadrant_name


def spread(values: list[float | None]) -> dict | None:
    """Mean, sample standard deviation (None for one value), min and max of the non-null ``values``;
    None when there are none."""
    xs = np.array([v for v in values if v is not None], dtype=float)
    if not len(xs):
        return None
    return {"mean": float(xs.mean()), "sd": float(xs.std(ddof=1)) if len(xs) > 1 else None,
            "min": float(xs.min()), "max": float(xs.max()), "n": int(len(xs))}


def across_seeds(methods: Mapping[str, dict]) -> dict[str, dict]:
    """Per method run under two or more seeds: its seeds, how many seeds gave each quadrant, the verdict
    across them (the worst: ``insufficient`` and ``destructive`` parts each present when any seed had
    it), the seeds that were insufficient / destructive, and the spread of forget efficacy, the strongest
    attack's calibrated recovery and the destructive rate.

    ``methods``: one group's metrics.json entries, each with ``method``, ``seed``, ``quadrant``,
    ``forget_efficacy``, ``destructive_rate`` and ``strongest_attack`` (None where nothing was
    forgotten). Methods with one seed are left out.
    """
    by_method: dict[str, list[dict]] = {}
    for entry in methods.values():
        by_method.setdefault(entry["method"], []).append(entry)
    out = {}
    for name, runs in by_method.items():
        if len(runs) < 2:
            continue
        runs = sorted(runs, key=lambda r: r["seed"])
        quadrants = [r.get("quadrant") or "" for r in runs]
        insufficient = [r["seed"] for r, q in zip(runs, quadrants, strict=True) if "insufficient" in q]
        destructive = [r["seed"] for r, q in zip(runs, quadrants, strict=True) if "destructive" in q]
        verdict = quadrant_name(bool(insufficient), bool(destructive))
        out[name] = {
            "seeds": [r["seed"] for r in runs],
            "quadrants": {q: quadrants.count(q) for q in dict.fromkeys(quadrants)},
            "verdict": verdict,
            "insufficient_seeds": insufficient,
            "destructive_seeds": destructive,
            "forget_efficacy": spread([r.get("forget_efficacy") for r in runs]),
            "strongest_calibrated": spread([(r.get("strongest_attack") or {}).get("calibrated") for r in runs]),
            "destructive_rate": spread([r.get("destructive_rate") for r in runs]),
        }
    return out
