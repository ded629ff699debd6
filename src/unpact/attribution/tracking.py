"""Contribution tracking: how one prompt's attribution changed from before to after unlearning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr

from .keytokens import DEFAULT_ALPHA, DEFAULT_BETA, key_tokens

TRACKING_KEYS = ("jaccard", "focus_before", "focus_retention", "spearman", "mass_before", "mass_after")


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|A ∩ B| / |A ∪ B|; two empty sets are identical (1.0)."""
    sa, sb = set(a), set(b)
    return 1.0 if not sa | sb else len(sa & sb) / len(sa | sb)


def focus_share(contributions: np.ndarray, key: Sequence[int]) -> float:
    """Share of the positive contribution mass that lies on ``key``; 0 when nothing contributes positively."""
    pos = np.clip(np.asarray(contributions, dtype=np.float64), 0, None)
    total = pos.sum()
    return float(pos[list(key)].sum() / total) if total > 0 else 0.0


def track(before: np.ndarray, after: np.ndarray, alpha: float = DEFAULT_ALPHA, beta: int = DEFAULT_BETA) -> dict:
    """Compare two contribution vectors ([n] each, same prompt) of the model before/after unlearning.

    Returns KeyTokens before/after, their Jaccard overlap, the focus share of the original KeyTokens
    before (``focus_before``) and after (``focus_retention``), the Spearman rank correlation of the two
    vectors (None when undefined: fewer than 2 tokens or a constant vector) and the total attribution
    mass Σ|C| before and after.
    """
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    k_before, k_after = key_tokens(before, alpha, beta), key_tokens(after, alpha, beta)
    rho = None
    if len(before) >= 2 and np.ptp(before) > 0 and np.ptp(after) > 0:
        rho = float(spearmanr(before, after).statistic)
    return {
        "key_before": k_before, "key_after": k_after,
        "jaccard": jaccard(k_before, k_after),
        "focus_before": focus_share(before, k_before),
        "focus_retention": focus_share(after, k_before),
        "spearman": rho,
        "mass_before": float(np.abs(before).sum()), "mass_after": float(np.abs(after).sum()),
    }


def aggregate(rows: Sequence[dict]) -> dict:
    """Mean of every tracking number over items (None entries skipped; None if no values)."""
    out = {}
    for key in TRACKING_KEYS:
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out
