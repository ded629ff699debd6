
"""Ablation modes, features, gradient methods and faithfulness, each against a reference computed here
independently of unpact.scoring (one unpadded sequence at a time)."""

import copy

import numpy as np
import pytest
import torch

from unpact.attribution import (
    Attribution,
    agreement,
    faithfulness,
    gradient_attributions,
    integration_nodes,
    kendall_tau,
    loo_attributions,
)
from unpact.attribution.faithfulness import comprehensiveness, curve_area, sufficiency, top_k
from unpact.attribution.gradients import GRADIENT_METHODS, _shared_prefix
from unpact.errors import UnpactError
from unpact.scoring import Scorer, _cache_layout

QUESTIONS = ["Where was Marthe Bramley born?", "What is the opposite of hot?"]  # different lengths: padding
ANSWERS = ["Drennick", "cold"]


def ref_logprobs(model, ids, answer, attention=None, embeds=None):
    """Per-answer-token log-probs of one unpadded sequence; positions 0..L-1 whatever the mask."""
    seq = torch.tensor([ids + answer])
    mask = torch.ones_like(seq) if attention is None else torch.tensor([attention + [1] * len(answer)])
    kw = {"inputs_embeds": embeds} if embeds is not None else {"input_ids": seq}
    logits = model(**kw, attention_mask=mask, position_ids=torch.arange(seq.shape[1])[None]).logits[0]
    logp = torch.log_softmax(logits.double(), -1)[len(ids) - 1:-1]
    return logp.gather(-1, torch.tensor(answer)[:, None])[:, 0]


def ref_lp(model, ids, answer, attention=None):
    with torch.no_grad():
        return ref_logprobs(model, ids, answer, attention).mean().item()


@pytest.mark.parametrize("ablation", ["delete", "replace", "mask"])
def test_word_ablation_equals_reference(tiny, tiny_scorer, ablation):
    model, tok, fmt = tiny
    attrs = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, ablation=ablation, features="words",
                             baseline_id=5, per_answer_token=True)
    first = attrs[0]
    assert first.labels == [" Where", " was", " Marthe", " Bramley", " born", "?"]
    assert sorted(i for g in first.feature_groups for i in g) == list(range(len(first.tokens)))
    assert first.method == f"loo_{ablation}"
    for q, a, attr in zip(QUESTIONS, ANSWERS, attrs, strict=True):
        enc, ans = fmt.encode(q), fmt.encode_answer(a)
        s, e = enc.span
        full = ref_lp(model, enc.ids, ans)
        expected = []
        for g in attr.feature_groups:
            pos = {s + j for j in g}
            if ablation == "delete":
                lp = ref_lp(model, [t for i, t in enumerate(enc.ids) if i not in pos], ans)
            elif ablation == "replace":
                lp = ref_lp(model, [5 if i in pos else t for i, t in enumerate(enc.ids)], ans)
            else:
                lp = ref_lp(model, enc.ids, ans, [0 if i in pos else 1 for i in range(len(enc.ids))])
            expected.append(full - lp)
        np.testing.assert_allclose(attr.contributions, expected, atol=2e-5)
        assert attr.lp == pytest.approx(full, abs=2e-5)
        assert np.abs(attr.contributions).max() > 1e-3
        # the per-answer-token matrix averages to the contribution of LP
        assert attr.per_answer_token.shape == (len(attr.feature_groups), len(ans))
        np.testing.assert_allclose(attr.per_answer_token.mean(1), attr.contributions, atol=1e-6)


def test_mask_hides_the_token_completely(tiny, tiny_scorer):
    # Under mask ablation, what the hidden token is does not matter: swap its id, same LP.
    _, _, fmt = tiny
    enc = fmt.encode(QUESTIONS[0])
    ans = fmt.encode_answer(ANSWERS[0])
    i = enc.span[0] + 2
    other = list(enc.ids)
    other[i] = 7
    lp = tiny_scorer.score_ids([enc.ids, other, enc.ids], [ans] * 3, hidden=[[i], [i], []]).mean
    assert lp[0] == pytest.approx(lp[1], abs=1e-6)
    assert abs(lp[0] - lp[2]) > 1e-4


def test_replace_defaults_to_pad_and_sum_target(tiny, tiny_scorer):
    _, tok, _ = tiny
    pad = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, ablation="replace", target="sum")
    explicit = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, ablation="replace", baseline_id=tok.pad_token_id)
    for p, m, a in zip(pad, explicit, ANSWERS, strict=True):
        n = len(tiny[2].encode_answer(a))
        np.testing.assert_allclose(p.contributions, m.contributions * n, atol=1e-5)  # sum = T · mean
        assert p.target == "sum" and p.to_dict()["target"] == "sum"


def test_default_loo_keeps_the_original_format(tiny_scorer):
    (attr,) = loo_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1])
    assert attr.method == "loo_delete" and attr.feature_labels is None and attr.groups is None
    assert set(attr.to_dict()) == {"question", "answer", "method", "tokens", "contributions", "lp", "ablated_lp"}
    assert attr.labels == attr.tokens


def test_user_spans(tiny_scorer):
    q = QUESTIONS[0]
    start = q.index("Marthe Bramley")
    spans = [[(start, start + len("Marthe Bramley")), (0, 5)], None]
    attrs = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, spans=spans)
    assert attrs[0].labels == ["Marthe Bramley", "Where"]
    assert attrs[0].feature_groups == [[2, 3, 4, 5, 6], [0]]
    words = loo_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1], features="words")[0]
    tokens = loo_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1])[0]
    assert attrs[0].contributions[1] == pytest.approx(words.contributions[0], abs=1e-6)
    assert attrs[0].contributions[1] == pytest.approx(tokens.contributions[0], abs=1e-6)
    assert attrs[1].feature_labels is None and len(attrs[1].contributions) == len(attrs[1].tokens)
    with pytest.raises(UnpactError, match="not a non-empty range"):
        loo_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1], spans=[[(5, 500)]])
    with pytest.raises(UnpactError, match="unknown ablation"):
        loo_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1], ablation="drop")


def test_json_round_trip(tiny_scorer):
    for attr in (loo_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1], features="words", per_answer_token=True)[0],
                 gradient_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1], steps=4, baseline_id=50)[0]):
        back = Attribution.from_dict(attr.to_dict())
        np.testing.assert_allclose(back.contributions, attr.contributions)
        assert back.to_dict() == attr.to_dict()


def reference_gradients(model, fmt, question, answer):
    """∂LP/∂e and e of the question tokens, from one unpadded forward pass."""
    enc, ans = fmt.encode(question), fmt.encode_answer(answer)
    e = model.get_input_embeddings()(torch.tensor([enc.ids + ans])).detach().requires_grad_(True)
    lp = ref_logprobs(model, enc.ids, ans, embeds=e).mean()
    (g,) = torch.autograd.grad(lp, e)
    s, t = enc.span
    return g[0, s:t].double().numpy(), e[0, s:t].detach().double().numpy()


def test_saliency_and_input_x_gradient_equal_reference(tiny, tiny_scorer):
    model, _, fmt = tiny
    sal = gradient_attributions(tiny_scorer, QUESTIONS, ANSWERS, method="saliency")
    ixg = gradient_attributions(tiny_scorer, QUESTIONS, ANSWERS, method="input_x_gradient")
    for q, a, s, x in zip(QUESTIONS, ANSWERS, sal, ixg, strict=True):
        g, e = reference_gradients(model, fmt, q, a)
        np.testing.assert_allclose(s.contributions, np.linalg.norm(g, axis=1), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(x.contributions, (g * e).sum(1), rtol=1e-3, atol=1e-6)
        assert s.ablated_lp is None and s.completeness_gap is None
        assert s.lp == pytest.approx(ref_lp(model, fmt.encode(q).ids, fmt.encode_answer(a)), abs=1e-5)
    words = gradient_attributions(tiny_scorer, QUESTIONS[:1], ANSWERS[:1], method="input_x_gradient", features="words")[0]
    assert words.contributions[2] == pytest.approx(ixg[0].contributions[2:5].sum(), abs=1e-9)


def test_integration_nodes():
    for rule in ("gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right"):
        a, w = integration_nodes(6, rule)
        assert w.sum() == pytest.approx(1) and a.min() >= 0 and a.max() <= 1
    a, w = integration_nodes(2, "gausslegendre")  # exact up to degree 3
    assert (w * a ** 3).sum() == pytest.approx(0.25)
    with pytest.raises(UnpactError, match="unknown integration rule"):
        integration_nodes(4, "simpson")


def test_integrated_gradients_completeness_and_convergence(tiny, tiny_scorer):
    model, tok, fmt = tiny
    base = 50  # a trained-like (non-zero) token embedding; see the zero-pad test below
    kw = {"baseline_id": base}
    coarse = gradient_attributions(tiny_scorer, QUESTIONS, ANSWERS, steps=2, **kw)
    fine = gradient_attributions(tiny_scorer, QUESTIONS, ANSWERS, steps=16, **kw)
    riemann = gradient_attributions(tiny_scorer, QUESTIONS, ANSWERS, steps=48, rule="riemann_middle", **kw)
    summed = gradient_attributions(tiny_scorer, QUESTIONS, ANSWERS, steps=16, target="sum", **kw)
    for q, a, c, f, r, s in zip(QUESTIONS, ANSWERS, coarse, fine, riemann, summed, strict=True):
        enc, ans = fmt.encode(q), fmt.encode_answer(a)
        lo, hi = enc.span
        fx = ref_lp(model, enc.ids, ans)
        fb = ref_lp(model, enc.ids[:lo] + [base] * (hi - lo) + enc.ids[hi:], ans)
        assert f.lp == pytest.approx(fx, abs=1e-5) and f.f_baseline == pytest.approx(fb, abs=1e-5)
        # the reported gap is what it says, and a converged integral closes it
        assert f.completeness_gap == pytest.approx(abs(f.contributions.sum() - (fx - fb)), abs=1e-5)
        assert f.relative_gap == pytest.approx(f.completeness_gap / abs(fx - fb), rel=1e-3)
        assert f.relative_gap < 1e-3 and c.completeness_gap > 10 * f.completeness_gap
        np.testing.assert_allclose(r.contributions, f.contributions, atol=1e-3 * np.abs(f.contributions).max())
        np.testing.assert_allclose(s.contributions, f.contributions * len(ans), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradients_with_the_shared_prefix_run_once_equal_whole_sequences(tiny, tiny_scorer, method):
    # With prefix_reuse the prompts' common opening (BOS, "Question:") runs once, without gradients, and
    # every row runs from there on: the same attributions as whole sequences, to float rounding.
    # Answers of one to several tokens and batches of 7 rows put rows of different items, lengths and
    # answer lengths in one batch.
    model, _, fmt = tiny
    questions = QUESTIONS + ["Which river flows through the old capital city?"]
    answers = ANSWERS + ["The long one, I think."]
    encoded = [fmt.encode(q) for q in questions]
    # the path under test is taken: a prefix is shared and the model's cache can hold it
    assert _shared_prefix([e.ids for e in encoded], [range(*e.span) for e in encoded]) > 0
    assert _cache_layout(model, 64) is not None
    for target in ("mean", "sum"):
        kw = {"method": method, "steps": 5, "target": target, "baseline_id": 50}
        reused = gradient_attributions(tiny_scorer, questions, answers, **kw)
        whole = gradient_attributions(tiny_scorer, questions, answers, prefix_reuse=False, **kw)
        for r, w in zip(reused, whole, strict=True):
            np.testing.assert_allclose(r.contributions, w.contributions, rtol=1e-4, atol=1e-7)
            assert r.lp == pytest.approx(w.lp, abs=1e-6)
            if method == "integrated_gradients":
                assert r.completeness_gap == pytest.approx(w.completeness_gap, abs=1e-6)


def test_gradient_attributions_of_no_items(tiny_scorer):
    assert gradient_attributions(tiny_scorer, [], []) == []


def test_zero_pad_embedding_baseline_warns(tiny):
    # A Llama built with padding_idx = pad keeps that embedding row at zero, so its "pad baseline" is a
    # zero baseline, under which RMSNorm makes F a step at α ≈ 0 — IG converges badly. unpact says
    # so, and the completeness gap shows it. (The built-in model is built without padding_idx.)
    model, tok, fmt = tiny
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.get_input_embeddings().weight[tok.pad_token_id] = 0
    scorer = Scorer(zeroed, tok, fmt)
    with pytest.warns(UserWarning, match="all zeros"):
        (zero,) = gradient_attributions(scorer, QUESTIONS[:1], ANSWERS[:1], steps=16)
    (real,) = gradient_attributions(scorer, QUESTIONS[:1], ANSWERS[:1], steps=16, baseline_id=50)
    assert zero.relative_gap > 100 * real.relative_gap


def test_faithfulness_plain_functions():
    scores = [0.1, 0.5, -0.2, 0.3, 0.0, 0.05, 0.2, 0.15, 0.25, -0.1]
    assert top_k(scores, 0.1) == [1] and top_k(scores, 0.2) == [1, 3] and len(top_k(scores, 0.5)) == 5
    assert top_k([1.0, 2.0], 0.1) == [1]
    assert comprehensiveness(-1.0, [-2.0, -3.0, -4.0]) == pytest.approx(2.0)
    assert sufficiency(-1.0, [-1.5, -1.0, -0.5]) == pytest.approx(0.0)
    assert curve_area([0, -1, -2]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 1], [1, 2]) is None and kendall_tau([1], [2]) is None


def test_faithfulness_through_the_scorer(tiny, tiny_scorer):
    model, _, fmt = tiny
    attrs = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, features="words")
    rows = faithfulness(tiny_scorer, attrs)
    for attr, row in zip(attrs, rows, strict=True):
        enc, ans = fmt.encode(attr.question), fmt.encode_answer(attr.answer)
        s, e = enc.span

        def without(tokens, enc=enc, s=s, ans=ans):
            return ref_lp(model, [t for i, t in enumerate(enc.ids) if i - s not in set(tokens)], ans)

        groups = attr.feature_groups
        for k, frac in enumerate((0.1, 0.2, 0.5)):
            top = [t for f in top_k(attr.contributions, frac) for t in groups[f]]
            assert row["without_top"][k] == pytest.approx(without(top), abs=2e-5)
            assert row["only_top"][k] == pytest.approx(without(sorted(set(range(e - s)) - set(top))), abs=2e-5)
        assert row["comprehensiveness"] == pytest.approx(np.mean(row["lp"] - np.array(row["without_top"])))
        curve = row["deletion_curve"]
        assert len(curve) == len(groups) + 1
        assert curve[0] == pytest.approx(attr.lp, abs=1e-6)
        assert curve[-1] == pytest.approx(without(range(e - s)), abs=2e-5)
        # deleting the single top feature costs exactly its own LOO contribution
        assert curve[0] - curve[1] == pytest.approx(attr.contributions.max(), abs=1e-5)
    # LOO explains LOO-deletion better than a reversed ranking would
    reversed_attrs = [Attribution(a.question, a.answer, a.tokens, -a.contributions, a.lp, None,
                                  feature_labels=a.feature_labels, groups=a.groups) for a in attrs]
    assert all(f["comprehensiveness"] > r["comprehensiveness"]
               for f, r in zip(rows, faithfulness(tiny_scorer, reversed_attrs, curve=False), strict=True))
    taus = agreement(attrs, reversed_attrs)
    assert taus == [pytest.approx(-1.0)] * 2


def test_attribution_quality_reads_a_seeded_sample_when_capped(tiny_scorer, benchmark):
    """``attribution.quality_items`` caps the integrated-gradients check to a seeded sample of the forget
    items: the same numbers as the check run on exactly those items, and the count is recorded."""
    import random

    from unpact.study import measure

    items = benchmark["forget"][:6]
    loo = measure.loo(tiny_scorer, items)
    capped = measure.attribution_quality(tiny_scorer, items, loo, limit=3, seed=5)
    rows = sorted(random.Random(5).sample(range(6), 3))
    direct = measure.attribution_quality(tiny_scorer, [items[i] for i in rows], [loo[i] for i in rows])
    assert capped == direct and capped["n_items"] == 3
    assert measure.attribution_quality(tiny_scorer, items, loo)["n_items"] == 6
