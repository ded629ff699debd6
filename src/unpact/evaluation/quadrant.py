"""Where a method lands in the unlearning dilemma."""

from __future__ import annotations

DEFAULT_RECOVERY_THRESHOLD = 0.2
DEFAULT_DESTRUCTIVE_THRESHOLD = 0.2
QUADRANTS = ("reliable", "insufficient", "destructive", "insufficient+destructive")


def quadrant(recovery: float | None, destructive: float | None,
             recovery_threshold: float = DEFAULT_RECOVERY_THRESHOLD,
             destructive_threshold: float = DEFAULT_DESTRUCTIVE_THRESHOLD) -> str:
    """``insufficient`` if recovery ≥ its threshold, ``destructive`` if the destructive rate is, both, or
    ``reliable``. ``recovery`` is the strongest attack's calibrated recovery (its rate minus its
    control's, `unpact.evaluation.calibration`); None counts as 0."""
    return quadrant_name((recovery or 0.0) >= recovery_threshold, (destructive or 0.0) >= destructive_threshold)


def quadrant_name(insufficient: bool, destructive: bool) -> str:
    """The quadrant (one of `QUADRANTS`) of a method that is, or is not, insufficient and destructive."""
    if insufficient and destructive:
        return "insufficient+destructive"
    return "insufficient" if insufficient else "destructive" if destructive else "reliable"
