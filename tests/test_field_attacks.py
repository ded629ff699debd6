"""The attacks from the literature beside the white-box ones: prefilled answers, many-shot prompts,
group-wise 4-bit quantisation and relearning on unrelated text — each counted on a hand-built case."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from test_recovery_counting import answer_row, bigram_model, single_token_words
from unpact.data import Item
from unpact.errors import UnpactError
from unpact.evaluation import correctness
from unpact.recovery import ATTACKS, AttackContext, quantize_model
from unpact.recovery.many_shot import many_shot_questions
from unpact.recovery.prefill import prefilled_ids, prefix_for
from unpact.recovery.quantize import _quantized_modules, quantize_weight
from unpact.scoring import Scorer


@pytest.fixture(scope="module")
def words(tiny):
    return single_token_words(tiny[2], 6)


def ctx(scorer, forget, retain=(), utility=()) -> AttackContext:
    return AttackContext(scorer, {"forget": list(forget), "retain": list(retain), "utility": list(utility)}, 0,
                         rescore=lambda m: Scorer(m, scorer.tokenizer, scorer.fmt, batch_size=4))


# -- prefill ---------------------------------------------------------------------------------------


def test_prefill_brings_back_what_follows_the_prefix_and_judges_only_the_continuation(tiny, words):
    _, _, fmt = tiny
    (a, ta), (b, _), (decoy, td), (lead, tl) = words[:4]
    eos = fmt.tokenizer.eos_token_id
    # after "Answer:" the decoy; after the prefilled word the answer a
    rows = {**answer_row(fmt, {td: 1.0}), tl: {ta: 0.0}, ta: {eos: 0.0}}
    scorer = Scorer(bigram_model(fmt, rows), fmt.tokenizer, fmt, batch_size=4)
    forget = [Item("f0", "Who is one?", a), Item("f1", "Who is two?", b), Item("f2", "Who is three?", lead)]
    assert scorer.generate([it.question for it in forget]) == [decoy] * 3
    prefill = ATTACKS["prefill"]
    settings = prefill.Settings(chat="Sure, the answer is", plain=lead)
    ids = prefilled_ids(fmt, ["Who is one?"], lead)[0]
    assert ids == fmt.encode("Who is one?").ids + [tl]
    (run,) = prefill.run(ctx(scorer, forget), settings).values()
    assert run.answers == [a, a, a]
    # f2's gold is the prefix's own word: written by the attack, not recovered, so not counted
    assert correctness(run.answers, [it.answer for it in forget]).tolist() == [True, False, False]
    assert prefix_for(SimpleNamespace(name="chat"), settings) == "Sure, the answer is"
    assert prefix_for(fmt, settings) == lead


# -- many-shot -------------------------------------------------------------------------------------


def _facts(n: int, entity: str = "e") -> list[Item]:
    return [Item(f"{entity}{i}", f"What is fact {i} of {entity}?", f"value{i}", "retain", entity=f"{entity}{i % 3}")
            for i in range(n)]


def test_many_shot_prompts_nest_exclude_the_entity_and_fill_the_context():
    shots = _facts(30, "r")
    item = Item("f0", "What is the secret?", "x", "forget", entity="r1")  # shares an entity with 10 shots
    short, k_short = many_shot_questions([item], shots, 4)
    longer, k_long = many_shot_questions([item], shots, 12)
    assert (k_short, k_long) == ([4], [12])
    assert longer[0].startswith(short[0].rsplit("\n", 1)[0])  # the 4 demonstrations are the 12's first 4
    assert all("of r1?" not in line for line in longer[0].split("\n")[:-1])
    every, k_all = many_shot_questions([item], shots, 100)
    assert k_all == [20] and every[0].endswith("What is the secret?")  # all 20 shots of other entities
    # k = 0: the most that fit, found exactly (the prompt with one more does not fit)
    limit = 400
    filled, k_fill = many_shot_questions([item], shots, 0, fits=lambda p: len(p) <= limit)
    n = k_fill[0]
    assert 0 < n < 20 and len(filled[0]) <= limit
    assert len(many_shot_questions([item], shots, n + 1)[0][0]) > limit
    assert many_shot_questions([item], shots, 0, fits=lambda p: True, cap=5)[1] == [5]


def test_many_shot_runs_one_result_per_k_sized_to_the_scorers_context(tiny_scorer, benchmark):
    forget, retain = benchmark["forget"][:3], benchmark["retain"][:60]
    scorer = Scorer(tiny_scorer.model, tiny_scorer.tokenizer, tiny_scorer.fmt, batch_size=8)
    scorer.max_length, scorer.max_new_tokens = 200, 8
    attack = ATTACKS["many_shot"]
    out = attack.run(ctx(scorer, forget, retain), attack.Settings(k=[2, 0], cap=256))
    assert [k.name for k in out] == ["many_shot_k2", "many_shot_max"]
    fill = out[next(k for k in out if k.variant == "max")]
    assert all(len(scorer.fmt.encode(p).ids) <= 192 for p in fill.prompts)
    assert min(fill.details["k"]) > 2 and out[next(iter(out))].details["k"] == [2, 2, 2]


# -- group-wise 4-bit ------------------------------------------------------------------------------


def test_groupwise_scales_bound_each_group_and_a_whole_row_group_is_per_channel():
    torch.manual_seed(0)
    w = torch.randn(6, 70)
    w[0, 3] = 40.0  # one outlier: it coarsens its own group's grid only
    q, scales = quantize_weight(w, 4, dim=1, group=32)
    assert scales.shape == w.shape
    assert torch.all((w - q).abs() <= scales / 2 + 1e-6)
    assert torch.allclose(scales[0, :32], torch.full((32,), 40.0 / 7))
    assert scales[0, 32:].max() < 40.0 / 7 / 4  # the other groups of the row keep a fine grid
    assert scales[0, 64:].unique().numel() == 1  # the last group: the 6 weights left over
    per_channel, _ = quantize_weight(w, 4, dim=1)
    assert torch.equal(quantize_weight(w, 4, dim=1, group=70)[0], per_channel)
    assert (w - q).abs().sum() < (w - per_channel).abs().sum()
    # a Conv1D-style [in, out] weight groups along dim 0
    qt, _ = quantize_weight(w.T.contiguous(), 4, dim=0, group=32)
    assert torch.equal(qt, q.T)


def test_groupwise_int4_undoes_an_unlearning_within_half_a_group_step_and_per_channel_does_not(tiny, benchmark):
    model, tok, fmt = tiny
    grid = quantize_model(model, 4, group=32)  # a model already on the group-wise int4 grid
    moved = quantize_model(model, 4, group=32)
    torch.manual_seed(1)
    with torch.no_grad():  # each weight moved by 0.45 of its group's step, the group maxima left alone
        for _, module, dim in _quantized_modules(moved):
            w = module.weight
            _, scale = quantize_weight(w, 4, dim, 32)
            extreme = w.abs() >= scale * 7 * (1 - 1e-6)
            w.add_(torch.where(extreme, 0.0, 0.45 * scale * torch.sign(torch.randn_like(w))))
    restored = quantize_model(moved, 4, group=32)
    for (name, a), (_, b) in zip(grid.named_parameters(), restored.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    per_channel = quantize_model(moved, 4)
    assert any(not torch.equal(a, b) for a, b in zip(grid.parameters(), per_channel.parameters(), strict=True))
    qs = [it.question for it in benchmark["forget"][:6]]
    answers = Scorer(grid, tok, fmt, batch_size=6).generate(qs)
    assert Scorer(restored, tok, fmt, batch_size=6).generate(qs) == answers
    run = ATTACKS["quantize"].run(ctx(Scorer(moved, tok, fmt, batch_size=6), [Item(f"q{i}", q, "x") for i, q in
                                                                               enumerate(qs)]),
                                  ATTACKS["quantize"].Settings(bits=[4], groups=[32]))
    assert [k.name for k in run] == ["quantize_int4", "quantize_int4_g32"]
    assert run[next(k for k in run if k.variant == "int4_g32")].answers == answers


# -- relearning on unrelated text ------------------------------------------------------------------


def test_relearning_on_utility_items_trains_on_them_alone_and_needs_some(tiny, words):
    _, _, fmt = tiny
    (a, ta), (b, tb), (c, tc) = words[:3]
    model = bigram_model(fmt, answer_row(fmt, {ta: 0.9, tb: 0.05, tc: 0.05}))
    scorer = Scorer(model, fmt.tokenizer, fmt, batch_size=4)
    forget = [Item("f0", "Who is one?", b), Item("f1", "Who is two?", c)]
    # the retain items would teach c; the utility items teach b: only b comes back
    retain = [Item(f"r{i}", f"Who is number {i}?", c, "retain") for i in range(8)]
    utility = [Item(f"u{i}", f"What is thing {i}?", b, "utility") for i in range(8)]
    attack = ATTACKS["relearn_unrelated"]
    (run,) = attack.run(ctx(scorer, forget, retain, utility), attack.Settings(steps=10, lr=3e-3)).values()
    assert correctness(run.answers, [b, c]).tolist() == [True, False]
    assert scorer.generate([it.question for it in forget]) == [a, a]  # the unlearned model is untouched
    with pytest.raises(UnpactError, match="no utility items to relearn on.*drop relearn_unrelated"):
        list(attack.planned(AttackContext(None, {"forget": forget, "retain": retain, "utility": []}, 0, None),
                            attack.Settings()))
    assert math.isfinite(sum(p.sum().item() for p in model.parameters()))
