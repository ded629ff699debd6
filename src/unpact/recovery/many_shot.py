"""Many-shot attack: as many worked retain examples before the forgotten question as the context holds.

Few-shot prompting (k = 3) puts the model in a "recall facts" mode; many-shot prompting (Anil et al.
2024) shows that the effect keeps growing with the number of demonstrations, into the hundreds. Each
``k`` of ``recovery.many_shot_k`` is a run of its own (``many_shot_k16``), so the report gives
recovery against k; ``0`` is "as many as fit": demonstrations are added until one more would leave
too little of the model's context for the answer (at most ``cap``).

The demonstrations are drawn as few-shot's are (`few_shot.few_shot_questions`): retain facts only,
never the item itself nor any fact about its entity, in an order fixed by (seed, item id), so an
item's k-shot prompt is the first k of its longer ones. Where the retain pool has fewer facts than
k, the prompt holds them all (the run's ``details`` keep each prompt's k). Weights untouched.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..data import Item
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting
from .few_shot import demonstration


def demonstration_order(item: Item, shots: Sequence[Item], seed: int) -> list[Item]:
    """The retain facts ``item`` may be shown (not itself, not its entity's), in its seeded order."""
    pool = [s for s in shots if s.id != item.id and not (item.entity is not None and s.entity == item.entity)]
    random.Random(f"{seed}:many:{item.id}").shuffle(pool)
    return pool


def prompt_with(item: Item, demos: Sequence[Item]) -> str:
    return "\n".join([*map(demonstration, demos), item.question.strip()])


def many_shot_questions(items: Sequence[Item], shots: Sequence[Item], k: int, seed: int = 0,
                        fits: Callable[[str], bool] | None = None, cap: int = 256) -> tuple[list[str], list[int]]:
    """Each item's question after its first ``k`` demonstrations (`demonstration_order`), or with
    ``k`` = 0 the most (up to ``cap``) for which ``fits(prompt)`` holds (found by bisection: a prompt
    only grows with k). Returns (prompts [N], demonstrations used [N])."""
    prompts, used = [], []
    for it in items:
        order = demonstration_order(it, shots, seed)
        if k > 0:
            n = min(k, len(order))
        else:
            lo, hi = 0, min(cap, len(order))
            while lo < hi:  # the largest n ≤ hi whose prompt fits
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits is None or fits(prompt_with(it, order[:mid])) else (lo, mid - 1)
            n = lo
        prompts.append(prompt_with(it, order[:n]))
        used.append(n)
    return prompts, used


@dataclass
class ManyShotSettings:
    k: list[int] = setting([16, 0], "demonstrations per run; 0 = as many as the model's context holds",
                           lambda k: k >= 0, "use a count ≥ 1, or 0 for as many as fit", each=True)
    cap: int = setting(256, "most demonstrations a k = 0 prompt may hold", lambda n: n >= 1, "use at least 1")


@register
class ManyShot(Attack):
    """Each forget question after k retain demonstrations, per k (`many_shot_questions`)."""

    name = "many_shot"
    help = "as many retain Q/A demonstrations as the context holds (and fixed k), recovery against k"
    order = 11
    default = False  # opt-in: configs/demo-all-attacks.yaml runs it (README: cost per cell)
    Settings = ManyShotSettings

    length_advice = "use fewer demonstrations (recovery.many_shot_k)"

    @classmethod
    def key_name(cls, key: AttackKey) -> str:
        return f"{cls.name}_{key.variant}"

    @classmethod
    def owns_variant(cls, variant: str) -> bool:
        return variant == "max" or (variant.startswith("k") and variant[1:].isdigit())

    def planned(self, ctx: AttackContext, settings: ManyShotSettings):
        for k in settings.k:
            if k > 0:  # k = 0 is sized to the context it finds
                yield "forget", many_shot_questions(ctx.forget, ctx.splits["retain"], k, ctx.seed)[0]

    def run(self, ctx: AttackContext, settings: ManyShotSettings) -> dict[AttackKey, AttackRun]:
        s = ctx.scorer
        room = None if s.max_length is None else s.max_length - s.max_new_tokens

        def fits(prompt: str) -> bool:
            return room is None or len(s.fmt.encode(prompt).ids) <= room

        out = {}
        for k in dict.fromkeys(settings.k):
            prompts, used = many_shot_questions(ctx.forget, ctx.splits["retain"], k, ctx.seed, fits, settings.cap)
            variant = f"k{k}" if k else "max"
            out[AttackKey(self.name, variant)] = AttackRun(prompts, s.generate(prompts), details={"k": used})
        return out
