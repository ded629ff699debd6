"""Sampling attack: ask each question N times at temperature t; an item is recovered if any sample is correct.

This is the probabilistic-evaluation baseline for the recovery attacks: greedy decoding reports one
answer, but knowledge that unlearning only pushed below the top token can still come out when the
model samples. Weights are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UnpactError
from ..evaluation.correctness import DEFAULT_ROUGE_THRESHOLD, is_correct
from ..scoring import Scorer, length_buckets, pack


def batch_seed(seed: int, batch: int) -> int:
    """The torch seed of one generation batch: distinct for every (base seed, batch index) pair."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


@torch.no_grad()
def sample_answers(scorer: Scorer, questions: Sequence[str], n: int = 8, temperature: float = 1.0,
                   top_p: float = 1.0, seed: int = 0, max_new_tokens: int | None = None,
                   top_k: int = 0) -> list[list[str]]:
    """``n`` sampled answers per question under the scorer's prompt format: [Q][n] strings.

    All Q·n prompts go through the scorer's length-bucketed, left-padded batches (`pack`, as in
    `Scorer.generate_ids`) with ``do_sample=True``. ``top_k`` = 0 (the default) turns off the
    top-k filter that Hugging Face would otherwise apply (k = 50), so ``temperature`` and ``top_p``
    alone shape the distribution. Each answer is cut at the end of the answer line like a greedy one.

    Reproducible: before each batch the torch RNG is seeded from (``seed``, batch index), inside a
    forked RNG state so the caller's random stream is left as it was. The same seed, questions and
    scorer batch size give the same samples (on CPU bit for bit; GPU kernels may add their own
    nondeterminism); a question's samples depend on which batch and row it lands in, so changing the
    question list or the batch size changes them, as a different seed does.
    """
    if n < 1:
        raise UnpactError(f"sampling needs n ≥ 1 samples per question, got {n}")
    if not temperature > 0:
        raise UnpactError(f"sampling temperature must be > 0, got {temperature}; use Scorer.generate for greedy")
    if not 0 < top_p <= 1:
        raise UnpactError(f"top_p must be in (0, 1], got {top_p}")
    max_new = max_new_tokens or scorer.max_new_tokens
    prompts = [scorer.fmt.encode(q).ids for q in questions for _ in range(n)]  # row q·n + j: sample j of q
    flat: list[str] = [""] * len(prompts)
    device = scorer.device
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for b, idx in enumerate(length_buckets([len(p) for p in prompts], scorer.batch_size)):
                scorer._check_length(max(len(prompts[i]) for i in idx) + max_new, "prompt+generation")
                batch = pack([prompts[i] for i in idx], [[] for _ in idx], scorer.pad_id).to(device)
                torch.manual_seed(batch_seed(seed, b))
                gen = scorer.model.generate(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    max_new_tokens=max_new, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                    pad_token_id=scorer.pad_id, eos_token_id=scorer.tokenizer.eos_token_id,
                )
                new = gen[:, batch.input_ids.shape[1]:]
                for row, i in enumerate(idx):
                    flat[i] = scorer.fmt.clean_generation(scorer.tokenizer.decode(new[row], skip_special_tokens=True))
    finally:
        scorer.model.train(was_training)
    return [flat[q * n:(q + 1) * n] for q in range(len(questions))]


def any_correct(samples: Sequence[Sequence[str]], golds: Sequence[str],
                threshold: float = DEFAULT_ROUGE_THRESHOLD) -> np.ndarray:
    """Boolean array [Q]: is at least one of question q's samples correct (`is_correct`) for ``golds[q]``?"""
    return np.array([any(is_correct(s, gold, threshold) for s in group)
                     for group, gold in zip(samples, golds, strict=True)], dtype=bool)
