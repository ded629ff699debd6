"""The dilemma rates (docs/design.md, Rates), as plain functions over boolean correctness arrays.

All arrays are [N] over the same items in the same order. A rate with an empty denominator is None.
"""

from __future__ import annotations

import math

import numpy as np


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def forget_efficacy(correct_before: np.ndarray, correct_after: np.ndarray) -> float | None:
    """Share of the forget items the original model answered that the unlearned model no longer answers."""
    known = np.asarray(correct_before, bool)
    return _share(int((known & ~np.asarray(correct_after, bool)).sum()), int(known.sum()))


def recovery_rate(correct_before: np.ndarray, correct_after: np.ndarray, correct_attacked: np.ndarray) -> float | None:
    """Share of the forgotten items (known before, wrong after) that the attack makes correct again."""
    forgotten = np.asarray(correct_before, bool) & ~np.asarray(correct_after, bool)
    return _share(int((forgotten & np.asarray(correct_attacked, bool)).sum()), int(forgotten.sum()))


def destructive_rate(correct_before: np.ndarray, correct_after: np.ndarray) -> float | None:
    """Relative drop of correctness on items that should be kept: (U_before − U_after) / U_before."""
    before = float(np.mean(correct_before)) if len(correct_before) else 0.0
    after = float(np.mean(correct_after)) if len(correct_after) else 0.0
    return (before - after) / before if before > 0 else None


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (95% for z = 1.96); None when there are no trials.

    Unlike the normal approximation it stays inside [0, 1] and is sensible for 0 or n successes,
    which recovery counts on a few dozen forgotten items often are.
    """
    if trials <= 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    # exact ends at 0 and n successes (the formula lands there only up to rounding)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == trials else min(1.0, centre + half)
    return lo, hi
