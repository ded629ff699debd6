"""The study-speed paths of the scoring engine give the answers of the plain ones: greedy decoding that
drops finished rows and reuses the prompts' shared opening, scoring and sampling behind a cached
opening, one generation per prompt that recurs, and control attacks without do-no-harm runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import unpact.scoring as scoring
from unpact.scoring import Scorer, common_prefix
from unpact.timing import Recorder, stage


@pytest.fixture(scope="module")
def chatty(tiny, benchmark):
    """The tiny model with an untied random output layer (each prompt continues in its own way, and
    rows stop at different steps), a scorer on it, and prompts that share a long opening (as a chat
    template's system turn does) or only the plain template's three tokens."""
    model, tok, fmt = tiny
    model = copy.deepcopy(model)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape,
                                                          generator=torch.Generator().manual_seed(3)))
    # prompts cut at different points end in different tokens, so their continuations differ
    preamble = fmt.encode(" ".join(f"{it.question} {it.answer}." for it in benchmark["retain"][:3])).ids
    opening = fmt.encode("x").ids[:len(common_prefix([fmt.encode("a").ids, fmt.encode("b").ids]))]
    cut = [tok.encode(it.question, add_special_tokens=False)[:2 + i % 6] for i, it in enumerate(benchmark["retain"][10:60])]
    cut = [list(c) for c in dict.fromkeys(map(tuple, cut))][:30]  # each once
    plain = [opening + c for c in cut]
    shared = [preamble + c for c in cut]
    return model, tok, fmt, plain, shared


def _reference(monkeypatch, fn):
    """``fn()`` on the plain paths: Hugging Face's generate, whole sequences, no cached opening."""
    with monkeypatch.context() as m:
        m.setattr(scoring, "_can_decode", lambda model: False)
        m.setattr(scoring, "common_prefix", lambda seqs: [])
        return fn()


@pytest.mark.parametrize("which", ["plain", "shared"])
@pytest.mark.parametrize("raw", [False, True])
def test_greedy_decoding_gives_generates_answers(chatty, monkeypatch, which, raw):
    model, tok, fmt, plain, shared = chatty
    prompts = plain if which == "plain" else shared
    scorer = Scorer(model, tok, fmt, batch_size=7)
    ours = scorer.generate_ids(prompts, max_new_tokens=10, raw=raw)
    theirs = _reference(monkeypatch, lambda: scorer.generate_ids(prompts, max_new_tokens=10, raw=raw))
    assert ours == theirs
    assert len(set(ours)) > 5  # not one answer for all: the comparison means something


def test_finished_rows_leave_the_batch_and_the_opening_is_computed_once(chatty, monkeypatch):
    model, tok, fmt, _, shared = chatty
    scorer = Scorer(model, tok, fmt, batch_size=30)
    P = len(common_prefix(shared))
    assert P > 40
    with Recorder(model_time=True) as rec, stage("ours"):
        ours = scorer.generate_ids(shared, max_new_tokens=10)
    with Recorder(model_time=True) as ref, stage("theirs"):
        theirs = _reference(monkeypatch, lambda: scorer.generate_ids(shared, max_new_tokens=10))
    assert ours == theirs
    fed = sum(len(p) for p in shared)
    # Hugging Face: every prompt token, then every row at every step until the last row stops
    assert ref.table()["theirs"]["infer_tokens"] >= fed + len(shared)
    # ours: the opening once, each prompt's own tokens, and only the rows still writing
    written = sum(len(tok.encode(a, add_special_tokens=False)) for a in ours)
    assert rec.table()["ours"]["infer_tokens"] <= P + (fed - len(shared) * P) + written + 2 * len(shared)
    assert rec.table()["ours"]["infer_tokens"] < ref.table()["theirs"]["infer_tokens"] / 2


def test_scoring_behind_a_cached_opening_equals_scoring_whole_sequences(chatty):
    model, tok, fmt, plain, shared = chatty
    scorer = Scorer(model, tok, fmt, batch_size=8)
    answers = [fmt.encode_answer(w) for w in ["Paris", "a florist in Lyon", "blue", "1984"] * 8][:len(shared)]
    ours = scorer.score_ids(shared, answers)
    theirs = scorer._score_plain(shared, answers)
    np.testing.assert_allclose(ours.mean, theirs.mean, atol=1e-5)
    for a, b in zip(ours.per_token, theirs.per_token, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # and it is the cached path that ran: its forward sees only the prompts' own tokens
    with Recorder(model_time=True) as rec, stage("s"):
        scorer.score_ids(shared, answers)
    whole = sum(len(p) + len(a) for p, a in zip(shared, answers, strict=True))
    assert rec.table()["s"]["infer_tokens"] < whole / 2


def test_samples_behind_a_cached_opening_are_the_samples_without_it(chatty, monkeypatch):
    model, tok, fmt, _, shared = chatty
    scorer = Scorer(model, tok, fmt, batch_size=8)
    run = lambda: scorer.sample_ids(shared[:10], n=3, temperature=1.0, top_p=0.9, top_k=0, seed=11,  # noqa: E731
                                    max_new_tokens=8)
    ours = run()
    assert ours == _reference(monkeypatch, run)
    assert ours == run()  # seeded: the same again
    assert len({s for group in ours for s in group}) > 10


def test_a_prompt_given_twice_is_generated_once(chatty, monkeypatch):
    model, tok, fmt, plain, _ = chatty
    scorer = Scorer(model, tok, fmt, batch_size=7)
    rows = []
    greedy = scoring._decode_batch
    monkeypatch.setattr(scoring, "_decode_batch",
                        lambda m, p, suffixes, *a: rows.extend(map(tuple, suffixes)) or greedy(m, p, suffixes, *a))
    twice = plain[:5] + plain[:5] + plain[5:8]
    out = scorer.generate_ids(twice, max_new_tokens=6)
    assert out[:5] == out[5:10] and len(rows) == 8
    assert out == _reference(monkeypatch, lambda: scorer.generate_ids(twice, max_new_tokens=6))


def test_a_model_configured_with_a_logits_processor_is_decoded_by_generate(chatty):
    model, *_ = chatty
    assert scoring._can_decode(model)
    other = copy.deepcopy(model)
    other.generation_config.repetition_penalty = 1.3
    assert not scoring._can_decode(other)


def test_control_attacks_leave_out_the_do_no_harm_runs(tiny_scorer, benchmark):
    from unpact.recovery import ATTACKS, AttackContext

    splits = {s: benchmark[s][:4] for s in ("forget", "retain", "utility")}
    rows = lambda items: [{"keywords": it.question.split()[:1], "contributions": [0.0] * 40, "key": [0]}  # noqa: E731
                          for it in items]
    base = {"attributions": {s: rows(items) for s, items in splits.items()}}
    answers = {"forget": {"answers": ["x"] * 4}}
    fok = ATTACKS["focus_on_key"]
    settings = fok.Settings()
    runs = {}
    for harm in (True, False):
        ctx = AttackContext(tiny_scorer, splits, 0, lambda m: tiny_scorer, base, answers, do_no_harm=harm)
        runs[harm] = fok.run(ctx, settings)
    assert {k.split for k in runs[True]} == {"forget", "retain", "utility"}
    assert {k.split for k in runs[False]} == {"forget"}
    forget_runs = {k: v for k, v in runs[True].items() if k.split == "forget"}
    assert {k: v.answers for k, v in forget_runs.items()} == {k: v.answers for k, v in runs[False].items()}
