"""Faithfulness of an attribution, and agreement between two attributions.

ERASER (DeYoung et al. 2020) scores, on the attributed quantity F (LP, or the summed log-prob):

- comprehensiveness: F(x) − F(x \\ top-k%), removing the k% highest-scored features should hurt;
- sufficiency:       F(x) − F(top-k% only), keeping only them should hurt little;

each averaged over k ∈ {10, 20, 50}% (AOPC). ERASER uses the class probability; here F is a
log-probability, so the numbers are in nats. k% of n features is ⌈k·n⌉ features (at least one).
Features are removed as in `loo_attributions` (``delete`` by default). The deletion curve is F after
removing the top 0, 1, …, n features in attribution order; its area (mean over the n + 1 points) is
low for a faithful attribution.

Agreement between two methods on one item is Kendall's τ of their feature scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau

from ..scoring import Scorer
from .ablation import ABLATIONS, Attribution, ablate

DEFAULT_FRACTIONS = (0.1, 0.2, 0.5)


def ranking(scores: Sequence[float]) -> list[int]:
    """Feature indices from the highest score to the lowest (ties keep index order)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist()


def top_k(scores: Sequence[float], fraction: float) -> list[int]:
    """The ⌈fraction·n⌉ (at least 1, at most n) highest-scored feature indices."""
    n = len(scores)
    k = min(n, max(1, math.ceil(fraction * n - 1e-9)))
    return ranking(scores)[:k]


def comprehensiveness(full: float, without_top: Sequence[float]) -> float:
    """AOPC comprehensiveness: mean over k of F(x) − F(x without the top-k features)."""
    return float(np.mean(full - np.asarray(without_top, dtype=np.float64)))


def sufficiency(full: float, only_top: Sequence[float]) -> float:
    """AOPC sufficiency: mean over k of F(x) − F(only the top-k features)."""
    return float(np.mean(full - np.asarray(only_top, dtype=np.float64)))


def curve_area(curve: Sequence[float]) -> float:
    """Normalised area under a deletion curve: the mean of its points."""
    return float(np.mean(np.asarray(curve, dtype=np.float64)))


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's τ-b of two score vectors of one item; None if undefined (n < 2 or a constant vector)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"score vectors of different lengths: {len(a)} and {len(b)}")
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(kendalltau(a, b).statistic)


def agreement(first: Sequence[Attribution], second: Sequence[Attribution]) -> list[float | None]:
    """Per item, Kendall's τ between two methods' attributions of the same items and features."""
    return [kendall_tau(x.contributions, y.contributions) for x, y in zip(first, second, strict=True)]


def faithfulness(scorer: Scorer, attributions: Sequence[Attribution], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 ablation: str = "delete", baseline_id: int | None = None, curve: bool = True) -> list[dict]:
    """Comprehensiveness, sufficiency and the deletion curve of every attribution, in one scorer call.

    Per item: {"comprehensiveness", "sufficiency", "fractions", "lp", "without_top" [len(fractions)],
    "only_top" [len(fractions)], and with ``curve`` "deletion_curve" [n + 1] and "deletion_area"}. F is
    each attribution's own target (LP or summed log-prob); features are its own feature groups.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}")
    fmt = scorer.fmt
    baseline = scorer.pad_id if baseline_id is None else int(baseline_id)
    prompts, answers, hidden, layout = [], [], [], []
    for attr in attributions:
        enc = fmt.encode(attr.question)
        a = fmt.encode_answer(attr.answer)
        groups = attr.feature_groups

        def tokens_of(feats, groups=groups):
            return sorted({t for f in feats for t in groups[f]})

        order = ranking(attr.contributions)
        removals = [[]]  # the intact prompt first
        removals += [tokens_of(top_k(attr.contributions, fr)) for fr in fractions]
        all_tok = range(len(enc.question_ids))
        removals += [sorted(set(all_tok) - set(tokens_of(top_k(attr.contributions, fr)))) for fr in fractions]
        if curve:
            removals += [tokens_of(order[:j]) for j in range(1, len(order) + 1)]
        for r in removals:
            ids, hide = ablate(enc, r, ablation, baseline)
            prompts.append(ids)
            hidden.append(hide)
            answers.append(a)
        layout.append(len(removals))
    scores = scorer.score_ids(prompts, answers, hidden if ablation == "mask" else None)
    out, start = [], 0
    nf = len(fractions)
    for attr, n in zip(attributions, layout, strict=True):
        per = scores.per_token[start:start + n]
        v = np.array([t.mean() if attr.target == "mean" else t.sum() for t in per])
        start += n
        full, without, only = float(v[0]), v[1:1 + nf], v[1 + nf:1 + 2 * nf]
        row = {"lp": full, "fractions": list(fractions), "without_top": without.tolist(), "only_top": only.tolist(),
               "comprehensiveness": comprehensiveness(full, without), "sufficiency": sufficiency(full, only)}
        if curve:
            c = np.concatenate([[full], v[1 + 2 * nf:]])
            row["deletion_curve"] = c.tolist()
            row["deletion_area"] = curve_area(c)
        out.append(row)
    return out
