"""Non-finite numbers: a broken or overflowing model must stop scoring with a message that names the
items and the dtype, and a diverging unlearning run must stop before it writes bad weights."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unpact.errors import UnpactError
from unpact.scoring import Scorer
from unpact.unlearn import METHODS, UnlearnConfig, unlearn
from unpact.unlearn.trainer import schedule

QUESTIONS = ["What is two plus three?", "Which day comes after Monday?", "Where was Marthe Bramley born?",
             "What is the opposite of hot?", "Which instrument does Arwen Oakby play?"]
ANSWERS = ["five", "Tuesday", "Drennick", "cold", "the harp"]


def encode(fmt):
    return [fmt.encode(q).ids for q in QUESTIONS], [fmt.encode_answer(a) for a in ANSWERS]


def untied(model):
    """A copy whose lm_head no longer shares the embedding matrix, so that one can be broken alone."""
    m = copy.deepcopy(model)
    m.lm_head.weight = torch.nn.Parameter(m.lm_head.weight.detach().clone())
    return m


def single_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg.splitlines() == [msg]
    return msg


def test_finite_scores_stay_finite(tiny, tiny_scorer):
    prompts, answers = encode(tiny[2])
    for distribution in (False, True):
        scores = tiny_scorer.score_ids(prompts, answers, distribution=distribution)
        assert np.isfinite(scores.mean).all() and all(np.isfinite(t).all() for t in scores.per_token)


def test_nan_weight_names_the_item_and_dtype(tiny):
    model, tok, fmt = tiny
    prompts, answers = encode(fmt)
    # a token only item 2's prompt holds: a NaN in its embedding poisons that one sequence
    others = {t for i, (p, a) in enumerate(zip(prompts, answers, strict=True)) if i != 2 for t in p + a}
    token = next(t for t in prompts[2] if t not in others and t != tok.pad_token_id)
    broken = untied(model)
    with torch.no_grad():
        broken.model.embed_tokens.weight[token, 0] = float("nan")
    # batches of 2 in length order: item 2 is not row 2 of its batch, so the index must be mapped back
    with pytest.raises(UnpactError) as e:
        Scorer(broken, tok, fmt, batch_size=2).score_ids(prompts, answers)
    msg = single_line(e)
    assert "item #2 " in msg and "float32" in msg and "check the model weights" in msg
    assert "#0" not in msg and "#1" not in msg and "overflow" not in msg


def test_many_broken_items_are_named_first_few(tiny):
    model, tok, fmt = tiny
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.lm_head.weight[3, 0] = float("nan")  # every next-token distribution
    with pytest.raises(UnpactError, match=r"items #0, #1, #2, #3, #4 and 3 more \(model dtype float32\)"):
        Scorer(broken, tok, fmt).score_ids([[5, 6, 7]] * 8, [[8, 9]] * 8)


def _float16(model):
    half = copy.deepcopy(model).half()
    try:
        half(input_ids=torch.tensor([[5, 6, 7]]))
    except RuntimeError as e:  # some CPU builds have no float16 kernels for every op
        pytest.skip(f"float16 forward unsupported on this torch build: {e}")
    return half


def test_float16_overflow_says_so(tiny):
    model, tok, fmt = tiny
    half = _float16(model)
    prompts, answers = encode(fmt)
    assert np.isfinite(Scorer(half, tok, fmt).score_ids(prompts, answers).mean).all()
    with torch.no_grad():
        w = half.lm_head.weight
        # large but finite weights (65504 is float16's largest): only the logits' dot products overflow
        w.mul_(min(1e5, 6e4 / w.abs().max().item()))
        assert torch.isfinite(w).all()
    with pytest.raises(UnpactError) as e:
        Scorer(half, tok, fmt).score_ids(prompts, answers)
    msg = single_line(e)
    assert "float16 overflowed" in msg and "bfloat16 or float32" in msg and "#0" in msg


def test_float16_nan_weight_is_not_called_an_overflow(tiny):
    model, tok, fmt = tiny
    half = _float16(model)
    with torch.no_grad():
        half.lm_head.weight[3, 0] = float("nan")
    with pytest.raises(UnpactError, match="model dtype float16.*check the model weights") as e:
        Scorer(half, tok, fmt).score_ids([[5, 6, 7]], [[8, 9]])
    assert "overflow" not in single_line(e)


# -- unlearning ----------------------------------------------------------------------------------

CFG = UnlearnConfig(method="GA_GDR", epochs=2, lr=1e-3, batch_size=4, retain_batch_size=4, checkpoint_every=1)


def _break_step_2(monkeypatch, spoil):
    """GA_GDR whose forget loss goes through ``spoil`` on the second step only."""
    cls = METHODS["GA_GDR"]
    original, calls = cls.forget_loss, []

    def forget_loss(self, model, batch):
        loss, parts = original(self, model, batch)
        calls.append(1)
        return (spoil(loss) if len(calls) == 2 else loss), parts

    monkeypatch.setattr(cls, "forget_loss", forget_loss)


def _step_2_ids(forget, retain):
    f_idx, _ = schedule(len(forget), len(retain), CFG)[1]
    return [forget[j].id for j in f_idx[:3]]


@pytest.mark.parametrize("spoil, what", [
    (lambda loss: loss * float("inf"), "loss became -?inf"),
    # finite value, NaN gradient (d sqrt/dx = inf at 0, times 0): stepping on it would write NaN weights
    (lambda loss: loss + torch.sqrt(0 * loss), "gradient norm became nan"),
])
def test_diverging_unlearning_stops_at_the_step_and_keeps_the_last_good_checkpoint(
        tiny, benchmark, monkeypatch, tmp_path, spoil, what):
    model, tok, fmt = tiny
    forget, retain = benchmark["forget"][:8], benchmark["retain"][:8]
    _break_step_2(monkeypatch, spoil)
    with pytest.raises(UnpactError, match=rf"GA_GDR: {what} at step 2 \(forget items ") as e:
        unlearn(copy.deepcopy(model), tok, fmt, forget, retain, CFG, checkpoint_dir=tmp_path)
    msg = single_line(e)
    assert all(i in msg for i in _step_2_ids(forget, retain))
    ckpt = tmp_path / "checkpoint"
    assert f"last good checkpoint is in {ckpt}" in msg
    assert json.loads((ckpt / "state.json").read_text())["step"] == 1
    weights = load_file(ckpt / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert any(not torch.equal(weights[n], p) for n, p in model.named_parameters())  # step 1 was taken
    monkeypatch.undo()  # the run resumes from the kept checkpoint once the loss behaves
    _, logs = unlearn(copy.deepcopy(model), tok, fmt, forget, retain, CFG, checkpoint_dir=tmp_path, resume=True)
    assert logs["resumed_from_step"] == 1 and np.isfinite(logs["final_loss"])
