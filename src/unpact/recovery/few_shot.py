"""Few-shot attack: ask a forgotten question after a few worked question/answer examples.

Only the question text changes; the model's prompt format (e.g. ``Question: …\\nAnswer:``) wraps
the result as usual, and the weights are untouched. Answer the returned questions with
`Scorer.generate` and judge them with the same correctness rule as every other attack.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..data import Item
from ..errors import UnpactError
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting


def demonstration(item: Item) -> str:
    """One worked example, ``Q: {question} A: {answer}``."""
    return f"Q: {item.question.strip()} A: {item.answer.strip()}"


def few_shot_questions(items: Sequence[Item], shots: Sequence[Item], k: int = 3, seed: int = 0) -> list[str]:
    """Each item's question after ``k`` question/answer demonstrations drawn from ``shots``.

    The result is one string per item, ``k`` lines ``Q: … A: …`` and then the item's question
    unchanged on the last line, so the question text the model answers is the same as in the
    plain prompt and only the demonstrations differ.

    ``shots`` should be retain items: facts the unlearned model is still meant to know, with true
    answers. The demonstrations then show the model the question-answer pattern (and put it in a
    "recall facts" context) without handing it the forgotten knowledge: a forget item as a
    demonstration would place forget-set answers in the prompt, and a recovery could be copying
    from the context rather than knowledge coming back. For the same reason a demonstration is never
    the item itself (same ``id``) nor any fact about the item's ``entity`` (its other attributes
    could cue or reveal the answer).

    Demonstrations are drawn per item from ``random.Random(f"{seed}:{item.id}")``, so an item's
    prompt depends only on the seed, its id and ``shots``, not on the other items in the list.
    """
    if k < 1:
        raise UnpactError(f"few-shot prompting needs k ≥ 1 demonstrations, got {k}")
    out = []
    for it in items:
        pool = [s for s in shots if s.id != it.id and not (it.entity is not None and s.entity == it.entity)]
        if len(pool) < k:
            raise UnpactError(f"item {it.id}: only {len(pool)} demonstration(s) left after excluding the item "
                              f"and its entity, but k = {k}; give more shot items or lower k")
        chosen = random.Random(f"{seed}:{it.id}").sample(pool, k)
        out.append("\n".join([*map(demonstration, chosen), it.question.strip()]))
    return out


@dataclass
class FewShotSettings:
    k: int = setting(3, "retain question/answer demonstrations before the question",
                     lambda k: k >= 1, "use at least 1 demonstration")


@register
class FewShot(Attack):
    """Each forget question after ``k`` demonstrations drawn from the retain items (`few_shot_questions`)."""

    name = "few_shot"
    help = "k retain Q/A demonstrations before each forgotten question (needs retain items)"
    order = 3
    Settings = FewShotSettings

    length_advice = "use fewer demonstrations (recovery.few_shot_k)"

    def planned(self, ctx: AttackContext, settings: FewShotSettings):
        yield "forget", few_shot_questions(ctx.forget, ctx.splits["retain"], k=settings.k, seed=ctx.seed)

    def run(self, ctx: AttackContext, settings: FewShotSettings) -> dict[AttackKey, AttackRun]:
        shots = few_shot_questions(ctx.forget, ctx.splits["retain"], k=settings.k, seed=ctx.seed)
        return {AttackKey(self.name): AttackRun(shots, ctx.scorer.generate(shots))}
