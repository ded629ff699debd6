"""The registry of attribution methods: a new method is one module in this package.

    @attribution_method("occlusion", help="...", needs_weights=False)
    def occlusion(scorer, questions, answers, *, features, spans, baseline_id, target, **options):
        ...  # -> list[Attribution], one per (question, answer)

The module is found and imported the first time the registry is read (`unpact.registry.import_submodules`
over ``unpact.attribution``), so `unpact.attribution.attribute`, ``METHODS`` and the CLI's checks see the
method with no other file touched. Every method is called with the same keywords — ``ablation``,
``features``, ``spans``, ``baseline_id``, ``target``, ``steps``, ``rule`` and whatever extra options the
caller of `attribute` passes — and takes those it uses (``**options`` swallows the rest, as `attribute`
promises that options a method does not use are ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..registry import Registry, import_submodules

if TYPE_CHECKING:
    from ..scoring import Scorer
    from .ablation import Attribution


class AttributeFn(Protocol):
    """The common signature: prompts and answers in, one `Attribution` per pair out."""

    def __call__(self, scorer: Scorer, questions: Sequence[str], answers: Sequence[str],
                 **options: Any) -> list[Attribution]: ...


@dataclass(frozen=True)
class AttributionMethod:
    """A registered method. ``needs_weights``: it reads the model's weights or gradients, so a served model
    (log-probs over HTTP only) cannot run it; leave-one-out needs only scores and can."""

    name: str
    help: str
    needs_weights: bool
    fn: AttributeFn


def _discover() -> None:
    # leave-one-out, then the gradient methods: the order the CLI has always listed them in
    import_submodules(__package__, first=("ablation", "gradients"))


ATTRIBUTION_METHODS: Registry[AttributionMethod] = Registry("attribution method", discover=_discover)


def attribution_method(name: str, *, help: str, needs_weights: bool) -> Callable[[AttributeFn], AttributeFn]:
    """Decorator registering an attribution function under ``name`` (see the module docstring); returns the
    function unchanged, so it stays callable directly."""

    def decorate(fn: AttributeFn) -> AttributeFn:
        ATTRIBUTION_METHODS.add(name, AttributionMethod(name, help, needs_weights, fn), help=help)
        return fn

    return decorate
