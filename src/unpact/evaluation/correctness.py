"""Is a generated answer correct? ROUGE-L recall of the gold answer (rouge-score), or gold contained."""

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


def is_correct(prediction: str, gold: str, threshold: float = DEFAULT_ROUGE_THRESHOLD) -> bool:
    """Correct when the gold answer appears as whole words in the prediction or ROUGE-L recall ≥ ``threshold``."""
    if not prediction.strip():
        return False
    # Whole-word containment: "seven" must not match inside "seventeen".
    if re.search(rf"(?<!\w){re.escape(gold.strip().lower())}(?!\w)", prediction.lower()):
        return True
    return rouge_l_recall(prediction, gold) >= threshold


def correctness(predictions: Sequence[str], golds: Sequence[str], threshold: float = DEFAULT_ROUGE_THRESHOLD) -> np.ndarray:
    """Boolean array [N]: `is_correct` per (prediction, gold) pair."""
    return np.array([is_correct(p, g, threshold) for p, g in zip(predictions, golds, strict=True)], dtype=bool)
