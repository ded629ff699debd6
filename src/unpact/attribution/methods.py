"""One entry point over every attribution method: `attribute(scorer, questions, answers, method=...)`.

The methods live in `unpact.attribution.registry`'s ``ATTRIBUTION_METHODS``, each registered by its own
module; ``METHODS`` is that registry (a live, read-only name → method mapping: ``name in METHODS``,
``", ".join(METHODS)``), so a method added by a new module shows up here with no edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import UnpactError
from ..scoring import Scorer
from .ablation import Attribution
from .registry import ATTRIBUTION_METHODS

METHODS = ATTRIBUTION_METHODS


def attribute(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], method: str = "loo", *,
              ablation: str = "delete", features: str = "tokens",
              spans: Sequence[Sequence[tuple[int, int]] | None] | None = None, baseline_id: int | None = None,
              target: str = "mean", steps: int = 32, rule: str = "gausslegendre", **options: Any) -> list[Attribution]:
    """Attributions by ``method`` (a name in ``METHODS``: "loo" or a gradient method); arguments a method
    does not use are ignored (``ablation`` is LOO's; ``steps``/``rule`` are integrated gradients'), and
    ``options`` go on to the method as they are (for methods that take more)."""
    spec = ATTRIBUTION_METHODS.get(method)
    if spec.needs_weights and not scorer.capabilities.weights:
        usable = [name for name, m in ATTRIBUTION_METHODS.items() if not m.needs_weights]
        raise UnpactError(f"attribution method {method!r} needs the model's weights, which a served model does "
                          f"not expose; use {' or '.join(usable) or 'a local model'}")
    return spec.fn(scorer, questions, answers, ablation=ablation, features=features, spans=spans,
                   baseline_id=baseline_id, target=target, steps=steps, rule=rule, **options)
