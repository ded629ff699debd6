"""The white-box attacks on hand-built models: each must count exactly the items it should.

The models are Llamas wired by hand (as the bigram model of `test_recovery_counting.py`): one-hot
token embeddings, blocks that write nothing unless a test plants something, and an unembedding that
reads a chosen next-token table off each residual-stream direction. Extra dimensions past the
vocabulary carry what is planted — a suppression written by a late block, a "forget" flag, a
"true answer" flag — so what each attack should find is known before it runs:

* logit lens: the answer ranked first after block 1 but suppressed by block 2 is found; an answer
  never ranked, and every answer of a model that never knew, are not;
* direction ablation: a flag added to the forget questions' states, which the unembedding turns into
  a decoy answer, is found as the forget-vs-retain direction and projected out, and exactly the
  forget items come back; a model without the flag gets nothing back;
* probe: a "true answer" flag in the states of gold candidates lets a probe fit on retain items pick
  every forget item's gold; the gold model, whose forget golds carry no flag, gets none.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from test_recovery_counting import single_token_words
from unpact.data import Item
from unpact.evaluation.calibration import GOLD, calibrate
from unpact.models import PlainFormat
from unpact.recovery import ATTACKS, AttackContext
from unpact.recovery.direction_ablation import forget_direction, projected_out
from unpact.recovery.logit_lens import lens_profile
from unpact.scoring import Scorer

EXTRA = 2  # dimensions past the vocabulary for planted signals


class Bare(PlainFormat):
    """The question is the whole prompt (no template), so its last word's token predicts the answer."""

    prefix = ""
    suffix = ""


def llama(fmt: PlainFormat, layers: int, rows: dict[int, dict[int, float]],
          extra_rows: dict[int, dict[int, float]] | None = None,
          flags: dict[int, dict[int, float]] | None = None) -> LlamaForCausalLM:
    """A Llama over the vocabulary V with hidden size V + EXTRA whose blocks write nothing.

    Token t embeds as e_t plus ``flags[t][j]`` on extra dimension V + j. The unembedding reads
    ``rows[t]`` (next-token logits, others −30) off e_t and ``extra_rows[j]`` off dimension V + j,
    scaled so that a pure one-hot state after the final RMSNorm (√H · e_t) gives exactly ``rows[t]``.
    """
    v = len(fmt.tokenizer)
    h = v + EXTRA
    config = LlamaConfig(vocab_size=v, hidden_size=h, intermediate_size=4, num_hidden_layers=layers,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=False, rms_norm_eps=1e-12,
                         bos_token_id=fmt.tokenizer.bos_token_id, eos_token_id=fmt.tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    head = torch.full((v, h), -30.0)  # [next token, residual dimension]
    head[:, v:] = 0.0
    for cur, nxt in rows.items():
        for t, logit in nxt.items():
            head[t, cur] = logit
    for j, nxt in (extra_rows or {}).items():
        for t, logit in nxt.items():
            head[t, v + j] = logit
    emb = torch.zeros(v, h)
    emb[:, :v] = torch.eye(v)
    for t, extra in (flags or {}).items():
        for j, x in extra.items():
            emb[t, v + j] = x
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(emb)
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.lm_head.weight.copy_(head / math.sqrt(h))
    return model.eval()


def context(scorer, forget: list[Item], retain: list[Item]) -> AttackContext:
    return AttackContext(scorer, {"forget": forget, "retain": retain, "utility": []}, 0, rescore=None)


@pytest.fixture(scope="module")
def words(tiny):
    return single_token_words(tiny[2], 15)


# -- logit lens ------------------------------------------------------------------------------------


def suppressing_block(model: LlamaForCausalLM, fmt: PlainFormat, strength: float) -> None:
    """Make the last block's MLP write ``strength`` on extra dimension 0 at the prompt's last token
    (``:`` of ``Answer:``) and nowhere else: gate and up read that token's one-hot dimension."""
    colon, v = fmt.encode("x").ids[-1], len(fmt.tokenizer)
    mlp = model.model.layers[-1].mlp
    with torch.no_grad():
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight.zero_()
            proj.weight[0, colon] = 1.0
        mlp.down_proj.weight.zero_()
        # after the block's RMSNorm the one-hot entry is √H, so the MLP's row 0 is silu(√H)·√H
        h = v + EXTRA
        mlp.down_proj.weight[v, 0] = strength / (torch.nn.functional.silu(torch.tensor(math.sqrt(h))) * math.sqrt(h))


def test_logit_lens_finds_the_answer_a_middle_layer_still_ranks_first(tiny, words):
    fmt = tiny[2]
    (a, ta), (b, tb), (c, tc), (decoy, td) = words[:4]
    colon, eos = fmt.encode("x").ids[-1], fmt.tokenizer.eos_token_id
    after = {t: {eos: 0.0} for t in (ta, tb, tc, td)}
    # unlearned: after block 1 the answer is a (b second); block 2 writes a suppression that the
    # unembedding turns into the decoy, with a pushed down
    unlearned = llama(fmt, 2, {colon: {ta: 0.0, tb: -5.0}, **after}, extra_rows={0: {td: 30.0, ta: -30.0}})
    suppressing_block(unlearned, fmt, 3.0)
    # never knew: the same suppression, but no layer ever ranks a (its colon row favours b)
    never = llama(fmt, 2, {colon: {tb: 0.0}, **after}, extra_rows={0: {td: 30.0, ta: -30.0}})
    suppressing_block(never, fmt, 3.0)
    forget = [Item("f0", "Who is one?", a, "forget"), Item("f1", "Who is two?", c, "forget")]
    lens = ATTACKS["logit_lens"]
    settings = lens.Settings(rank=1)

    s = Scorer(unlearned, fmt.tokenizer, fmt, batch_size=4)
    assert s.generate([it.question for it in forget]) == [decoy, decoy]  # both forgotten at the output
    ranks, lps = lens_profile(s, [it.question for it in forget], [ta, tc])
    assert ranks.shape == (2, 2)
    assert ranks[0].tolist()[0] == 1 and ranks[0][1] > 1  # a: first after block 1, not at the output
    assert ranks[1].min() > 1                            # c: never ranked first
    assert lps[0][0] > lps[0][1]
    found = lens.run(context(s, forget, []), settings)
    (key, run), = found.items()
    assert key.name == "logit_lens" and run.correct == [True, False]
    assert "rank 1 at layer 1 of 2" in run.answers[0] and run.details["ranks"] == ranks.tolist()

    g = Scorer(never, fmt.tokenizer, fmt, batch_size=4)
    (control,) = lens.run(context(g, forget, []), settings).values()
    assert control.correct == [False, False]
    # read against the never-knew model, as the study does: 1 of 2 forgotten items, control 0 of 2
    (cal,) = calibrate({"logit_lens": run.correct}, np.array([True, True]),
                       {"kind": GOLD, "attacks": {"logit_lens": control.correct}, "known": [True, True]})
    assert (cal.hits, cal.n, cal.control_hits, cal.control_n, cal.value) == (1, 2, 0, 2, 0.5)
    # a looser threshold counts b's rank-2 item too: the rank is a declared setting, not a constant
    (looser,) = lens.run(context(s, [forget[0], Item("f2", "Who?", b, "forget")], []), lens.Settings(rank=2)).values()
    assert looser.correct == [True, True]


# -- direction ablation ----------------------------------------------------------------------------


def test_direction_ablation_finds_the_planted_direction_and_brings_back_exactly_the_forget_items(tiny, words):
    fmt = Bare(tiny[1])
    (q1, t1), (q2, t2), (q3, t3), (q4, t4), (q5, t5) = words[:5]      # the questions' last words
    (g1, u1), (g2, u2), (g3, u3), (g4, u4), (g5, u5) = words[5:10]    # their answers
    decoy, td = words[10]
    eos = fmt.tokenizer.eos_token_id
    rows = {t1: {u1: 0.0}, t2: {u2: 0.0}, t3: {u3: 0.0}, t4: {u4: 0.0}, t5: {u5: 0.0},
            **{u: {eos: 0.0} for u in (u1, u2, u3, u4, u5, td)}}
    # the forget questions (last words q1, q2) carry a flag that the unembedding reads as the decoy
    flag = {t1: {1: 3.0}, t2: {1: 3.0}}
    unlearned = llama(fmt, 2, rows, extra_rows={1: {td: 40.0, u1: -40.0, u2: -40.0}}, flags=flag)
    forget = [Item("f1", f"Tell {q1}", g1, "forget"), Item("f2", f"Tell {q2}", g2, "forget")]
    retain = [Item(f"r{i}", f"Tell {q}", g, "retain") for i, (q, g) in enumerate([(q3, g3), (q4, g4), (q5, g5)])]
    s = Scorer(unlearned, fmt.tokenizer, fmt, batch_size=4)
    assert s.generate([it.question for it in forget + retain]) == [decoy, decoy, g3, g4, g5]

    d = forget_direction(s, [it.question for it in forget], [it.question for it in retain], 0)
    v = len(fmt.tokenizer)
    assert abs(d[v + 1]) > 0.95  # the planted flag dimension is the direction found
    with projected_out(unlearned, d):
        assert s.generate([it.question for it in forget + retain]) == [g1, g2, g3, g4, g5]
    assert s.generate([it.question for it in forget]) == [decoy, decoy]  # the hooks are gone after

    ablation = ATTACKS["direction_ablation"]
    for layer in (0, -1):  # read at the embeddings or after the middle block
        (run,) = ablation.run(context(s, forget, retain), ablation.Settings(layer=layer)).values()
        assert run.answers == [g1, g2]

    # a model that never knew the forget answers: no flag, and its rows give wrong answers
    never = llama(fmt, 2, {**rows, t1: {td: 0.0}, t2: {td: 0.0}})
    (run,) = ablation.run(context(Scorer(never, fmt.tokenizer, fmt, batch_size=4), forget, retain),
                          ablation.Settings(layer=0)).values()
    assert run.answers == [decoy, decoy]


# -- probe -----------------------------------------------------------------------------------------


def test_a_probe_fit_on_retain_picks_the_planted_true_answers_and_the_gold_model_does_not(tiny, words):
    fmt = tiny[2]
    toks = dict(words)
    names = [w for w, _ in words]
    retain = [Item(f"r{i}", f"Which is fact {i}?", names[2 * i], "retain", perturbed_answers=(names[2 * i + 1],))
              for i in range(4)]
    forget = [Item(f"f{i}", f"Which is secret {i}?", names[8 + 2 * i], "forget", perturbed_answers=(names[9 + 2 * i],))
              for i in range(3)]
    true_flag = {toks[it.answer]: {0: 2.0} for it in retain}
    eos = fmt.tokenizer.eos_token_id
    rows = {t: {eos: 0.0} for t in toks.values()}
    unlearned = llama(fmt, 2, rows, flags={**true_flag, **{toks[it.answer]: {0: 2.0} for it in forget}})
    gold = llama(fmt, 2, rows, flags=true_flag)  # knows the retain facts only
    probe = ATTACKS["probe"]
    for layer in (0, -1):
        settings = probe.Settings(layer=layer, c=1.0)
        (run,) = probe.run(context(Scorer(unlearned, fmt.tokenizer, fmt, batch_size=5), forget, retain),
                           settings).values()
        assert run.correct == [True, True, True]
        assert run.answers == [it.answer for it in forget]
        (control,) = probe.run(context(Scorer(gold, fmt.tokenizer, fmt, batch_size=5), forget, retain),
                               settings).values()
        assert control.correct == [False, False, False]  # every candidate scores the same: a tie knows nothing


# -- where it is still -----------------------------------------------------------------------------


def test_where_it_is_still_takes_each_channels_strongest_calibrated_run_and_only_asking_recovers():
    from unpact.evaluation.calibration import Calibrated
    from unpact.evaluation.method_metrics import where_still
    from unpact.report.records import outcome

    runs = [Calibrated("sampling", 2, 20, 2, 20, GOLD),              # no better than the gold model
            Calibrated("logit_lens", 12, 20, 1, 20, GOLD),           # hidden: +55%, interval above 0
            Calibrated("direction_ablation", 3, 20, 0, 20, GOLD),    # hidden too, weaker
            Calibrated("quantize_int4_g32", 4, 20, 3, 20, GOLD),
            Calibrated("quantize_int8", 1, 20, 0, 20, GOLD)]
    where = where_still(runs, n_known=24, n_still_answered=4)
    assert where["output"] == {"hits": 4, "n": 24, "rate": 4 / 24, "still": True}
    assert where["hidden"]["attack"] == "logit_lens" and where["hidden"]["still"]
    assert where["hidden"]["calibrated"] == pytest.approx(0.55)
    assert where["sampling"]["attack"] == "sampling" and not where["sampling"]["still"]
    assert where["weights"]["attack"] == "quantize_int4_g32" and not where["weights"]["still"]
    assert where["probe"] is None and where["rewrite"] is None  # not run
    assert where["hidden"]["n_tests"] == 5 and where["hidden"]["p_holm"] < 0.05
    # the same logit-lens evidence among 40 attacks of a method: its interval is still above 0, but
    # the best of that many could be chance, so the channel is not counted as still there
    weak = Calibrated("direction_ablation", 8, 20, 1, 20, GOLD)  # interval above 0 on its own, p 0.01
    assert weak.ci95[0] > 0
    many = [weak, *(Calibrated(f"quantize_int4_g{g}", 0, 20, 0, 20, GOLD) for g in range(2, 41))]
    assert not where_still(many, n_known=24, n_still_answered=4)["hidden"]["still"]
    assert where_still(many[:3], n_known=24, n_still_answered=4)["hidden"]["still"]
    # a forgotten item that only the logit lens finds is still forgotten for the records
    lens_only = {"logit_lens": {"correct": True, "changes_weights": False, "channel": "hidden"},
                 "sampling": {"correct": False, "changes_weights": False, "channel": "sampling"}}
    assert outcome(True, False, lens_only) == "forgotten"
    lens_only["sampling"]["correct"] = True
    assert outcome(True, False, lens_only) == "recovered"


def test_reading_one_layer_stops_the_model_there_and_reads_the_same_state(tiny, benchmark):
    """The probe and direction ablation read ``hidden_states[layer]`` of one layer: below the last it
    is the input of block ``layer`` and the model stops there, bit-identical to the full run's state;
    at L (after the final norm) the whole model runs. The model is untouched afterwards."""
    from unpact.models.builtin import BuiltinModelConfig, build_model
    from unpact.recovery.internals import blocks, read_layer

    _, tok, fmt = tiny
    model = build_model(BuiltinModelConfig(hidden_size=32, intermediate_size=64, num_layers=5, num_heads=2, seed=3),
                        tok).eval()
    scorer = Scorer(model, tok, fmt, batch_size=2)
    seqs = [fmt.encode(it.question).ids for it in benchmark["forget"][:5]]  # several lengths, two per batch
    full = scorer.last_states(seqs)  # [L + 1, H] per sequence, every block run
    for layer in range(6):
        ran: list[int] = []
        hooks = [b.register_forward_hook(lambda m, a, o, i=i, ran=ran: ran.append(i)) for i, b in enumerate(blocks(model))]
        try:
            part = read_layer(scorer, seqs, layer)
        finally:
            for h in hooks:
                h.remove()
        assert set(ran) == set(range(min(layer, 5))), layer  # the blocks after the one read never run
        for f, p in zip(full, part, strict=True):
            assert np.array_equal(f[layer].astype(np.float64), p), layer
    again = scorer.last_states(seqs)
    assert all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))
