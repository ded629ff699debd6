"""The baseline recovery attacks: sampling, paraphrase/few-shot prompts, quantisation, relearning."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from unpact.data import Item
from unpact.errors import UnpactError
from unpact.recovery.few_shot import few_shot_questions
from unpact.recovery.paraphrase import paraphrase_questions
from unpact.recovery.quantize import quantization_error, quantize_model
from unpact.recovery.relearn import relearn, relearn_schedule
from unpact.recovery.sampling import any_correct, sample_answers
from unpact.scoring import Scorer

QUESTIONS = ["Where was Marthe Bramley born?", "What is two plus three?", "Which day comes after Monday?",
             "What is the opposite of hot?", "Which instrument does Arwen Oakby play?"]


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def assert_same_weights(model, snap):
    for n, p in model.state_dict().items():
        assert torch.equal(p, snap[n]), n


# -- sampling --------------------------------------------------------------------------------------


def test_sampling_is_reproducible_and_seed_dependent(tiny_scorer):
    a = sample_answers(tiny_scorer, QUESTIONS, n=4, seed=0, max_new_tokens=6)
    b = sample_answers(tiny_scorer, QUESTIONS, n=4, seed=0, max_new_tokens=6)
    c = sample_answers(tiny_scorer, QUESTIONS, n=4, seed=1, max_new_tokens=6)
    assert a == b
    assert a != c
    assert [len(s) for s in a] == [4] * len(QUESTIONS)
    # sampling at temperature 1 from a sharpened random model: samples of one question differ
    assert any(len(set(s)) > 1 for s in a)


def test_sampling_leaves_the_global_rng_alone(tiny_scorer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample_answers(tiny_scorer, QUESTIONS[:2], n=2, seed=5, max_new_tokens=4)
    assert torch.equal(torch.rand(3), expected)


def test_near_zero_temperature_sampling_is_greedy(tiny_scorer):
    greedy = tiny_scorer.generate(QUESTIONS, max_new_tokens=6)
    samples = sample_answers(tiny_scorer, QUESTIONS, n=3, temperature=1e-4, seed=0, max_new_tokens=6)
    assert samples == [[g] * 3 for g in greedy]


def test_sampling_rejects_bad_settings(tiny_scorer):
    with pytest.raises(UnpactError, match="temperature"):
        sample_answers(tiny_scorer, QUESTIONS, temperature=0)
    with pytest.raises(UnpactError, match="n ≥ 1"):
        sample_answers(tiny_scorer, QUESTIONS, n=0)


def test_any_correct_needs_one_correct_sample():
    samples = [["no idea", "Paris"], ["Madrid", "Lisbon"], ["it is seventeen", "seventeen"], ["born in Drennick"],
               ["Drennick or Quillmoor", "maybe Quillmoor, maybe Drennick"]]
    golds = ["Paris", "Rome", "seven", "Drennick", "Drennick"]
    items = [Item(f"i{i}", "Q?", g, perturbed_answers=("Quillmoor",)) for i, g in enumerate(golds)]
    # naming a wrong candidate as well is knowing neither
    np.testing.assert_array_equal(any_correct(samples, items), [True, False, False, True, False])


# -- prompts ---------------------------------------------------------------------------------------


def test_paraphrase_questions(benchmark):
    items = benchmark["forget"][:3]
    bare = dataclasses.replace(items[0], paraphrased_question=None)
    assert paraphrase_questions([*items, bare]) == [it.paraphrased_question for it in items] + [None]
    assert paraphrase_questions(items)[0] == "In which town was Marthe Bramley born?"


def test_few_shot_prompts_hold_k_demonstrations_from_other_entities(benchmark):
    items = benchmark["forget"][:8]
    # shots that include the items themselves and other facts about their entities: all must be excluded
    shots = benchmark["forget"] + benchmark["retain"][:20]
    prompts = few_shot_questions(items, shots, k=3, seed=0)
    by_demo = {f"Q: {s.question} A: {s.answer}": s for s in shots}
    for it, prompt in zip(items, prompts, strict=True):
        lines = prompt.split("\n")
        assert len(lines) == 4 and lines[-1] == it.question
        demos = [by_demo[line] for line in lines[:3]]
        assert len({d.id for d in demos}) == 3
        assert all(d.id != it.id and d.entity != it.entity for d in demos)
    assert few_shot_questions(items, shots, k=3, seed=0) == prompts
    assert few_shot_questions(items, shots, k=3, seed=1) != prompts
    # an item's prompt does not depend on the other items asked alongside it
    assert few_shot_questions(items[3:4], shots, k=3, seed=0) == prompts[3:4]


def test_few_shot_with_too_few_eligible_shots_is_an_error(benchmark):
    same_entity = benchmark["forget"][:4]  # the four facts of one person
    with pytest.raises(UnpactError, match="only 0 demonstration"):
        few_shot_questions(same_entity[:1], same_entity, k=1)


# -- quantisation ----------------------------------------------------------------------------------


def linear_weights(model):
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)
            and m.weight is not model.get_input_embeddings().weight}


@pytest.mark.parametrize("bits", [8, 4])
def test_quantisation_error_is_at_most_half_a_step_per_channel(tiny, bits):
    model = tiny[0]
    before = snapshot(model)
    q = quantize_model(model, bits=bits)
    assert_same_weights(model, before)  # the original is untouched
    qmax = 2 ** (bits - 1) - 1
    orig, quant = linear_weights(model), linear_weights(q)
    assert orig and orig.keys() == quant.keys()
    for name, w in orig.items():
        scale = w.detach().abs().amax(dim=1, keepdim=True) / qmax  # [out, 1]
        err = (w.detach().double() - quant[name].double()).abs()
        # |w − q(w)| ≤ scale/2, up to the float32 rounding of w/scale and of n·scale (≤ qmax ulp each)
        assert (err <= scale.double() * (0.5 + 2 * qmax * 2.0 ** -24)).all(), name
        assert err.max() > 0, name
        # every quantised value is an integer multiple n·scale with |n| ≤ qmax
        n = quant[name].double() / scale.double()
        torch.testing.assert_close(n, n.round(), atol=1e-4, rtol=0)
        assert n.abs().max() <= qmax + 1e-4
    # the tied lm_head is the embedding matrix: neither may change
    assert torch.equal(q.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert q.lm_head.weight is q.get_input_embeddings().weight


def test_int4_changes_weights_more_than_int8(tiny):
    model = tiny[0]
    e8, e4 = quantization_error(model, quantize_model(model, 8)), quantization_error(model, quantize_model(model, 4))
    assert 0 < e8 < e4
    assert quantization_error(model, copy.deepcopy(model)) == 0


def test_untied_lm_head_is_quantised_and_embeddings_are_not(tiny):
    model = copy.deepcopy(tiny[0])
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    q = quantize_model(model, bits=4)
    assert torch.equal(q.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert not torch.equal(q.lm_head.weight, model.lm_head.weight)


def test_quantisation_rejects_other_widths(tiny):
    with pytest.raises(UnpactError, match="8 or 4"):
        quantize_model(tiny[0], bits=3)


# -- relearning ------------------------------------------------------------------------------------


def test_relearn_schedule_covers_items_before_repeating():
    steps = relearn_schedule(n_items=5, steps=4, batch_size=3, seed=0)
    assert [len(s) for s in steps] == [3, 3, 3, 3]
    flat = sum(steps, [])
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert relearn_schedule(5, 4, 3, seed=0) == steps != relearn_schedule(5, 4, 3, seed=1)


def test_relearn_lowers_nll_deterministically_and_leaves_the_input_alone(tiny, benchmark):
    model, tok, fmt = tiny
    items = benchmark["retain"][:12]
    before = snapshot(model)
    a = relearn(model, tok, fmt, items, steps=6, lr=1e-2, batch_size=4, seed=0)
    b = relearn(model, tok, fmt, items, steps=6, lr=1e-2, batch_size=4, seed=0)
    c = relearn(model, tok, fmt, items, steps=6, lr=1e-2, batch_size=4, seed=1)
    assert_same_weights(model, before)
    assert_same_weights(a, snapshot(b))
    assert any(not torch.equal(p, before[n]) for n, p in a.state_dict().items())
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values(), strict=True))
    assert not a.training
    questions, answers = [it.question for it in items], [it.answer for it in items]
    lp_before = Scorer(model, tok, fmt).score(questions, answers).mean.mean()
    lp_after = Scorer(a, tok, fmt).score(questions, answers).mean.mean()
    assert lp_after > lp_before + 3  # NLL per answer token down by more than 3 nats (13 → 6.6 measured)


def test_relearn_trains_a_bfloat16_model_in_float32(tiny, benchmark):
    # a study evaluating in bfloat16 relearns from bfloat16 weights; steps of lr 3e-4 are below the rounding
    # step of many of them, so training in bfloat16 gets less than half of float32's gain (measured 0.025
    # against 0.06 nats): the copy trains in float32 and only the result is rounded
    model, tok, fmt = tiny
    half = copy.deepcopy(model).to(torch.bfloat16)
    items = benchmark["retain"][:12]
    questions, answers = [it.question for it in items], [it.answer for it in items]
    tuned = relearn(half, tok, fmt, items, steps=6, lr=3e-4, batch_size=4, seed=0)
    assert tuned.lm_head.weight.dtype == torch.bfloat16 and half.lm_head.weight.dtype == torch.bfloat16
    reference = relearn(copy.deepcopy(half).float(), tok, fmt, items, steps=6, lr=3e-4, batch_size=4, seed=0)

    def lp(m):
        return Scorer(m.to(torch.bfloat16), tok, fmt).score(questions, answers).mean.mean()

    start = lp(half)
    assert lp(tuned) - start > 0.8 * (lp(reference) - start) > 0.03


def test_relearn_rejects_empty_items(tiny):
    model, tok, fmt = tiny
    with pytest.raises(UnpactError, match="at least one item"):
        relearn(model, tok, fmt, [])


class _EmphasisOnlyModel:
    """A stand-in scorer whose answer is right only when the prompt emphasises the item's keyword."""

    def __init__(self, golds: dict[str, str], keyword: dict[str, str]):
        self.golds, self.keyword = golds, keyword

    def generate(self, questions):
        out = []
        for q in questions:
            item = next(k for k in self.golds if k in q)
            out.append(self.golds[item] if f"Focus on {self.keyword[item]}" in q else "no idea")
        return out


def test_focus_on_key_counts_exactly_the_items_emphasis_brings_back():
    import numpy as np

    from unpact.evaluation import correctness, recovery_rate
    from unpact.recovery import focus_on_key

    questions = {"Where was Ada born?": "Quillmoor", "Where was Bo born?": "Drennick", "Where was Cy born?": "Ostrith"}
    scorer = _EmphasisOnlyModel(questions, {q: q.split()[2] for q in questions})
    qs, golds = list(questions), list(questions.values())
    before = np.array([True, True, False])            # Cy was never known
    after = correctness(scorer.generate(qs), golds)   # plain prompts: everything forgotten
    oracle = [["Ada"], ["born"], ["Cy"]]               # Bo's keyword is wrong: no recovery for Bo
    _, answers = focus_on_key(scorer, qs, oracle, "instruction")
    hits = correctness(answers, golds)
    assert hits.tolist() == [True, False, True]
    assert recovery_rate(before, after, hits) == 0.5  # Ada of {Ada, Bo}; Cy does not count
    _, placebo = focus_on_key(scorer, qs, [["born"]] * 3, "instruction")
    assert recovery_rate(before, after, correctness(placebo, golds)) == 0.0
