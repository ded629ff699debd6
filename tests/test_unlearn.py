"""Unlearning methods: each loss, as the training step assembles it, against its published formula
evaluated independently here (unpadded single-sequence forwards, no unpact maths helpers); the
training loop's hygiene."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from unpact.errors import UnpactError
from unpact.unlearn import METHODS, UnlearnConfig, get_method, unlearn
from unpact.unlearn.methods import Method, PrepareData, UnlearnBatch
from unpact.unlearn.methods.base import REDUCTIONS
from unpact.unlearn.trainer import _backward, _Data, _OneProcess


@pytest.fixture(scope="module")
def setup(tiny, benchmark):
    """(model, token ids of every example as the trainer encodes them, the trainer's data): 3 forget
    items (with refusal answers and blanked questions), 4 retain items."""
    model, tok, fmt = tiny
    forget, retain = benchmark["forget"][:3], benchmark["retain"][:4]
    data = _Data(fmt, forget, retain, tok.pad_token_id, torch.device("cpu"), 0, refusal=True, blank=True)
    enc = lambda items: [(fmt.encode(it.question).ids, fmt.encode_answer(it.answer, eos=True))  # noqa: E731
                         for it in items]
    pairs = data.pairs
    assert pairs["forget"] == enc(forget) and pairs["retain"] == enc(retain)
    spans = [fmt.encode(it.question).span for it in forget]
    assert pairs["forget_blank"] == [(p[:s] + p[e:], a) for (p, a), (s, e) in zip(pairs["forget"], spans, strict=True)]
    return model, pairs, data


def step(method, model, data, batch_size=2):
    """One training step on ``model`` through the trainer's own loss assembly (`_backward`, one
    process): all forget items, the retain items in micro-batches of ``batch_size``. Returns the
    logged loss (forget + α·retain) and its parts; the step's gradient is left in ``model``'s ``.grad``."""
    run = _OneProcess(model, None, method.trainable_parameters(model))
    return _backward(method, run, data, list(range(len(data.pairs["forget"]))),
                     list(range(len(data.pairs["retain"]))), UnlearnConfig(batch_size=batch_size))


def token_logps(model, prompt, answer):
    """[T] log p(y_k | x ⊕ y_<k) from one unpadded forward (float64)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return torch.stack([logp[len(prompt) + k - 1, t] for k, t in enumerate(answer)])


def dists(model, prompt, answer):
    """[T, V] next-token log-distributions at the answer positions."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].double()
    return torch.log_softmax(logits, -1)[len(prompt) - 1:len(prompt) + len(answer) - 1]


def nll(model, pairs):
    lps = [token_logps(model, p, a) for p, a in pairs]
    return -sum(lp.sum() for lp in lps).item() / sum(len(lp) for lp in lps)


def seq(model, pairs):
    return torch.stack([token_logps(model, p, a).sum() for p, a in pairs])


def kl(ref, model, pairs):
    total, n = 0.0, 0
    for p, a in pairs:
        r, m = dists(ref, p, a), dists(model, p, a)
        total += (r.exp() * (r - m)).sum().item()
        n += len(a)
    return total / n


def hidden(model, pairs, layer):
    out = []
    for p, a in pairs:
        with torch.no_grad():
            out.append(model(input_ids=torch.tensor([p + a]), output_hidden_states=True).hidden_states[layer + 1][0].double())
    return out


def prepared(name, model, data, **hp):
    """A method prepared on ``model`` (as the trainer prepares it), and a perturbed copy standing in
    for the model mid-training."""
    method = get_method(name, **hp)
    method.prepare(model, PrepareData(data.batches))
    moved = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return method, moved


def formula(name, ref, m, pairs, method):
    f, r, alt = pairs["forget"], pairs["retain"], pairs["forget_alt"]
    hp = method.hparams
    lr_f = seq(m, f) - seq(ref, f)
    npo = (-(2 / hp.get("beta", 1)) * F.logsigmoid(-hp.get("beta", 1) * lr_f).mean()).item()
    retain = {"gdr": nll(m, r), "klr": kl(ref, m, r), None: 0.0}[method.retain] * hp.get("alpha", 0)
    if name.startswith("GA"):
        return -nll(m, f) + retain
    if name.startswith("NPO"):
        return npo + retain
    if name == "SimNPO":
        lengths = torch.tensor([len(a) for _, a in f], dtype=torch.float64)
        nll_bar = -seq(m, f) / lengths
        return (-(2 / hp["beta"]) * F.logsigmoid(hp["beta"] * nll_bar - hp["gamma"]).mean()).item() + retain
    if name == "IdkNLL":
        return nll(m, alt) + retain
    if name == "IdkDPO":
        win, lose = seq(m, alt) - seq(ref, alt), seq(m, f) - seq(ref, f)
        return -F.logsigmoid(hp["beta"] * (win - lose)).mean().item() + retain
    if name == "TaskVector":
        return nll(m, f)
    if name == "KeyNPO":
        logratios = []
        for (p, a), (pb, _) in zip(f, pairs["forget_blank"], strict=True):
            gain = (token_logps(ref, p, a) - token_logps(ref, pb, a)).clamp(min=0)
            w = gain / gain.sum() if gain.sum() > 0 else torch.full_like(gain, 1 / len(a))
            logratios.append(len(a) * (w * (token_logps(m, p, a) - token_logps(ref, p, a))).sum())
        lr_k = torch.stack(logratios)
        return (-(2 / hp["beta"]) * F.logsigmoid(-hp["beta"] * lr_k).mean()).item() + retain
    if name == "RMU":
        layer = len(ref.model.layers) // 2
        norms = torch.cat([h.norm(dim=-1) for h in hidden(ref, f, layer)])
        target = hp["steer"] * norms.mean() * method.direction.double()
        hf = torch.cat(hidden(m, f, layer))
        hr, hr_ref = torch.cat(hidden(m, r, layer)), torch.cat(hidden(ref, r, layer))
        return (((hf - target) ** 2).mean() + hp["alpha"] * ((hr - hr_ref) ** 2).mean()).item()
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_loss_matches_its_formula(setup, name):
    model, pairs, data = setup
    hp = {"beta": 0.7} if "beta" in METHODS[name].defaults else {}
    if "alpha" in METHODS[name].defaults:
        hp["alpha"] = 2.0 if name != "RMU" else 5.0
    method, moved = prepared(name, model, data, **hp)
    loss, _ = step(method, moved, data)
    expected = formula(name, model, moved, pairs, method)
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_steps_gradient_is_the_gradient_of_its_loss(setup, name):
    """The step's passes (forget, then retain micro-batches of 2 and 2, each weighted) add up to the
    gradient of forget + α·retain on the whole batch taken in one pass."""
    model, _, data = setup
    method, moved = prepared(name, model, data)
    step(method, moved, data)
    params = method.trainable_parameters(moved)
    stepped = [p.grad.clone() for p in params]
    f_idx, r_idx = list(range(3)), list(range(4))
    batch = UnlearnBatch(data.packed("forget", f_idx), None, torch.tensor(f_idx), torch.tensor(r_idx),
                         data.packed("forget_alt", f_idx))
    whole = method.forget_loss(moved, batch)[0]
    if method.has_retain:
        retain = data.packed("retain", r_idx)
        mean = method.retain_sum(moved, retain, torch.tensor(r_idx)) / method.retain_tokens(retain).clamp(min=1)
        whole = whole + method.hparams["alpha"] * mean
    for got, expected in zip(stepped, torch.autograd.grad(whole, params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_paper_methods_reduce_to_known_values_at_the_reference(setup):
    """With the model equal to its reference the NPO term is (2/β)·log 2 and the KL term 0."""
    model, _, data = setup
    method = get_method("NPO_KLR", beta=0.5, alpha=3.0)
    method.prepare(model, PrepareData(data.batches))
    loss, parts = step(method, copy.deepcopy(model), data)
    assert parts["npo"] == pytest.approx(2 / 0.5 * math.log(2), rel=1e-5)
    assert parts["retain_kl"] == pytest.approx(0.0, abs=1e-6)
    assert loss == parts["npo"] + 3.0 * parts["retain_kl"]


def test_task_vector_negates_the_fine_tuning_direction(setup):
    model, _, data = setup
    method = get_method("TaskVector", scale=0.5)
    method.prepare(model, PrepareData(data.batches))
    tuned = copy.deepcopy(model)
    delta = {n: 0.01 * torch.randn_like(p) for n, p in tuned.named_parameters()}
    with torch.no_grad():
        for n, p in tuned.named_parameters():
            p.add_(delta[n])
    method.finalize(tuned)
    for n, p in tuned.named_parameters():
        torch.testing.assert_close(p, dict(model.named_parameters())[n] - 0.5 * delta[n], rtol=0, atol=1e-6)


def test_rmu_trains_only_mlp_down_projections_and_scales_its_coefficient(setup):
    model, _, data = setup
    method = get_method("RMU", steer=2.0)
    method.prepare(model, PrepareData(data.batches))
    params = {id(p) for p in method.trainable_parameters(model)}
    names = [n for n, p in model.named_parameters() if id(p) in params]
    assert names and all("mlp.down_proj" in n for n in names)
    assert method.coefficient > 0 and method.direction.norm().item() == pytest.approx(1.0)


def test_registry_and_unknown_names():
    assert {"GA", "GA_GDR", "GA_KLR", "NPO", "NPO_GDR", "NPO_KLR", "SimNPO", "IdkNLL", "IdkDPO", "RMU",
            "TaskVector", "KeyNPO"} == set(METHODS)
    with pytest.raises(UnpactError, match="unknown unlearning method 'GD'; choose one of: GA_GDR"):
        get_method("GD")
    with pytest.raises(UnpactError, match="unknown hyper-parameter"):
        get_method("GA_GDR", gamma=1.0)


def test_every_method_declares_what_its_forget_loss_averages_over():
    """The declaration weights each process's share of a step (`_forget_units`); whether each one is
    right is checked against the loss itself in tests/test_distributed.py."""
    for name, cls in METHODS.items():
        assert cls.forget_reduction in REDUCTIONS, name
        assert cls.forget_reduction != "refusal_tokens" or cls.needs_refusals, name  # counted on forget_alt

    class Undeclared(Method):
        name, description = "Undeclared", "a forget loss of unknown reduction"

    with pytest.raises(UnpactError, match="method Undeclared: forget_reduction must be one of items, "):
        Undeclared()


def test_same_seed_same_weights_and_training_moves_them(tiny, benchmark):
    model, tok, fmt = tiny
    cfg = UnlearnConfig(method="NPO_GDR", epochs=1, lr=1e-3, batch_size=4, retain_batch_size=4, seed=3)
    runs = []
    for _ in range(2):
        m, _ = unlearn(copy.deepcopy(model), tok, fmt, benchmark["forget"][:8], benchmark["retain"][:8], cfg)
        runs.append(m.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=0, atol=0)
    assert any(not torch.equal(runs[0][k], v) for k, v in model.state_dict().items())


def test_interrupted_run_resumes_to_identical_weights(tiny, benchmark, tmp_path):
    model, tok, fmt = tiny
    forget, retain = benchmark["forget"][:8], benchmark["retain"][:8]
    cfg = UnlearnConfig(method="NPO_KLR", epochs=3, lr=1e-3, batch_size=4, retain_batch_size=4, checkpoint_every=2)
    full, _ = unlearn(copy.deepcopy(model), tok, fmt, forget, retain, cfg)

    def stop_at_step_3(step, total, logs):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        unlearn(copy.deepcopy(model), tok, fmt, forget, retain, cfg, stop_at_step_3, checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    resumed, logs = unlearn(copy.deepcopy(model), tok, fmt, forget, retain, cfg, checkpoint_dir=tmp_path, resume=True)
    assert logs["resumed_from_step"] == 2
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    other = UnlearnConfig(**{**cfg.__dict__, "lr": 5e-4})
    with pytest.raises(UnpactError, match="checkpoint was made with other settings"):
        unlearn(copy.deepcopy(model), tok, fmt, forget, retain, other, checkpoint_dir=tmp_path, resume=True)


def test_lora_trains_adapters_and_merges_them(tiny, benchmark):
    pytest.importorskip("peft")
    model, tok, fmt = tiny
    m, logs = unlearn(copy.deepcopy(model), tok, fmt, benchmark["forget"][:4], benchmark["retain"][:4],
                      UnlearnConfig(method="GA_GDR", epochs=1, lr=1e-2, batch_size=4, retain_batch_size=4, lora_rank=4))
    assert type(m) is type(model)  # merged back into a plain transformers model
    assert logs["trainable_parameters"] < sum(p.numel() for p in model.parameters()) / 4
    assert any(not torch.equal(a, b) for a, b in zip(m.state_dict().values(), model.state_dict().values(), strict=True))


def test_diverging_loss_names_the_step(tiny, benchmark, monkeypatch, tmp_path):
    model, tok, fmt = tiny
    cls = METHODS["GA_GDR"]
    monkeypatch.setattr(cls, "forget_loss", lambda self, m, b: (torch.tensor(float("nan"), requires_grad=True), {}))
    with pytest.raises(UnpactError, match=r"loss became nan at step 1 \(forget items forget-"):
        unlearn(copy.deepcopy(model), tok, fmt, benchmark["forget"][:4], benchmark["retain"][:4],
                UnlearnConfig(method="GA_GDR", epochs=1), checkpoint_dir=tmp_path)


def test_key_npo_with_uniform_weights_is_npo(setup):
    model, _, data = setup
    key, npo = get_method("KeyNPO", beta=0.5), get_method("NPO_GDR", beta=0.5)
    key.prepare(model, PrepareData(data.batches))
    npo.prepare(model, PrepareData(data.batches))
    assert all(abs(w.sum().item() - 1) < 1e-5 and (w >= 0).all() for w in key.weights.values())
    key.weights = {i: torch.full_like(w, 1 / len(w)) for i, w in key.weights.items()}
    moved = prepared("NPO", model, data)[1]
    assert step(key, moved, data)[0] == pytest.approx(step(npo, moved, data)[0], rel=1e-5)
