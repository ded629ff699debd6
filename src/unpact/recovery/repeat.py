"""Repeat attack: each forgotten question asked twice in one prompt, weights untouched.

Repetition is the bluntest rewrite there is: no word is singled out, so it tells a recovery that
needs *which* words are emphasised (FocusOnKey) from one that any longer prompt gives. Not run
unless ``recovery.attacks`` lists it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting


@dataclass
class RepeatSettings:
    times: int = setting(2, "how many times the question is written", lambda n: n >= 2, "use at least 2")


@register
class Repeat(Attack):
    """The question written ``times`` times, one per line, answered greedily."""

    name = "repeat"
    help = "each forgotten question written twice in one prompt"
    order = 6
    default = False
    Settings = RepeatSettings

    length_advice = "write the question fewer times (recovery.repeat_times)"

    def planned(self, ctx: AttackContext, settings: RepeatSettings):
        yield "forget", self.prompts(ctx.questions, settings)

    @staticmethod
    def prompts(questions: list[str], settings: RepeatSettings) -> list[str]:
        return ["\n".join([q.strip()] * settings.times) for q in questions]

    def run(self, ctx: AttackContext, settings: RepeatSettings) -> dict[AttackKey, AttackRun]:
        prompts = self.prompts(ctx.questions, settings)
        return {AttackKey(self.name): AttackRun(prompts, ctx.scorer.generate(prompts))}
