"""Is a generated answer correct? The gold answer contained as whole words, or ROUGE-L recall of it
(rouge-score) at a threshold — and, where the item has wrong answers of the same form (TOFU's and
the built-in benchmark's perturbed answers), closer to the gold than to every one of them.

The last condition is what makes the rule judge whole sentences: "Orla Quill was born in Drennick,
where she grew up" shares most of its words with the gold "… born in Quillmoor, where she grew up",
so recall alone calls it correct, although it states the wrong fact. Against the perturbed answer
"… born in Drennick, …" it scores higher than against the gold, so it is not. For one-word answers
the condition changes nothing but a reply naming several candidates, which knows none of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

DEFAULT_ROUGE_THRESHOLD = 0.75


@lru_cache(maxsize=2)
def _scorer(stem: bool = False):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)


def rouge_l_recall(prediction: str, gold: str, stem: bool = False) -> float:
    """ROUGE-L recall: the share of gold tokens covered by the longest common subsequence.

    ``stem``: compare Porter stems ("runs" = "running"), as TOFU's published ROUGE numbers do;
    unpact's correctness rule and MUSE compare the words as written.
    """
    return float(_scorer(stem).score(gold, prediction)["rougeL"].recall)


def _match(prediction: str, answer: str) -> float:
    """How well ``prediction`` states ``answer``: 1 when it holds it as whole words ("seven" does not
    match inside "seventeen"), else the ROUGE-L recall of ``answer``."""
    if re.search(rf"(?<!\w){re.escape(answer.strip().lower())}(?!\w)", prediction.lower()):
        return 1.0
    return rouge_l_recall(prediction, answer)


def is_correct(prediction: str, gold: str, threshold: float = DEFAULT_ROUGE_THRESHOLD,
               wrong: Sequence[str] = ()) -> bool:
    """Correct when ``prediction`` holds ``gold`` as whole words or covers it with ROUGE-L recall ≥
    ``threshold``, and matches it strictly better than each ``wrong`` answer (see the module docstring)."""
    if not prediction.strip():
        return False
    score = _match(prediction, gold)
    same = gold.strip().lower()
    # a "wrong" answer equal to the gold (a data slip) would make the item impossible to answer
    return score >= threshold and all(score > _match(prediction, w) for w in wrong if w.strip().lower() != same)


def correctness(predictions: Sequence[str], golds: Sequence[str], threshold: float = DEFAULT_ROUGE_THRESHOLD,
                wrong: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """Boolean array [N]: `is_correct` per (prediction, gold) pair; ``wrong`` [N][k]: each item's
    perturbed answers (None: judged against the gold alone)."""
    wrong = wrong if wrong is not None else [()] * len(golds)
    return np.array([is_correct(p, g, threshold, w) for p, g, w in zip(predictions, golds, wrong, strict=True)],
                    dtype=bool)


def item_correctness(predictions: Sequence[str], items: Sequence, threshold: float = DEFAULT_ROUGE_THRESHOLD) -> np.ndarray:
    """`correctness` of one reply per benchmark item (anything with ``answer`` and ``perturbed_answers``)."""
    return correctness(predictions, [it.answer for it in items], threshold, [it.perturbed_answers for it in items])
