"""Relearning on unrelated text: a few fine-tuning steps on facts that share nothing with the forget set.

`relearn` trains on the retain facts, which are of the same kind as the forgotten ones (same
attributes, same template), so what it brings back may be taught rather than remembered. Feng et al.
2025 (arXiv 2506.00688) separate the two: relearn on text that shares no facts with the forget set —
here the benchmark's *utility* items (general knowledge, not the fictitious people) — and read the
result against a model that never knew the forget set, relearned the same way. What the gold model
answers after the same steps is *injection* (guessing or the fine-tuning itself teaching the answer
form); only the excess over it is *recovery*. The report gives both: the run's rate, its control
(the injection) and the calibrated difference.

Like `relearn` this **changes the weights** (a copy; the unlearned model is untouched).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnpactError
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting
from .relearn import relearn


@dataclass
class RelearnUnrelatedSettings:
    steps: int = setting(10, "AdamW steps of answer NLL on the utility items", lambda n: n >= 1, "use at least 1 step")
    lr: float = setting(1e-3, "relearning learning rate", lambda lr: lr > 0, "use a positive learning rate")


@register
class RelearnUnrelated(Attack):
    """A copy of the unlearned model fine-tuned on the utility items (`relearn`), asked again."""

    name = "relearn_unrelated"
    help = "a few fine-tuning steps on utility items (no forget-set facts), then ask again"
    order = 12
    default = False  # opt-in: configs/demo-all-attacks.yaml runs it (README: cost per cell)
    changes_weights = True
    needs_weights = True
    channel = "weights"
    control = "the gold model relearned the same way (injection), else never-known retain items"
    Settings = RelearnUnrelatedSettings

    def planned(self, ctx: AttackContext, settings: RelearnUnrelatedSettings):
        if not ctx.splits.get("utility"):
            raise UnpactError("recovery.attacks lists relearn_unrelated, but the benchmark has no utility items to "
                              "relearn on; use one with a utility split (builtin, TOFU) or drop relearn_unrelated")
        yield "forget", ctx.questions

    def run(self, ctx: AttackContext, settings: RelearnUnrelatedSettings) -> dict[AttackKey, AttackRun]:
        s = ctx.scorer
        if not ctx.questions:  # nothing forgotten to ask: no relearning
            return {AttackKey(self.name): AttackRun([], [])}
        relearned = relearn(s.model, s.tokenizer, s.fmt, ctx.splits["utility"], steps=settings.steps,
                            lr=settings.lr, seed=ctx.seed)
        return {AttackKey(self.name): AttackRun(ctx.questions, ctx.rescore(relearned).generate(ctx.questions))}
