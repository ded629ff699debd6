"""What the study measures on any one model (original, unlearned, gold): greedy answers per split,
LOO attributions with their KeyTokens, membership inference, attribution quality and MUSE's
generations. Each is a function of a scorer and the items, so the stages only decide what to cache."""

from __future__ import annotations

import random

import numpy as np

from ..attribution import (
    agreement,
    faithfulness,
    gradient_attributions,
    key_tokens,
    keyword_token_mask,
    loo_attributions,
)
from ..data import SPLITS, Item
from ..data.benchmarks import Benchmark
from ..evaluation import item_correctness
from ..evaluation.mia import loss_score, mia_auc, min_k_plus_plus_score, min_k_score, zlib_score
from ..recovery import keyword_words
from ..scoring import Scorer
from .standard import muse_raw


def answers(scorer: Scorer, splits: dict[str, list[Item]], rouge_threshold: float,
            known: dict[str, str] | None = None, budgets: dict[str, int] | None = None) -> dict[str, dict]:
    """Greedy answers and correctness per split: {split: {"answers", "correct", "token_logprobs"}}.
    ``known``: answers this model already gave, by item id (not generated again); ``budgets``: new
    tokens per split (`unpact.study.lengths.answer_budgets`; the scorer's default where absent)."""
    known, budgets = known or {}, budgets or {}
    out = {}
    for split in SPLITS:
        items = splits[split]
        generated = iter(scorer.generate([it.question for it in items if it.id not in known], budgets.get(split)))
        replies = [known[it.id] if it.id in known else next(generated) for it in items]
        ok = item_correctness(replies, items, rouge_threshold)
        out[split] = {"answers": replies, "correct": ok.tolist()}
        # Per answer token (EOS included, as trained): the penalisation profile's raw material.
        ids = [keyword_token_mask(scorer.fmt, it.answer)[0] for it in items]
        per_token = scorer.score_ids([scorer.fmt.encode(it.question).ids for it in items], ids).per_token
        out[split]["token_logprobs"] = [t.tolist() for t in per_token]
    return out


def loo(scorer: Scorer, items: list[Item]) -> list:
    """LOO attributions of the gold answers of ``items``."""
    return loo_attributions(scorer, [it.question for it in items], [it.answer for it in items])


def attribution_rows(attributions: list, alpha: float, beta: int) -> list[dict]:
    """Attributions as stored: contributions, KeyTokens and the question words holding them."""
    rows = []
    for attr in attributions:
        key = key_tokens(attr.contributions, alpha, beta)
        rows.append({"tokens": attr.tokens, "contributions": attr.contributions.tolist(), "lp": attr.lp,
                     "key": key, "keywords": keyword_words(attr, key)})
    return rows


def answer_tokens(scorer: Scorer, splits: dict[str, list[Item]]) -> dict[str, list[dict]]:
    """Per split and item, the gold answer's tokens and which of them belong to keywords."""
    roles = {s: [keyword_token_mask(scorer.fmt, it.answer) for it in splits[s]] for s in SPLITS}
    return {s: [{"tokens": scorer.fmt.token_strings(ids), "keyword": mask.tolist()} for ids, mask in r]
            for s, r in roles.items()}


def membership(scorer: Scorer, splits: dict[str, list[Item]]) -> dict[str, float] | None:
    """ROC AUC of each membership-inference attack telling the forget items (members: trained on,
    then unlearned) from the holdout items (never trained on), scored on the gold answers given
    the question. 0.5: indistinguishable, as for a model that never saw the forget set. None when
    the benchmark has no holdout split."""
    if not splits.get("holdout"):
        return None
    fmt, scores = scorer.fmt, {}
    full = scorer.capabilities.distribution  # Min-K%++ needs the whole next-token distribution
    for split in ("forget", "holdout"):
        items = splits[split]
        s = scorer.score_ids([fmt.encode(it.question).ids for it in items],
                             [fmt.encode_answer(it.answer) for it in items], distribution=full)
        scores[split] = {
            "loss": [loss_score(lp) for lp in s.per_token],
            "zlib": [zlib_score(lp, it.answer) for lp, it in zip(s.per_token, items, strict=True)],
            "min_k": [min_k_score(lp) for lp in s.per_token],
        }
        if full:
            scores[split]["min_k++"] = [min_k_plus_plus_score(lp, m, sd)
                                        for lp, m, sd in zip(s.per_token, s.mu, s.sigma, strict=True)]
    return {name: mia_auc(scores["forget"][name], scores["holdout"][name]) for name in scores["forget"]}


def attribution_quality(scorer: Scorer, items: list[Item], loo_forget: list, limit: int | None = None,
                        seed: int = 0) -> dict | None:
    """Which attribution to believe on this model: ERASER comprehensiveness/sufficiency of LOO
    (``loo_forget``, already computed) and integrated gradients on the forget ``items`` (a seeded
    sample of ``limit`` of them when given), IG's completeness gap, and their agreement (τ). None for a
    backend without the weights (IG needs them)."""
    if not (scorer.capabilities.weights and scorer.capabilities.hidden_states):
        return None
    if limit is not None and limit < len(items):
        rows = sorted(random.Random(seed).sample(range(len(items)), limit))
        items, loo_forget = [items[i] for i in rows], [loo_forget[i] for i in rows]
    qs, golds = [it.question for it in items], [it.answer for it in items]
    results = {"loo": loo_forget,
               "integrated_gradients": gradient_attributions(scorer, qs, golds, method="integrated_gradients")}
    out: dict = {}
    for name, attrs in results.items():
        rows = faithfulness(scorer, attrs, curve=False)
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in ("comprehensiveness", "sufficiency")}
    gaps = [a.relative_gap for a in results["integrated_gradients"] if a.relative_gap is not None]
    out["integrated_gradients"]["relative_gap_median"] = float(np.median(gaps)) if gaps else None
    taus = [t for t in agreement(results["loo"], results["integrated_gradients"]) if t is not None]
    out["kendall_tau_loo_ig"] = float(np.mean(taus)) if taus else None
    out["n_items"] = len(items)
    return out


def muse(scorer: Scorer, splits: dict[str, list[Item]], bench: Benchmark | None) -> dict | None:
    """MUSE's KnowMem and VerbMem generations, where the benchmark has ICL examples or VerbMem pairs."""
    return muse_raw(scorer, splits, bench.icl, bench.verbmem) if bench and (bench.icl or bench.verbmem) else None
