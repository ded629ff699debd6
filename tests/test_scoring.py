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


def test_generation_batches_by_its_own_size(tiny, monkeypatch):
    """``generate_batch_size`` sets the rows per generate call (greedy and sampled); scoring keeps
    ``batch_size``. Greedy answers do not depend on the batching."""
    import unpact.scoring as scoring
    from unpact.scoring import Scorer

    model, tok, fmt = tiny
    questions = [f"Where was person {i} born?" for i in range(10)]
    rows = []
    generate, greedy = type(model).generate, scoring._decode_batch
    monkeypatch.setattr(type(model), "generate", lambda self, **kw: rows.append(len(kw["input_ids"])) or generate(self, **kw))
    monkeypatch.setattr(scoring, "_decode_batch", lambda m, p, suffixes, *a: rows.append(len(suffixes)) or greedy(m, p, suffixes, *a))
    wide = Scorer(model, tok, fmt, batch_size=2, generate_batch_size=5)
    answers = wide.generate(questions, max_new_tokens=4)
    assert rows == [5, 5]
    rows.clear()
    wide.sample_ids([fmt.encode(q).ids for q in questions[:3]], n=3, temperature=1.0, top_p=1.0, top_k=0,
                    seed=0, max_new_tokens=4)
    assert sorted(rows) == [4, 5]
    rows.clear()
    assert Scorer(model, tok, fmt, batch_size=2).generate(questions, max_new_tokens=4) == answers
    assert rows == [2] * 5


def test_generation_stops_at_the_first_line_break_with_the_same_answers(tiny, benchmark, monkeypatch):
    """Answers are cut at their first line break, so generation stops there (a base model would go on
    writing its next "Question:"): greedy answers and seeded samples are what running all
    max_new_tokens gives, with fewer forward passes."""
    import copy
    from collections import Counter

    from unpact.scoring import Scorer, line_break_tokens

    model, tok, fmt = tiny
    model = copy.deepcopy(model)
    # an untied random output layer, so that each prompt's continuation is its own chain of tokens (the
    # tied one repeats the prompt's last token) and prompts ending in different tokens
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape,
                                                          generator=torch.Generator().manual_seed(0)))
    breaks = line_break_tokens(tok, model.get_output_embeddings().weight.shape[0])
    assert breaks.any() and [("\n" in tok.decode([i])) for i in range(len(tok))] == breaks[:len(tok)].tolist()
    prompts = [tok.encode(it.question, add_special_tokens=False)[:2 + i % 5]
               for i, it in enumerate(benchmark["forget"][:12])]
    # make the line break the model's choice wherever it would write one common token, as a base model
    # ends its answer line: the row of the break token becomes that token's row, a little larger
    rows = [model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=0)[0, len(p):].tolist()
            for p in prompts]
    first = {row[0] for row in rows}
    common = Counter(t for row in rows for t in row[1:] if t not in first).most_common(1)[0][0]
    nl = int(breaks.nonzero()[0])
    with torch.no_grad():
        model.lm_head.weight[nl] = model.lm_head.weight[common] * 1.05
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))

    def run(batch_size: int):
        calls.clear()
        scorer = Scorer(model, tok, fmt, batch_size=batch_size)
        greedy = scorer.generate_ids(prompts, max_new_tokens=12)
        passes = len(calls)
        samples = scorer.sample_ids(prompts, n=2, temperature=1.0, top_p=1.0, top_k=0, seed=5, max_new_tokens=12)
        return greedy, samples, passes

    stopping = {size: run(size) for size in (1, 6)}  # alone, and beside rows that go on
    # the reference: Hugging Face's generate writing every row to max_new_tokens
    monkeypatch.setattr("unpact.scoring._can_decode", lambda model: False)
    monkeypatch.setattr(Scorer, "_first_line_only", lambda self: None)
    for size, (greedy, samples, passes) in stopping.items():
        greedy_all, samples_all, passes_all = run(size)
        assert (greedy_all, samples_all) == (greedy, samples), size
        assert passes < passes_all if size == 1 else passes <= passes_all
    full = Scorer(model, tok, fmt, batch_size=6).generate_ids(prompts, max_new_tokens=12, raw=True)
    cut = [g for g, f in zip(stopping[6][0], full, strict=True) if "\n" in f.strip()]
    assert cut and any(cut)  # answers that were cut at a line break, some after a first word


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


def test_every_operation_runs_in_eval_mode_and_gives_the_training_mode_back(tiny, tiny_scorer):
    from unpact.attribution.gradients import gradient_attributions

    model, _, fmt = tiny
    modes = []
    hook = model.register_forward_hook(lambda module, *args: modes.append(module.training))
    prompts, answers = [fmt.encode("Who?").ids], [fmt.encode_answer("Ann")]
    model.train()
    try:
        tiny_scorer.score_ids(prompts, answers, distribution=True)
        tiny_scorer.score_with_prefixes(prompts, prompts, answers, [0], [1])
        tiny_scorer.generate_ids(prompts, max_new_tokens=2)
        tiny_scorer.sample_ids(prompts, n=2, temperature=1.0, top_p=1.0, top_k=0, seed=0, max_new_tokens=2)
        gradient_attributions(tiny_scorer, ["Who?"], ["Ann"], method="saliency")
        assert model.training  # given back after each
    finally:
        model.eval()
        hook.remove()
    assert modes and not any(modes)


def test_the_multi_process_split_gives_one_process_results(tiny, monkeypatch):
    """Every operation shares its items out through one helper (`distributed.map_shards`); with two
    processes faked in this one (contiguous halves, each run alone), the results are one process's:
    samples bit for bit (whole batches are shared out), scores up to float rounding (other batches)."""
    from unpact import distributed
    from unpact.scoring import Scorer

    model, tok, fmt = tiny
    scorer = Scorer(model, tok, fmt, batch_size=3)
    questions = ["Where was Marthe Bramley born?", "What is two plus three?", "Which day comes after Monday?",
                 "What is the opposite of hot?", "Who wrote the book?"]
    prompts = [fmt.encode(q).ids for q in questions]
    answers = [fmt.encode_answer(a) for a in ("Drennick", "five", "Tuesday", "cold", "Ann")]

    def run_all():
        return (scorer.score_ids(prompts, answers, distribution=True),
                scorer.score_with_prefixes(prompts, prompts, answers, list(range(5)), [2] * 5),
                scorer.generate_ids(prompts, max_new_tokens=4),
                scorer.sample_ids(prompts, n=2, temperature=1.0, top_p=1.0, top_k=0, seed=1, max_new_tokens=4))

    one = run_all()
    shares = []

    def map_shards(n, work):
        if distributed.world() == 1:
            return work(list(range(n)))
        out = []
        for share in (list(range((n + 1) // 2)), list(range((n + 1) // 2, n))):
            shares.append(share)
            with distributed.local():
                out += work(share)
        return out

    monkeypatch.setattr(distributed, "world", lambda: 1 if distributed._alone else 2)
    monkeypatch.setattr(distributed, "map_shards", map_shards)
    two = run_all()
    assert shares[:2] == [[0, 1, 2], [3, 4]]
    for a, b in zip(one[:2], two[:2], strict=True):
        np.testing.assert_allclose(a.mean, b.mean, atol=1e-5)
        for x, y in zip(a.per_token, b.per_token, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
    for x, y in zip(one[0].mu + one[0].sigma, two[0].mu + two[0].sigma, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert one[2:] == two[2:]
