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
