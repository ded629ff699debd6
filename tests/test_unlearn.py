import copy
import math

import pytest
import torch

from unpact.errors import UnpactError
from unpact.scoring import pack
from unpact.unlearn import METHODS, UnlearnConfig, get_method, unlearn
from unpact.unlearn.methods import UnlearnBatch


def _batch(fmt, tok, items, idx):
    pairs = [(fmt.encode(it.question).ids, fmt.encode_answer(it.answer, eos=True)) for it in items]
    return pack([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], tok.pad_token_id)


def _reference_nll(model, fmt, items):
    """Token-mean answer NLL from unpadded single-sequence forwards (independent of unpact.scoring)."""
    total, count = 0.0, 0
    for it in items:
        p, a = fmt.encode(it.question).ids, fmt.encode_answer(it.answer, eos=True)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0].double(), -1)
        total -= sum(logp[len(p) + k - 1, t].item() for k, t in enumerate(a))
        count += len(a)
    return total / count


def test_ga_gdr_and_npo_gdr_losses_match_their_formulas(tiny, benchmark):
    model, tok, fmt = tiny
    forget, retain = benchmark["forget"][:3], benchmark["retain"][:4]
    batch = UnlearnBatch(_batch(fmt, tok, forget, [0, 1, 2]), _batch(fmt, tok, retain, [0, 1, 2, 3]),
                         torch.tensor([0, 1, 2]))
    nll_f, nll_r = _reference_nll(model, fmt, forget), _reference_nll(model, fmt, retain)

    ga = get_method("GA_GDR", alpha=2.0)
    loss, _ = ga.loss(model, batch)
    assert loss.item() == pytest.approx(-nll_f + 2.0 * nll_r, rel=1e-5)

    npo = get_method("npo_gdr", beta=0.5, alpha=1.0)  # names are case-insensitive
    npo.prepare(model, [(batch.forget, batch.forget_index)])
    loss, parts = npo.loss(model, batch)
    # the reference is the model itself, so log-ratios are 0 and the NPO term is (2/β)·log 2
    assert parts["npo"] == pytest.approx(2 / 0.5 * math.log(2), rel=1e-5)
    assert loss.item() == pytest.approx(2 / 0.5 * math.log(2) + nll_r, rel=1e-5)


def test_registry_and_unknown_names():
    assert {"GA_GDR", "NPO_GDR"} <= set(METHODS)
    with pytest.raises(UnpactError, match="unknown unlearning method 'GD'; choose one of: GA_GDR"):
        get_method("GD")
    with pytest.raises(UnpactError, match="unknown hyper-parameter"):
        get_method("GA_GDR", gamma=1.0)


def test_same_seed_same_weights_and_training_moves_them(tiny, benchmark):
    model, tok, fmt = tiny
    cfg = UnlearnConfig(method="NPO_GDR", epochs=1, lr=1e-3, batch_size=4, retain_batch_size=4, seed=3)
    runs = []
    for _ in range(2):
        m = copy.deepcopy(model)
        unlearn(m, tok, fmt, benchmark["forget"][:8], benchmark["retain"][:8], cfg)
        runs.append(m.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=0, atol=0)
    assert any(not torch.equal(runs[0][k], v) for k, v in model.state_dict().items())


def test_diverging_loss_names_the_step(tiny, benchmark, monkeypatch):
    model, tok, fmt = tiny
    cls = METHODS["GA_GDR"]
    monkeypatch.setattr(cls, "loss", lambda self, m, b: (torch.tensor(float("nan"), requires_grad=True), {}))
    with pytest.raises(UnpactError, match=r"loss became nan at step 1 \(forget items forget-"):
        unlearn(copy.deepcopy(model), tok, fmt, benchmark["forget"][:4], benchmark["retain"][:4],
                UnlearnConfig(method="GA_GDR", epochs=1))
