"""The dilemma rates (docs/design.md, Rates), as plain functions over boolean correctness arrays.

All arrays are [N] over the same items in the same order. A rate with an empty denominator is None.
"""

from __future__ import annotations

import math

import numpy as np


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def _lost(correct_before: np.ndarray, correct_after: np.ndarray) -> float | None:
    known = np.asarray(correct_before, bool)
    return _share(int((known & ~np.asarray(correct_after, bool)).sum()), int(known.sum()))


def forget_efficacy(correct_before: np.ndarray, correct_after: np.ndarray) -> float | None:
    """Share of the forget items the original model answered that the unlearned model no longer answers."""
    return _lost(correct_before, correct_after)


def recovery_rate(correct_before: np.ndarray, correct_after: np.ndarray, correct_attacked: np.ndarray) -> float | None:
    """Share of the forgotten items (known before, wrong after) that the attack makes correct again."""
    forgotten = np.asarray(correct_before, bool) & ~np.asarray(correct_after, bool)
    return _share(int((forgotten & np.asarray(correct_attacked, bool)).sum()), int(forgotten.sum()))


def destructive_rate(correct_before: np.ndarray, correct_after: np.ndarray) -> float | None:
    """Share of the items that should be kept and that the original model answered which the unlearned
    model no longer answers: |known ∧ ¬after| / |known|.

    Items the original model never answered do not enter it. The paper's net form
    (U_before − U_after) / U_before lets an answer *gained* on such an item offset one lost elsewhere;
    a GDR method trains on the retain facts, so on a pretrained model (where many retain facts are
    never-known) its gains there could hide any loss and drive the rate below 0."""
    return _lost(correct_before, correct_after)


def keep_counts(correct_before: np.ndarray, correct_after: np.ndarray) -> dict[str, int]:
    """Beside the destructive rate: how many kept items were known, how many of those were lost, and
    how many never-known ones the unlearned model now answers (``gained``, not offset against losses)."""
    before, after = np.asarray(correct_before, bool), np.asarray(correct_after, bool)
    return {"known": int(before.sum()), "lost": int((before & ~after).sum()), "gained": int((~before & after).sum())}


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
