"""The benchmarks' own metrics beside the dilemma rates, so unpact's numbers sit next to published ones.

Per model (original, each unlearned one, the retrained gold model) the study stores the raw material —
per-split TOFU probabilities and per-item truth ratios, scored by the one `Scorer` — and
`standard_metrics` turns it into TOFU's forget quality, forget-set truth ratio and model utility and
MUSE's PrivLeak, KnowMem and VerbMem: every metric registered in `unpact.evaluation.registry`. Forget
quality and PrivLeak compare with the gold model that never saw the forget set (`unpact prepare
--exclude forget`, or trained by the study for built-in models); without one they are null. Items
without perturbed answers have no truth ratio; the built-in benchmark has three per item and, like
TOFU's real-authors and world-facts sets, no paraphrased answer, so the gold answer stands in for the
paraphrase.
"""

from __future__ import annotations

import numpy as np

from ..data import Item
from ..data.benchmarks.muse import knowmem_answer, knowmem_prompt, knowmem_shots
from ..evaluation.registry import Material, compute_metrics
from ..evaluation.tofu_metrics import tofu_probability, truth_ratio
from ..scoring import Scorer

# MUSE's generation budgets (muse_bench eval.py): KnowMem answers and VerbMem continuations.
KNOWMEM_MAX_NEW_TOKENS = 32
VERBMEM_MAX_NEW_TOKENS = 128


def tofu_raw(scorer: Scorer, items: list[Item], with_perturbed_probability: bool) -> dict:
    """TOFU's probability of the gold answers (normalised against the perturbed ones when asked, as
    for TOFU's real-authors/world-facts sets) and the per-item truth ratios of ``items``."""
    fmt = scorer.fmt
    prompts = [fmt.encode(it.question).ids for it in items]
    true = scorer.score_ids(prompts, [fmt.encode_answer(it.answer) for it in items]).per_token
    usable = [i for i, it in enumerate(items) if it.perturbed_answers]
    flat = [(i, a) for i in usable for a in items[i].perturbed_answers]
    scored = scorer.score_ids([prompts[i] for i, _ in flat], [fmt.encode_answer(a) for _, a in flat]).per_token
    perturbed: dict[int, list[np.ndarray]] = {i: [] for i in usable}
    for (i, _), lps in zip(flat, scored, strict=True):
        perturbed[i].append(lps)
    ratios = truth_ratio([true[i] for i in usable], [perturbed[i] for i in usable]) if usable else np.empty(0)
    if with_perturbed_probability and usable:
        probability = tofu_probability([true[i] for i in usable], [perturbed[i] for i in usable])
    else:
        probability = tofu_probability(true) if items else None
    return {"probability": probability, "truth_ratios": ratios.tolist()}


def tofu_raw_splits(scorer: Scorer, splits: dict[str, list[Item]]) -> dict:
    """`tofu_raw` of the forget, retain and utility items (utility normalised against its perturbed answers)."""
    return {s: tofu_raw(scorer, splits[s], with_perturbed_probability=(s == "utility"))
            for s in ("forget", "retain", "utility") if splits.get(s)}


def muse_raw(scorer: Scorer, splits: dict[str, list[Item]], icl: list[Item],
             pairs: list[tuple[str, str]]) -> dict:
    """MUSE's KnowMem answers (forget and retain questions after the ICL demonstrations) and VerbMem
    continuations (of each forget-text prompt), greedy and without the chat template, as MUSE runs them.

    A model whose context is shorter than MUSE's prompts (the built-in one) gets what fits: KnowMem
    drops demonstrations from the front, VerbMem keeps the prompt's last tokens and generates at most
    half the context; both counts are recorded. The VerbMem reference is the true continuation cut to
    the generation budget in tokens, as MUSE cuts it.
    """
    fmt, out = scorer.fmt, {}
    context = scorer.max_length or 1 << 30
    if icl:
        out["knowmem"], out["knowmem_shots"] = {}, {}
        for split in ("forget", "retain"):
            shots, prompts = knowmem_shots(icl, split), []
            used = len(shots)
            for it in splits.get(split, []):
                k = len(shots)
                ids = fmt.encode_text(knowmem_prompt(shots, it.question))
                while k and len(ids) + KNOWMEM_MAX_NEW_TOKENS > context:
                    k -= 1
                    ids = fmt.encode_text(knowmem_prompt(shots[len(shots) - k:], it.question))
                prompts.append(ids)
                used = min(used, k)
            texts = scorer.generate_ids(prompts, KNOWMEM_MAX_NEW_TOKENS, raw=True) if prompts else []
            out["knowmem"][split] = [knowmem_answer(t) for t in texts]
            out["knowmem_shots"][split] = used
    if pairs:
        budget = min(VERBMEM_MAX_NEW_TOKENS, context // 2)
        room = context - budget - len(fmt.text_bos)
        prompts, references, cut = [], [], 0
        for prompt, truth in pairs:
            ids = fmt.encode_text(prompt)
            if len(ids) > context - budget:
                ids, cut = fmt.text_bos + ids[len(ids) - room:], cut + 1
            prompts.append(ids)
            references.append(fmt.tokenizer.decode(fmt.encode_text(truth)[len(fmt.text_bos):][:budget]))
        out["verbmem"] = {"continuations": scorer.generate_ids(prompts, budget, raw=True), "references": references,
                          "max_new_tokens": budget, "prompts_cut": cut}
    return out


def standard_metrics(raw: dict, answers: dict, splits: dict[str, list[Item]], mia: dict | None,
                     gold: dict | None, muse: dict | None = None, original_muse: dict | None = None) -> dict:
    """TOFU and MUSE numbers of one model from its stored raw material: every metric registered in
    `unpact.evaluation.registry` (one module per benchmark; a new metric is a new registered function).

    ``raw``: `tofu_raw_splits`; ``answers``: {split: {"answers": [...]}} (greedy); ``mia``: the model's
    membership AUCs; ``gold``: the gold model's {"tofu": raw, "mia_auc": ...} or None; ``muse`` and
    ``original_muse``: `muse_raw` of this model and of the original one (for utility preserved).

    ``missing`` beside the benchmarks' sections maps every null metric (``"tofu.forget.truth_ratio"``)
    to why it is null (`unpact.evaluation.registry.compute_metrics`), so a report can say it; metrics
    left out altogether (MUSE's own on another benchmark) are not listed, as nothing shows them.
    """
    values, why = compute_metrics(Material(tofu=raw, answers=answers, items=splits, mia=mia, gold=gold, muse=muse,
                                           original_muse=original_muse))
    return {**values, "missing": {where: reason for where, reason in why.items() if _is_null(values, where)}}


def _is_null(values: dict, where: str) -> bool:
    """Whether the metric at dotted path ``where`` is there and null (not left out)."""
    *sections, key = where.split(".")
    for name in sections:
        values = values.get(name) or {}
    return key in values and values[key] is None
