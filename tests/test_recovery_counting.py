"""Each recovery attack on a hand-built case: it must count exactly the items it brings back.

The models here are built by hand so the right answer is known in advance:

* a *bigram* Llama — attention and MLP outputs zeroed, one-hot embeddings — whose next token depends
  only on the current one, so the distribution of the answer after ``Answer:`` is set directly;
* the trained built-in model put on the int4 grid, and a copy moved against its answers by less
  than half a quantisation step — an "unlearning" that int4 rounding undoes exactly;
* a prompt-dependent stand-in scorer for the prompt attacks, run through the study's own wiring.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unpact.config import RecoveryConfig, StudyConfig
from unpact.data import Item
from unpact.evaluation import correctness, recovery_rate
from unpact.models import PlainFormat, load_model
from unpact.recovery import any_correct, quantize_model, relearn, sample_answers
from unpact.recovery.quantize import _quantized_modules, quantize_weight
from unpact.scoring import Scorer, answer_token_logprobs, pack
from unpact.study import Study

ALL_FORGOTTEN_BEFORE = np.array([True, True, True])


def single_token_words(fmt: PlainFormat, n: int) -> list[tuple[str, int]]:
    """``n`` alphabetic words that the tokenizer encodes as one answer token: [(word, id)]."""
    found = []
    for t in range(len(fmt.tokenizer)):
        text = fmt.token_strings([t])[0]
        if re.fullmatch(r" [A-Za-z]{4,}", text) and fmt.encode_answer(text) == [t]:
            found.append((text.strip(), t))
    assert len(found) >= n
    return found[:n]


def bigram_model(fmt: PlainFormat, rows: dict[int, dict[int, float]]) -> LlamaForCausalLM:
    """A Llama whose next-token log-probs are ``rows[current token]`` (unlisted targets: −30).

    Attention and MLP write nothing to the residual stream (o_proj, down_proj = 0), embeddings are
    one-hot, so the final RMSNorm sees √V·e_t and lm_head[:, t] = rows[t]/√V gives the logits.
    """
    v = len(fmt.tokenizer)
    config = LlamaConfig(vocab_size=v, hidden_size=v, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=False, rms_norm_eps=1e-12,
                         bos_token_id=fmt.tokenizer.bos_token_id, eos_token_id=fmt.tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    table = torch.full((v, v), -30.0)  # [current, next]
    for cur, nxt in rows.items():
        for t, logit in nxt.items():
            table[cur, t] = logit
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(v))
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.lm_head.weight.copy_(table.T / math.sqrt(v))
    return model.eval()


@pytest.fixture(scope="module")
def words(tiny):
    fmt = tiny[2]
    return single_token_words(fmt, 3)


def answer_row(fmt, probs: dict[int, float]) -> dict[int, dict[int, float]]:
    """After the prompt's last token (``:`` of ``Answer:``) the answer tokens with ``probs``, then EOS."""
    colon = fmt.encode("x").ids[-1]
    eos = fmt.tokenizer.eos_token_id
    rows = {colon: {t: math.log(p) for t, p in probs.items()}}
    rows.update({t: {eos: 0.0} for t in probs})
    return rows


def test_sampling_recovers_the_answer_left_with_some_probability(tiny, words):
    _, _, fmt = tiny
    (a, ta), (b, tb), (c, _) = words
    scorer = Scorer(bigram_model(fmt, answer_row(fmt, {ta: 0.7, tb: 0.3})), fmt.tokenizer, fmt, batch_size=4)
    questions = ["Who is one?", "Who is two?", "Who is three?"]
    golds = [a, b, c]              # a: still known; b: greedy forgot it, p = 0.3 left; c: p ≈ e^-30
    after = correctness(scorer.generate(questions), golds)
    assert after.tolist() == [True, False, False]
    samples = sample_answers(scorer, questions, n=16, temperature=1.0, seed=0)
    assert {s for group in samples for s in group} == {a, b}
    hits = any_correct(samples, [Item(f"i{i}", q, g) for i, (q, g) in enumerate(zip(questions, golds, strict=True))])
    assert hits.tolist() == [True, True, False]
    assert recovery_rate(ALL_FORGOTTEN_BEFORE, after, hits) == 0.5  # b of {b, c}; a was never forgotten


def test_relearning_on_other_items_brings_back_what_they_share(tiny, words):
    _, _, fmt = tiny
    (a, ta), (b, tb), (c, tc) = words
    # "unlearned": the answer is a for every question; b and c are suppressed to p ≈ 0.05
    model = bigram_model(fmt, answer_row(fmt, {ta: 0.9, tb: 0.05, tc: 0.05}))
    scorer = Scorer(model, fmt.tokenizer, fmt, batch_size=4)
    questions, golds = ["Who is one?", "Who is two?"], [b, c]
    after = correctness(scorer.generate(questions), golds)
    assert not after.any()
    # relearn on *other* questions whose answer is b: only the forget item answered b comes back
    retain = [Item(id=f"r{i}", question=f"Who is number {i}?", answer=b, split="retain") for i in range(8)]
    relearned = relearn(model, fmt.tokenizer, fmt, retain, steps=10, lr=3e-3, batch_size=4, seed=0)
    hits = correctness(Scorer(relearned, fmt.tokenizer, fmt, batch_size=4).generate(questions), golds)
    assert hits.tolist() == [True, False]
    assert recovery_rate(ALL_FORGOTTEN_BEFORE[:2], after, hits) == 0.5
    assert correctness(scorer.generate(questions), golds).tolist() == [False, False]  # input untouched


def test_int4_rounding_undoes_an_unlearning_smaller_than_half_a_step(study, benchmark):
    model, tok = load_model(study[0] / "model")   # the trained built-in model
    fmt = PlainFormat(tok)
    questions = [it.question for it in benchmark["forget"]]
    original = quantize_model(model, bits=4)         # a model that already lies on the int4 grid
    golds = Scorer(original, tok, fmt).generate(questions)
    # "Unlearning" inside one quantisation cell: a signed gradient step against the forget answers
    # of 0.45 step per weight, the channel's largest weights left alone so the scale stays put.
    unlearned = quantize_model(model, bits=4)
    batch = pack([fmt.encode(q).ids for q in questions], [fmt.encode_answer(g) for g in golds], tok.pad_token_id)
    answer_token_logprobs(unlearned, batch).sum().backward()
    with torch.no_grad():
        for _, module, dim in _quantized_modules(unlearned):
            w = module.weight
            _, scale = quantize_weight(w, 4, dim)
            extreme = w.abs() >= w.abs().amax(dim=dim, keepdim=True) * (1 - 1e-6)
            w.add_(torch.where(extreme, torch.zeros_like(w), -0.45 * scale * torch.sign(w.grad)))
    before = np.ones(len(golds), dtype=bool)
    after = correctness(Scorer(unlearned, tok, fmt).generate(questions), golds)
    assert after.mean() < 0.5                         # the step made it forget most items
    int4 = correctness(Scorer(quantize_model(unlearned, 4), tok, fmt).generate(questions), golds)
    int8 = correctness(Scorer(quantize_model(unlearned, 8), tok, fmt).generate(questions), golds)
    assert recovery_rate(before, after, int4) == 1.0  # every forgotten item snaps back
    assert recovery_rate(before, after, int8) < 0.5   # int8's finer grid keeps the step


class _PromptStandIn:
    """A scorer stand-in answering correctly only under paraphrased or few-shot prompts, per item."""

    def __init__(self, items: list[Item], paraphrase_ok: set[str], few_shot_ok: set[str]):
        self.items, self.paraphrase_ok, self.few_shot_ok = items, paraphrase_ok, few_shot_ok

    def generate(self, prompts):
        out = []
        for p in prompts:
            last = p.split("\n")[-1]
            it = next(i for i in self.items if last in (i.question, i.paraphrased_question))
            few_shot, paraphrased = "\n" in p, last == it.paraphrased_question
            ok = (paraphrased and it.id in self.paraphrase_ok) or (few_shot and it.id in self.few_shot_ok)
            out.append(it.answer if ok else "no idea")
        return out


def test_the_study_counts_paraphrase_and_few_shot_recoveries_per_item(benchmark, tmp_path):
    forget = benchmark["forget"][:6]
    cfg = StudyConfig(recovery=RecoveryConfig(attacks=["paraphrase", "few_shot"], few_shot_k=2))
    study = Study(cfg, tmp_path)
    study.splits = {"forget": forget, "retain": benchmark["retain"][:12], "utility": []}
    scorer = _PromptStandIn(forget, paraphrase_ok={forget[0].id, forget[3].id}, few_shot_ok={forget[3].id, forget[5].id})
    study.cfg.recovery.styles = []  # FocusOnKey always runs, once per style: none here
    out = study.attack(scorer)
    assert set(out) == {"paraphrase", "few_shot"}
    assert out["paraphrase"]["correct"] == [True, False, False, True, False, False]
    assert out["few_shot"]["correct"] == [False, False, False, True, False, True]
    before, after = np.ones(6, bool), np.zeros(6, bool)
    assert recovery_rate(before, after, np.array(out["few_shot"]["correct"])) == pytest.approx(2 / 6)
