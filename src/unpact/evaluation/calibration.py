"""Recovery read against a control that never knew (docs/design.md, Controls; Dilemma quadrant and verdict).

An attack can "recover" an answer the model never knew: sampling guesses among a fact's few
candidate values, a few-shot prompt or relearning can teach it, a rewrite can cue it. So a recovery
rate is evidence only above the rate the same attack reaches on a model (or on items) without the
knowledge: the retrained gold model on the same forget items, or the unlearned model on facts of the
same benchmark the original model never answered.

calibrated recovery = recovery − control, with Newcombe's hybrid score interval for the difference of
two independent proportions (Newcombe 1998, method 10; Wilson intervals for each side) and a one-sided
Fisher exact p-value for "the attack recovers more than the control".

A method meets a dozen attacks or more, and the strongest of them is the one reported: its own p-value
would make chance look like evidence. Each p-value is therefore also given adjusted by Holm's step-down
correction over all of the method's calibrated attacks (Holm 1979; family-wise error ≤ α for any
dependence between the attacks), and a channel counts as "still there" only when that adjusted p-value
is below 0.05 as well as its interval above 0. The verdict itself stays on the point estimate: a
method must not be called reliable on a threshold the evidence might reach.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import fisher_exact

from .rates import wilson_interval

GOLD = "gold model"
NEVER_KNOWN = "never-known items"
NO_CONTROL = "none"


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval for p1 − p2 (p1 = k1/n1, p2 = k2/n2, independent samples);
    None when either side has no trials."""
    w1, w2 = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    if w1 is None or w2 is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    lo = p1 - p2 - math.sqrt((p1 - w1[0]) ** 2 + (w2[1] - p2) ** 2)
    hi = p1 - p2 + math.sqrt((w1[1] - p1) ** 2 + (p2 - w2[0]) ** 2)
    return max(-1.0, lo), min(1.0, hi)


def excess_p_value(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """One-sided Fisher exact p-value of H0 "p1 ≤ p2" against "p1 > p2"; None without trials."""
    if n1 <= 0 or n2 <= 0:
        return None
    return float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater").pvalue)


@dataclass(frozen=True)
class Calibrated:
    """One attack's recovery on the forgotten items beside its control's hit rate.

    ``hits``/``n``: forgotten items the attack brought back / forgotten items; ``control_hits``/
    ``control_n``: the same attack's correct answers where the knowledge is absent; ``control_kind``
    says which control (gold model, never-known items)."""

    attack: str
    hits: int
    n: int
    control_hits: int
    control_n: int
    control_kind: str

    @property
    def rate(self) -> float | None:
        return self.hits / self.n if self.n else None

    @property
    def uncontrolled(self) -> bool:
        """No control could be run: the raw rate stands in (it can only overstate recovery, so a
        verdict on it errs towards "insufficient", never towards "reliable")."""
        return self.control_kind == NO_CONTROL

    @property
    def control(self) -> float | None:
        if self.uncontrolled:
            return 0.0
        return self.control_hits / self.control_n if self.control_n else None

    @property
    def value(self) -> float | None:
        """Calibrated recovery: the rate minus the control's (None when either is missing)."""
        return None if self.rate is None or self.control is None else self.rate - self.control

    @property
    def ci95(self) -> tuple[float, float] | None:
        if self.uncontrolled:
            return wilson_interval(self.hits, self.n)
        return newcombe_interval(self.hits, self.n, self.control_hits, self.control_n)

    @property
    def p_value(self) -> float | None:
        return None if self.uncontrolled else excess_p_value(self.hits, self.n, self.control_hits, self.control_n)

    def to_dict(self) -> dict:
        """As metrics.json stores it: the counts and every derived figure."""
        ci = self.ci95
        return {**asdict(self), "rate": self.rate, "control": self.control, "calibrated": self.value,
                "ci95": list(ci) if ci else None, "p_value": self.p_value}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (same order; None stays None and is not counted in the
    family): the i-th smallest of m is multiplied by m − i + 1, made non-decreasing, capped at 1."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m, out, running = len(ranked), list(p_values), 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def family(calibrated: list[Calibrated]) -> dict[str, dict]:
    """Per attack, its Holm-adjusted p-value over every attack of ``calibrated`` that has a p-value
    (``p_holm``), and the family's size (``n_tests``): what metrics.json adds to each `Calibrated`."""
    adjusted = holm([c.p_value for c in calibrated])
    n = sum(c.p_value is not None for c in calibrated)
    return {c.attack: {"p_holm": a, "n_tests": n} for c, a in zip(calibrated, adjusted, strict=True)}


def still_there(ci95, p_holm: float | None) -> bool:
    """Whether a calibrated attack is evidence that the knowledge is still in the model: its 95%
    interval lies above 0 and its Holm-adjusted p-value (`family`) is below 0.05."""
    return bool(ci95 is not None and ci95[0] > 0 and p_holm is not None and p_holm < 0.05)


def strongest(calibrated: list[Calibrated]) -> Calibrated | None:
    """The attack with the largest calibrated recovery (ties: the smaller p-value, then the first);
    None when no attack has a calibrated value."""
    usable = [c for c in calibrated if c.value is not None]
    if not usable:
        return None
    return min(usable, key=lambda c: (-c.value, c.p_value if c.p_value is not None else 1.0))


def insufficient(best: Calibrated | None, threshold: float) -> bool:
    """Whether the strongest calibrated attack brings back at least ``threshold`` of the forgotten
    items beyond its control."""
    return best is not None and best.value is not None and best.value >= threshold


def verdict_note(best: Calibrated | None, threshold: float, p_holm: float | None = None, n_tests: int = 1) -> str:
    """One sentence on what decided the recovery side of the quadrant, with the interval's caveat and,
    for the strongest of ``n_tests`` attacks, its Holm-adjusted p-value (`family`)."""
    if best is None:
        return "no attack could be calibrated: no item was forgotten"
    ci = best.ci95
    interval = f"95% CI {ci[0]:+.1%} to {ci[1]:+.1%}" if ci else "no interval"
    against = ("with no control to read it against (raw rate)" if best.uncontrolled
               else f"against {best.control:.1%} for the {best.control_kind} control")
    text = (f"{best.attack} brings back {best.rate:.1%} of {best.n} forgotten items {against}: "
            f"calibrated {best.value:+.1%} ({interval})")
    chance = ""
    if p_holm is not None and n_tests > 1:
        text += f", p {best.p_value:.3g}, {p_holm:.3g} after Holm's correction over {n_tests} attacks"
        chance = "" if p_holm < 0.05 else "it could be the luck of the strongest of many attacks"
    if insufficient(best, threshold):
        doubts = [d for d in ("the interval includes 0" if ci and ci[0] <= 0 else "", chance) if d]
        return text + (f", at or above the {threshold:.0%} threshold"
                       + (f"; {' and '.join(doubts)}, so more items are needed to be sure" if doubts else ""))
    return text + f", under the {threshold:.0%} threshold"


def calibrate(attacks: dict[str, list[bool]], forgotten: np.ndarray, control: dict | None) -> list[Calibrated]:
    """Every attack run on the forget items, read against its control.

    ``attacks``: per run name, which forget items the attack answered correctly ([N] each; placebo
    runs are FocusOnKey's keyword control and are left out by the caller); ``forgotten``: [N] bool,
    known before and not after. ``control``: ``{"kind": GOLD, "attacks": {name: [N] correct}, "known":
    [N] bool}`` — the gold model under the same attack on the same forget items, counted on the items
    the original model knew and the gold model does not answer plainly (as recovery is counted) — or
    ``{"kind": NEVER_KNOWN, "attacks": {name: [M] correct}, "known": [M] bool}`` — the same attack on M
    items the original model never answered, counted on those the unlearned model does not answer
    plainly either (``known`` absent: all M); None: no control (`NO_CONTROL`).
    A run missing from the control's attacks gets no calibrated value.
    """
    out = []
    n = int(forgotten.sum())
    for name, correct in attacks.items():
        hits = int((np.asarray(correct, bool) & forgotten).sum())
        if control is None:
            out.append(Calibrated(name, hits, n, 0, 0, NO_CONTROL))
            continue
        theirs = control["attacks"].get(name)
        if theirs is None:
            out.append(Calibrated(name, hits, n, 0, 0, control["kind"]))
            continue
        theirs = np.asarray(theirs, bool)
        known = np.asarray(control.get("known", [True] * len(theirs)), bool)
        out.append(Calibrated(name, hits, n, int((theirs & known).sum()), int(known.sum()), control["kind"]))
    return out
