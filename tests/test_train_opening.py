"""Training behind a shared opening (`scoring._behind_opening`): a batch whose rows all open with the same
system turn runs that turn once. The answer log-probs and their gradients are the whole-sequence ones,
the model sees fewer tokens, and batches without such an opening take the plain path."""

from __future__ import annotations

import copy

import pytest
import torch

import unpact.scoring as scoring
from unpact.scoring import answer_token_logprobs, pack
from unpact.unlearn.methods.base import nll


@pytest.fixture(scope="module")
def batches(tiny, benchmark):
    """(model, a batch whose rows share a 20+-token opening, the same rows behind a short one)."""
    model, tok, fmt = tiny
    model = copy.deepcopy(model).train()
    opening = fmt.encode(" ".join(f"{it.question} {it.answer}." for it in benchmark["retain"][:2])).ids
    items = benchmark["forget"][:6]
    questions = [tok.encode(it.question, add_special_tokens=False) for it in items]
    answers = [fmt.encode_answer(it.answer, eos=True) for it in items]
    assert len(opening) >= scoring._MIN_OPENING + 4
    long = pack([opening + q for q in questions], answers, tok.pad_token_id)
    short = pack([opening[:3] + q for q in questions], answers, tok.pad_token_id)
    return model, long, short


def _fed(model, fn):
    """(fn's result, tokens the model was given across its calls)."""
    seen = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        return fn(), sum(seen)
    finally:
        hook.remove()


def _plain(monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(scoring, "_behind_opening", lambda model, batch: None)
        return fn()


def test_log_probs_and_gradients_behind_the_opening_are_the_whole_sequences(batches, monkeypatch):
    model, long, _ = batches
    k, _ = scoring._opening_length(long)
    assert k >= scoring._MIN_OPENING

    def loss_and_grads():
        model.zero_grad()
        loss = nll(model, long)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (ours, grads), fed = _fed(model, loss_and_grads)
    (theirs, ref), fed_plain = _plain(monkeypatch, lambda: _fed(model, loss_and_grads))
    assert torch.allclose(ours, theirs, atol=1e-5)
    for g, r in zip(grads, ref, strict=True):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-4)
    # the opening once, then each row's own tokens: k · (B − 1) fewer than the padded whole batch
    assert fed == fed_plain - k * (long.input_ids.shape[0] - 1)
    with torch.no_grad():
        per_token = answer_token_logprobs(model, long)
        plain = _plain(monkeypatch, lambda: answer_token_logprobs(model, long))
    assert torch.allclose(per_token, plain, atol=1e-5) and (per_token != 0).any()


def test_a_short_opening_or_a_hidden_token_in_it_takes_the_plain_path(batches, monkeypatch):
    model, long, short = batches
    assert scoring._opening_length(short)[0] < scoring._MIN_OPENING
    with torch.no_grad():
        _, fed = _fed(model, lambda: answer_token_logprobs(model, short))
    assert fed == short.input_ids.numel()
    # one row masks a token of the opening out (leave-one-out's hidden positions): not shared any more
    hidden = copy.deepcopy(long)
    row = 2
    first = int(hidden.attention_mask[row].to(torch.int64).argmax())
    hidden.attention_mask[row, first + 5] = 0
    assert scoring._opening_length(hidden)[0] == 5
    with torch.no_grad():
        got, fed = _fed(model, lambda: answer_token_logprobs(model, hidden))
        ref = _plain(monkeypatch, lambda: answer_token_logprobs(model, hidden))
    assert fed == hidden.input_ids.numel() and torch.equal(got, ref)
