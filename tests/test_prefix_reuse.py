"""Shared-prefix key/value reuse (`Scorer.score_with_prefixes`, ``loo_attributions(prefix_reuse=True)``)
gives the plain path's scores: every ablation runs from its first changed token on, on top of the
intact prompt's cached prefix."""

import numpy as np
import pytest

import unpact.scoring
from unpact.attribution import loo_attributions
from unpact.scoring import Scorer

QUESTIONS = ["What is the opposite of hot?", "Where was Marthe Bramley born?",
             "Which instrument does Arwen Oakby play at the festival every summer?"]
ANSWERS = ["cold", "Drennick", "the harp and the lute"]


def assert_same(reused, plain):
    for r, p in zip(reused, plain, strict=True):
        assert r.lp == pytest.approx(p.lp, abs=1e-5)
        np.testing.assert_allclose(r.contributions, p.contributions, atol=1e-5)
        np.testing.assert_allclose(r.ablated_lp, p.ablated_lp, atol=1e-5)
        if p.per_answer_token is not None:
            np.testing.assert_allclose(r.per_answer_token, p.per_answer_token, atol=1e-5)
        assert r.tokens == p.tokens and r.groups == p.groups


@pytest.mark.parametrize("features", ["tokens", "words"])
@pytest.mark.parametrize("ablation", ["replace", "mask", "delete"])
def test_loo_with_prefix_reuse_equals_plain(tiny_scorer, ablation, features):
    kw = dict(ablation=ablation, features=features, per_answer_token=True)
    reused = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, prefix_reuse=True, **kw)
    plain = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, prefix_reuse=False, **kw)
    assert_same(reused, plain)
    # every prompt's first question token is ablated (its prefix is the template alone), and the
    # ablations really move the scores, so equality is not vacuous
    assert all(p.feature_groups[0] == [0] for p in plain)
    assert max(np.abs(p.contributions).max() for p in plain) > 1e-3


@pytest.mark.parametrize("batch_size, ablation, n", [(1, "replace", 2), (3, "mask", 3)])
def test_batches_smaller_than_the_ablations(tiny, batch_size, ablation, n):
    model, tok, fmt = tiny
    small = Scorer(model, tok, fmt, batch_size=batch_size)  # also chunks of fewer bases than prompts
    reused = loo_attributions(small, QUESTIONS[:n], ANSWERS[:n], ablation=ablation, prefix_reuse=True)
    plain = loo_attributions(small, QUESTIONS[:n], ANSWERS[:n], ablation=ablation, prefix_reuse=False)
    assert_same(reused, plain)


def test_features_late_in_a_long_prompt(tiny_scorer):
    # a context paragraph before the question, attributed only on the question's words (user spans)
    context = "Marthe Bramley was born in Drennick. Arwen Oakby plays the harp. "
    qs = [context + q for q in QUESTIONS]
    spans = [[(m, m + len(w)) for m, w in _words(q, len(context.strip()) + 1)] for q in qs]
    reused = loo_attributions(tiny_scorer, qs, ANSWERS, spans=spans, ablation="replace", per_answer_token=True)
    plain = loo_attributions(tiny_scorer, qs, ANSWERS, spans=spans, ablation="replace", per_answer_token=True,
                             prefix_reuse=False)
    assert_same(reused, plain)


def _words(text, start):
    """(offset, word) of the space-separated words of text.strip() from character ``start`` on."""
    text, out, i = text.strip(), [], start
    for w in text[start:].split(" "):
        out.append((i, w))
        i += len(w) + 1
    return out


def prefixed_case(tiny_scorer):
    """Bases, and sequences that share 0 … len(base) tokens with them (mixed in one call)."""
    fmt = tiny_scorer.fmt
    bases = [fmt.encode(q).ids for q in QUESTIONS]
    prompts, answers, base_of, shared, hidden = [], [], [], [], []
    for b, ids in enumerate(bases):
        for k in (0, 1, len(ids) // 2, len(ids) - 1, len(ids)):
            prompts.append(ids[:k] + [tiny_scorer.pad_id] * (b + 1) + ids[k + 1:])  # changed from k on
            answers.append(fmt.encode_answer(ANSWERS[(b + k) % len(ANSWERS)]))
            base_of.append(b)
            shared.append(k)
            hidden.append([k] if k < len(ids) else [])
    return bases, prompts, answers, base_of, shared, hidden


@pytest.mark.parametrize("layout", ["model", "no_config", "unsupported"])
def test_score_with_prefixes_equals_score_ids(tiny_scorer, monkeypatch, layout):
    if layout != "model":  # a cache built without the config, and the fallback to score_ids
        monkeypatch.setattr(unpact.scoring, "_cache_layout", lambda model, n: False if layout == "no_config" else None)
    bases, prompts, answers, base_of, shared, hidden = prefixed_case(tiny_scorer)
    for hide in (None, hidden):
        got = tiny_scorer.score_with_prefixes(bases, prompts, answers, base_of, shared, hide)
        want = tiny_scorer.score_ids(prompts, answers, hide)
        np.testing.assert_allclose(got.mean, want.mean, atol=1e-5)
        for g, w in zip(got.per_token, want.per_token, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5)


def test_score_with_prefixes_refuses_a_wrong_prefix(tiny_scorer):
    bases, prompts, answers, base_of, shared, hidden = prefixed_case(tiny_scorer)
    with pytest.raises(ValueError, match="does not start with"):
        tiny_scorer.score_with_prefixes(bases, prompts, answers, base_of, [k + 1 for k in shared])
    with pytest.raises(ValueError, match="hides a position inside"):
        tiny_scorer.score_with_prefixes(bases, prompts, answers, base_of, shared, [[0]] * len(prompts))
    assert tiny_scorer.score_with_prefixes(bases, [], [], [], []).mean.size == 0


def test_the_public_prefix_cache_is_what_gradient_attribution_computed_inline(tiny_scorer, monkeypatch):
    """`Scorer.prefix_cache` and `Scorer.forward_embeds` (what `unpact.attribution.gradients` uses)
    give bit for bit what it computed before from the private helpers: the shared prefix's keys/values
    [P, heads, d], expanded to every row, the attention mask lengthened by P ones. The cached forward
    also equals running the whole sequences, up to float rounding."""
    import torch
    from transformers import DynamicCache

    from unpact.attribution.gradients import _shared_prefix
    from unpact.scoring import _cache_layout, _prefix_kv

    model, fmt, pad = tiny_scorer.model, tiny_scorer.fmt, tiny_scorer.pad_id
    encoded = [fmt.encode(q) for q in QUESTIONS]
    prompts, answers = [e.ids for e in encoded], [fmt.encode_answer(a) for a in ANSWERS]
    P = _shared_prefix(prompts, [range(*e.span) for e in encoded])
    max_len = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
    prefix = tiny_scorer.prefix_cache(prompts[0][:P], max_len)
    with_config = _cache_layout(model, max_len)
    assert P > 0 and with_config is not None and prefix is not None
    kv, L = _prefix_kv(model, [prompts[0][:P]], pad, with_config, tiny_scorer.device)
    assert (prefix.length, prefix.with_config) == (L, with_config) == (P, with_config)
    assert len(prefix.kv) == len(kv) and all(torch.equal(a, b) for la, lb in zip(prefix.kv, kv, strict=True)
                                             for a, b in zip(la, lb, strict=True))

    seqs = [p + a[:-1] for p, a in zip(prompts, answers, strict=True)]  # as gradients.py runs them

    def left_padded(rows):
        ids, mask = torch.full((B, max(map(len, rows))), pad), torch.zeros(B, max(map(len, rows)), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, ids.shape[1] - len(row):], mask[r, ids.shape[1] - len(row):] = torch.tensor(row), 1
        return ids, mask

    B, T = len(seqs), max(map(len, answers))
    ids, mask = left_padded([s[P:] for s in seqs])  # [B, S]: what runs after the cached prefix
    whole_ids, whole_mask = left_padded(seqs)  # [B, P + S]
    emb = model.get_input_embeddings()
    with torch.no_grad():
        suffix = emb(ids)
        position_ids = P + (mask.cumsum(1) - 1).clamp(min=0)
        got = tiny_scorer.forward_embeds(suffix, mask, position_ids, T, prefix)
        layers = [tuple(x.transpose(0, 1)[None].expand(B, -1, -1, -1) for x in layer) for layer in kv]
        cache = DynamicCache(layers, config=model.config) if with_config else DynamicCache(layers)
        inline = model(inputs_embeds=suffix, attention_mask=torch.cat([torch.ones(B, P, dtype=mask.dtype), mask], 1),
                       position_ids=position_ids, cache=cache, use_cache=True, logits_to_keep=T).logits
        whole = tiny_scorer.forward_embeds(emb(whole_ids), whole_mask, (whole_mask.cumsum(1) - 1).clamp(min=0), T)
    assert got.shape == (B, T, emb.weight.shape[0]) and torch.equal(got, inline)
    torch.testing.assert_close(got, whole, atol=1e-5, rtol=1e-5)

    assert tiny_scorer.prefix_cache([], max_len) is None  # nothing to reuse
    monkeypatch.setattr(unpact.scoring, "_cache_layout", lambda model, n: None)
    assert tiny_scorer.prefix_cache(prompts[0][:P], max_len) is None  # a cache the model cannot lay out
