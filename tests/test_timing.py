"""Stage timing (`unpact.timing`): exclusive wall time per stage, model time, and the tokens counted
exactly, with nothing recorded and no hook left behind outside a recorder."""

from __future__ import annotations

import time

import torch
from torch.nn.modules import module as nn_module

from unpact.recovery.internals import blocks
from unpact.scoring import pack
from unpact.timing import Recorder, stage


def test_nested_stages_charge_only_the_innermost_and_add_up_to_the_wall_time():
    t0 = time.perf_counter()
    with Recorder() as rec:
        with stage("outer"):
            time.sleep(0.05)
            with stage("inner"):
                time.sleep(0.1)
            time.sleep(0.05)
        with stage("inner"):  # entered again: accumulated
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    table = rec.table()
    assert list(table) == ["outer", "inner"]
    assert 0.09 <= table["outer"]["wall_s"] < 0.14
    assert 0.14 <= table["inner"]["wall_s"] < 0.2
    assert table["outer"]["wall_s"] + table["inner"]["wall_s"] <= wall + 2e-3  # each rounded to 1 ms
    assert "model_s" not in table["outer"]  # without model_time only walls are kept


def test_tokens_are_the_non_padding_positions_fed_and_training_is_told_apart(tiny):
    model, tok, fmt = tiny
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
    answers = [[20, 21], [22], [23, 24, 25]]
    batch = pack(prompts, answers, pad_id=0)  # left-padded to 8 columns: 24 positions, 16 tokens
    handles_before = len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks)
    with Recorder(model_time=True) as rec:
        with stage("score"), torch.no_grad():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        with stage("train"):
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            out.logits.sum().backward()
        with stage("generate"):  # prefill 5 tokens, then 3 new tokens in 2 more steps (batch of 1)
            model.generate(input_ids=torch.tensor([[5, 6, 7, 8, 9]]), attention_mask=torch.ones(1, 5, dtype=torch.long),
                           max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    model.zero_grad(set_to_none=True)
    table = rec.table()
    assert table["score"]["infer_tokens"] == 16 and table["score"]["train_tokens"] == 0
    assert table["train"]["train_tokens"] == 16 and table["train"]["infer_tokens"] == 0
    assert table["generate"]["infer_tokens"] == 5 + 2 and table["generate"]["calls"] == 3
    for s in table.values():  # the model's time is part of the stage's, and the backward is counted
        assert 0 < s["model_s"] <= s["wall_s"]
    assert len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks) == handles_before
    assert torch.autograd.backward.__module__ == "torch.autograd"


def test_nothing_is_recorded_without_a_recorder(tiny):
    model, *_ = tiny
    with stage("anything"), torch.no_grad():  # no recorder: a plain span, no error, no state
        model(input_ids=torch.tensor([[5, 6]]))
    with Recorder(model_time=True) as rec:
        pass
    assert rec.table() == {}


def test_a_forward_stopped_early_leaves_the_counting_intact(tiny_scorer):
    # `states_before` stops the model with an exception in a block's pre-hook; the always-called post
    # hook must still unwind the nesting, or every later call would be charged to nobody
    scorer = tiny_scorer
    seqs = [[5, 6, 7], [8, 9, 10, 11]]
    with Recorder(model_time=True) as rec:
        with stage("probe"):
            scorer.states_before(seqs, blocks(scorer.model)[1])
        with stage("after"), torch.no_grad():
            scorer.model(input_ids=torch.tensor([[5, 6, 7]]))
    table = rec.table()
    assert rec._depth == 0
    assert table["probe"]["calls"] == 1 and table["probe"]["infer_tokens"] == 7
    assert table["after"]["calls"] == 1 and table["after"]["infer_tokens"] == 3 and table["after"]["model_s"] > 0
