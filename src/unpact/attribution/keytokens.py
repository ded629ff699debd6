"""KeyTokens: the prompt tokens the answer leans on (unPact; docs/design.md, KeyTokens).

With P = {i : C_i > 0}: if |P| < β, K = P; otherwise K = {i ∈ P : C_i / Σ_{j∈P} C_j > α}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_ALPHA = 0.1  # a KeyToken carries more than 10% of the positive contribution mass...
DEFAULT_BETA = 3  # ...unless fewer than 3 tokens contribute positively, when all of them are key


def key_tokens(contributions: Sequence[float], alpha: float = DEFAULT_ALPHA, beta: int = DEFAULT_BETA) -> list[int]:
    """Indices of the KeyTokens of one prompt, ascending. ``contributions``: [n]."""
    c = np.asarray(contributions, dtype=np.float64)
    positive = np.flatnonzero(c > 0)
    if len(positive) < beta:
        return positive.tolist()
    share = c[positive] / c[positive].sum()
    return positive[share > alpha].tolist()


def most_key_tokens(alpha: float = DEFAULT_ALPHA, beta: int = DEFAULT_BETA) -> int | None:
    """The most KeyTokens `key_tokens` can return for any prompt: fewer than β positives, or the
    positives whose share exceeds α — at most ⌈1/α⌉ − 1 of them, since the shares sum to 1. None when
    α = 0 (every positive token can be one)."""
    if alpha <= 0:
        return None
    return max(beta - 1, math.ceil(1 / alpha) - 1, 0)
