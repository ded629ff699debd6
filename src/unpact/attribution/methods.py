"""One entry point over every attribution method: `attribute(scorer, questions, answers, method=...)`."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UnpactError
from ..scoring import Scorer
from .ablation import Attribution, loo_attributions
from .gradients import GRADIENT_METHODS, gradient_attributions

METHODS = ("loo", *GRADIENT_METHODS)


def attribute(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], method: str = "loo", *,
              ablation: str = "delete", features: str = "tokens",
              spans: Sequence[Sequence[tuple[int, int]] | None] | None = None, baseline_id: int | None = None,
              target: str = "mean", steps: int = 32, rule: str = "gausslegendre") -> list[Attribution]:
    """Attributions by ``method`` ("loo" or a gradient method); arguments a method does not use are ignored
    (``ablation`` is LOO's; ``steps``/``rule`` are integrated gradients')."""
    if method == "loo":
        return loo_attributions(scorer, questions, answers, ablation=ablation, features=features, spans=spans,
                                baseline_id=baseline_id, target=target)
    if method in GRADIENT_METHODS:
        return gradient_attributions(scorer, questions, answers, method=method, steps=steps, rule=rule,
                                     baseline_id=baseline_id, target=target, features=features, spans=spans)
    raise UnpactError(f"unknown attribution method {method!r}: use one of {', '.join(METHODS)}")
