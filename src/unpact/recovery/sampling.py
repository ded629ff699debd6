"""Sampling attack: ask each question N times at temperature t; an item is recovered if any sample is correct.

This is the probabilistic-evaluation baseline for the recovery attacks: greedy decoding reports one
answer, but knowledge that unlearning only pushed below the top token can still come out when the
model samples. Weights are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UnpactError
from ..scoring import Scorer, batch_seed
from .base import Attack, AttackContext, AttackKey, AttackRun, any_correct, register, setting

__all__ = ["any_correct", "batch_seed", "sample_answers"]


def sample_answers(scorer: Scorer, questions: Sequence[str], n: int = 8, temperature: float = 1.0,
                   top_p: float = 1.0, seed: int = 0, max_new_tokens: int | None = None,
                   top_k: int = 0) -> list[list[str]]:
    """``n`` sampled answers per question under the scorer's prompt format: [Q][n] strings.

    The questions are encoded with the scorer's prompt format and sampled by `Scorer.sample_ids`
    (batched; each answer cut at the end of the answer line like a greedy one). ``top_k`` = 0 (the
    default) turns off Hugging Face's default top-k filter (k = 50), so ``temperature`` and ``top_p``
    alone shape the distribution; ``n`` < 1, ``temperature`` ≤ 0 or ``top_p`` outside (0, 1] raise
    UnpactError.

    Reproducible: each batch's torch RNG is seeded from (``seed``, batch index) inside a forked RNG
    state, so the caller's random stream is left as it was. The same seed, questions and scorer batch
    size give the same samples (on CPU bit for bit), under one process or several; a question's
    samples depend on which batch and row it lands in, so changing the question list or the batch
    size changes them, as a different seed does.
    """
    # checked here, once for both backends (local `Scorer`, served `ServedScorer`)
    if n < 1:
        raise UnpactError(f"sampling needs n ≥ 1 samples per question, got {n}")
    if not temperature > 0:
        raise UnpactError(f"sampling temperature must be > 0, got {temperature}; use Scorer.generate for greedy")
    if not 0 < top_p <= 1:
        raise UnpactError(f"top_p must be in (0, 1], got {top_p}")
    return scorer.sample_ids([scorer.fmt.encode(q).ids for q in questions], n, temperature, top_p, top_k, seed,
                             max_new_tokens)


@dataclass
class SamplingSettings:
    n: int = setting(8, "samples per question: recovered if any is correct", lambda n: n >= 1, "use at least 1 sample")
    temperature: float = setting(1.0, "sampling temperature", lambda t: t > 0, "use a value > 0")


@register
class Sampling(Attack):
    """``n`` answers sampled per forget question (`sample_answers`), seeded by the study's seed."""

    name = "sampling"
    help = "n sampled answers per forgotten question, recovered if any is correct"
    order = 1
    channel = "sampling"
    Settings = SamplingSettings

    def run(self, ctx: AttackContext, settings: SamplingSettings) -> dict[AttackKey, AttackRun]:
        samples = sample_answers(ctx.scorer, ctx.questions, n=settings.n, temperature=settings.temperature,
                                 seed=ctx.seed)
        first = [next((s for s in group if s), "") for group in samples]
        return {AttackKey(self.name): AttackRun(ctx.questions, first, samples=samples)}
