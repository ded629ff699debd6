import numpy as np
import pytest
import torch

from unpact.errors import UnpactError


def reference_logprobs(model, prompt_ids, answer_ids):
    """log p(y_k | x ⊕ y_<k) from one unpadded forward pass, written independently of unpact.scoring."""
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(prompt_ids)
    return np.array([logp[start + k - 1, tok].item() for k, tok in enumerate(answer_ids)])


def test_lp_matches_independent_computation(tiny, tiny_scorer):
    model, _, fmt = tiny
    questions = ["Where was Marthe Bramley born?", "What is the opposite of hot?",
                 "Which instrument does Arwen Oakby play at the festival every summer?"]
    answers = ["Drennick", "cold", "the harp and the lute"]
    scores = tiny_scorer.score(questions, answers)
    for q, a, mean, per_token in zip(questions, answers, scores.mean, scores.per_token, strict=True):
        ref = reference_logprobs(model, fmt.encode(q).ids, fmt.encode_answer(a))
        np.testing.assert_allclose(per_token, ref, atol=1e-4)
        assert mean == pytest.approx(ref.mean(), abs=1e-4)
    # log-probs of a sharpened random model are far from 0: the check above is not vacuous
    assert all(m < -0.5 for m in scores.mean)


def test_batched_generation_equals_one_at_a_time(tiny, tiny_scorer):
    model, tok, fmt = tiny
    from unpact.scoring import Scorer

    questions = ["Where was Marthe Bramley born?", "What is two plus three?", "Which day comes after Monday?"]
    batched = tiny_scorer.generate(questions, max_new_tokens=6)
    single = [Scorer(model, tok, fmt, batch_size=1).generate([q], max_new_tokens=6)[0] for q in questions]
    assert batched == single
    assert any(batched)


def test_prompt_past_context_is_a_clear_error(tiny_scorer):
    with pytest.raises(UnpactError, match="past the model's context"):
        tiny_scorer.score(["word " * 400], ["x"])


def test_question_span_is_the_question(tiny):
    _, tok, fmt = tiny
    enc = fmt.encode("Where was Marthe Bramley born?")
    assert tok.decode(enc.question_ids).strip() == "Where was Marthe Bramley born?"
    assert "Question:" in tok.decode(enc.ids[: enc.span[0]])


def test_distribution_stats_match_the_full_next_token_distribution(tiny, tiny_scorer):
    """Min-K%++'s μ_t = Σ_v p_v log p_v and σ_t² = Σ_v p_v (log p_v)² − μ_t², from one unpadded pass."""
    model, _, fmt = tiny
    questions, answers = ["Where was Marthe Bramley born?", "What is two plus three?"], ["Drennick", "five"]
    plain = tiny_scorer.score(questions, answers)
    prompts = [fmt.encode(q).ids for q in questions]
    golds = [fmt.encode_answer(a) for a in answers]
    full = tiny_scorer.score_ids(prompts, golds, distribution=True)
    assert plain.mu is None and plain.sigma is None
    for p, a, lp, lp_full, mu, sigma in zip(prompts, golds, plain.per_token, full.per_token, full.mu, full.sigma,
                                            strict=True):
        np.testing.assert_allclose(lp_full, lp, atol=1e-5)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0].double(), dim=-1)
        rows = logp[len(p) - 1:len(p) - 1 + len(a)]
        ref_mu = (rows.exp() * rows).sum(-1).numpy()
        ref_sigma = np.sqrt((rows.exp() * rows.square()).sum(-1).numpy() - ref_mu ** 2)
        np.testing.assert_allclose(mu, ref_mu, atol=1e-4)
        np.testing.assert_allclose(sigma, ref_sigma, atol=1e-4)
        assert (sigma > 0.01).all()  # a sharpened random model: not a point mass, the check bites
