"""Paraphrase attack: ask each forgotten question in the other words the benchmark gives for it.

Only the question text changes; the model's prompt format wraps it as usual and the weights are
untouched. An item without a paraphrase is asked as written (and so can only be recovered by chance
of a different answer, which greedy decoding does not give: its recovery is that of the plain prompt).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..data import Item
from .base import Attack, AttackContext, AttackKey, AttackRun, register


def paraphrase_questions(items: Sequence[Item]) -> list[str | None]:
    """Each item's ``paraphrased_question``, or None where the item has none (skip those items)."""
    return [it.paraphrased_question for it in items]


@register
class Paraphrase(Attack):
    """Each forget item's ``paraphrased_question`` (its own question where it has none), answered greedily."""

    name = "paraphrase"
    help = "the benchmark's paraphrase of each forgotten question"
    order = 2

    length_advice = "shorten the item's paraphrased_question"

    def planned(self, ctx: AttackContext, settings):
        yield "forget", self.prompts(ctx.forget)

    @staticmethod
    def prompts(items: Sequence[Item]) -> list[str]:
        return [p or it.question for p, it in zip(paraphrase_questions(items), items, strict=True)]

    def run(self, ctx: AttackContext, settings) -> dict[AttackKey, AttackRun]:
        asked = self.prompts(ctx.forget)
        return {AttackKey(self.name): AttackRun(asked, ctx.scorer.generate(asked))}
