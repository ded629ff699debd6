"""Unlearning methods: each loss, as the training step assembles it, against its published formula
evaluated independently here (unpadded single-sequence forwards, no unpact maths helpers); the
training loop's hygiene."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from unpact.errors import UnpactError
from unpact.scoring import answer_token_logprobs
from unpact.unlearn import METHODS, UnlearnConfig, get_method, unlearn
from unpact.unlearn.methods import Method, PrepareData, UnlearnBatch
from unpact.unlearn.methods.base import REDUCTIONS, check_hparams, hparam_fields
from unpact.unlearn.trainer import _backward, _Data, _OneProcess


@pytest.fixture(scope="module")
def setup(tiny, benchmark):
    """(model, token ids of every example as the trainer encodes them, the trainer's data): 3 forget
    items (with refusal answers, blanked questions and up to 2 perturbed answers each: AltPO's
    alternates), 4 retain items."""
    model, tok, fmt = tiny
    forget, retain = benchmark["forget"][:3], benchmark["retain"][:4]
    data = _Data(fmt, forget, retain, tok.pad_token_id, torch.device("cpu"), 0, refusal=True, blank=True,
                 alternates=2)
    enc = lambda items: [(fmt.encode(it.question).ids, fmt.encode_answer(it.answer, eos=True))  # noqa: E731
                         for it in items]
    pairs = data.pairs
    assert pairs["forget"] == enc(forget) and pairs["retain"] == enc(retain)
    spans = [fmt.encode(it.question).span for it in forget]
    assert pairs["forget_blank"] == [(p[:s] + p[e:], a) for (p, a), (s, e) in zip(pairs["forget"], spans, strict=True)]
    alts = [(fmt.encode(it.question).ids, fmt.encode_answer(w, eos=True)) for it in forget for w in it.perturbed_answers[:2]]
    assert all(len(it.perturbed_answers) >= 2 for it in forget) and pairs["forget_alts"] == alts
    assert data.alts_of == [[0, 1], [2, 3], [4, 5]]
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


def mean_tokens(per_item):
    """The mean over every token of a list of per-item [T_i] tensors."""
    return torch.cat(per_item).mean().item()


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


def formula(name, ref, m, pairs, method, data):
    f, r, alt = pairs["forget"], pairs["retain"], pairs["forget_alt"]
    hp = method.hparams
    lr_f = seq(m, f) - seq(ref, f)
    npo = (-(2 / hp.get("beta", 1)) * F.logsigmoid(-hp.get("beta", 1) * lr_f).mean()).item()
    retain = {"gdr": nll(m, r), "klr": kl(ref, m, r), None: 0.0}[method.retain] * hp.get("alpha", 0)
    if name.startswith("GA"):
        return -nll(m, f) + retain
    if name.startswith("NPO"):
        return npo + retain
    if name == "SimNPO":  # open-unlearning's: γ·(−2/β)·log σ(β·(NLL̄ − δ)), δ the margin, γ the weight
        lengths = torch.tensor([len(a) for _, a in f], dtype=torch.float64)
        nll_bar = -seq(m, f) / lengths
        return hp["gamma"] * (-(2 / hp["beta"]) * F.logsigmoid(hp["beta"] * (nll_bar - hp["delta"])).mean()).item() + retain
    if name in ("WGA", "SatImp"):  # Σ_k w_k·log p_k / tokens, w = p^β (WGA) or p^β₁(1 − p)^β₂ (SatImp)
        terms = []
        for p, a in f:
            lp = token_logps(m, p, a)
            w = lp.exp() ** hp["beta"] if name == "WGA" else lp.exp() ** hp["beta1"] * (1 - lp.exp()) ** hp["beta2"]
            terms.append(w * lp)
        return hp.get("gamma", 1.0) * mean_tokens(terms) + retain
    if name == "UNDIAL":  # CE to softmax(z_ref − β·onehot(y)), per answer token
        terms = []
        for p, a in f:
            target = torch.softmax(dists(ref, p, a) - hp["beta"] * F.one_hot(torch.tensor(a), len(ref.lm_head.weight)), -1)
            terms.append(-(target * dists(m, p, a)).sum(-1))
        return mean_tokens(terms) + retain
    if name == "CEU":  # CE to the model's own distribution with y's logit at −∞, after the first `skip` tokens
        terms = []
        for p, a in f:
            logits = dists(m, p, a)
            target = torch.softmax(logits.clone().index_put_((torch.arange(len(a)), torch.tensor(a)),
                                                             torch.tensor(float("-inf"), dtype=logits.dtype)), -1)
            terms.append(-(target * logits).sum(-1)[hp["skip"]:])
        return mean_tokens(terms)
    if name == "AltPO":  # per item, mean over its alternates of −(2/β)·log σ(β·(Δ(alt) − Δ(gold)))
        per_item = []
        for i, (p, a) in enumerate(f):
            gold = token_logps(m, p, a).sum() - token_logps(ref, p, a).sum()
            terms = []
            for j in data.alts_of[i]:
                pa, aa = pairs["forget_alts"][j]
                alt = token_logps(m, pa, aa).sum() - token_logps(ref, pa, aa).sum()
                terms.append(-(2 / hp["beta"]) * F.logsigmoid(hp["beta"] * (alt - gold)))
            per_item.append(torch.stack(terms).mean())
        return torch.stack(per_item).mean().item() + retain
    if name == "PDU":  # (max − mean logit)² per answer token; λ starts at α
        terms = []
        for p, a in f:
            with torch.no_grad():
                logits = m(input_ids=torch.tensor([p + a])).logits[0].double()[len(p) - 1:len(p) + len(a) - 1]
            terms.append((logits.max(-1).values - logits.mean(-1)) ** 2)
        return mean_tokens(terms) + retain
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


# every hyper-parameter off its default, so that a formula reading the wrong one fails
NON_DEFAULT = {"beta": 0.7, "alpha": 2.0, "delta": 0.3, "gamma": 0.5, "beta1": 2.0, "beta2": 1.5, "skip": 2}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_loss_matches_its_formula(setup, name):
    model, pairs, data = setup
    hp = {k: v for k, v in NON_DEFAULT.items() if k in METHODS[name].defaults}
    if name == "RMU":
        hp["alpha"] = 5.0
    method, moved = prepared(name, model, data, **hp)
    loss, _ = step(method, moved, data)
    expected = formula(name, model, moved, pairs, method, data)
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
                         data.packed("forget_alt", f_idx), *data.alternates(f_idx))
    whole = method.forget_loss(moved, batch)[0]
    if method.has_retain:
        retain = data.packed("retain", r_idx)
        mean = method.retain_sum(moved, retain, torch.tensor(r_idx)) / method.retain_tokens(retain).clamp(min=1)
        whole = whole + method.retain_weight * mean
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
            "TaskVector", "KeyNPO", "UNDIAL", "SatImp", "WGA", "CEU", "AltPO", "PDU"} == set(METHODS)
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


@pytest.fixture(scope="module")
def learned(tiny, benchmark):
    """The tiny model trained until it knows 4 forget and 8 retain items (answer NLL < 0.05 nats per
    token; about 2 s): a model with something to forget, as the built-in model of a study."""
    model, tok, fmt = tiny
    forget, retain = benchmark["forget"][:4], benchmark["retain"][:8]
    data = _Data(fmt, forget + retain, retain, tok.pad_token_id, torch.device("cpu"), 0, refusal=False)
    trained = copy.deepcopy(model).train()
    opt = torch.optim.Adam(trained.parameters(), lr=1e-2)
    batch = data.packed("forget", list(range(len(forget) + len(retain))))
    for _ in range(300):
        opt.zero_grad()
        loss = -answer_token_logprobs(trained, batch).sum() / batch.answer_mask.sum()
        if loss.item() < 0.05:
            break
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    return trained.eval(), forget, retain


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_takes_steps_and_moves_the_forget_loss(tiny, learned, name):
    """Through `unlearn` itself (prepare, the schedule, the steps, `finalize`), three steps on a model
    that knows its four forget items: the method's own forget loss goes down step by step, and the
    gold forget answers become less likely (the forget NLL rises) under every method."""
    _, tok, fmt = tiny
    model, forget, retain = learned
    pairs = [(fmt.encode(it.question).ids, fmt.encode_answer(it.answer, eos=True)) for it in forget]
    cfg = UnlearnConfig(method=name, epochs=3, lr=1e-3 if name != "RMU" else 1e-2, batch_size=4, retain_batch_size=4)
    history = []
    unlearned, logs = unlearn(copy.deepcopy(model), tok, fmt, forget, retain, cfg,
                              progress=lambda step, total, parts: history.append(parts))
    own = [h["loss"] - logs["hparams"].get("alpha", 0) * h.get(get_method(name).retain_name, 0) for h in history]
    before, after = nll(model, pairs), nll(unlearned, pairs)
    print(f"{name}: own forget loss {own[0]:.4f} → {own[-1]:.4f}; forget NLL {before:.4f} → {after:.4f} "
          f"({after - before:+.4f}), {logs['seconds']} s")
    assert logs["steps"] == 3 and own[-1] < own[0]
    assert after > before + 1e-3


# -- typed hyper-parameters ----------------------------------------------------------------------


def test_every_hyper_parameter_is_typed_documented_and_its_default_in_range():
    for name, cls in METHODS.items():
        assert cls.reference and "arXiv" in cls.reference or name == "KeyNPO", name
        for f, tp in hparam_fields(cls.Hparams):
            assert tp in (int, float) and type(f.default) is tp, (name, f.name)
            assert f.metadata["help"] and f.default in f.metadata["range"], (name, f.name)
    integers = {(n, f.name) for n, c in METHODS.items() for f, tp in hparam_fields(c.Hparams) if tp is int}
    assert integers == {("RMU", "layer"), ("RMU", "seed"), ("CEU", "skip"), ("AltPO", "alternates"),
                        ("PDU", "warmup_epochs")}


def test_hyper_parameters_are_checked_in_one_place_with_the_key_path():
    """`get_method`, the study config and `unpact unlearn --set` all go through `check_hparams`: the
    same message, with each caller's key path in front."""
    assert get_method("RMU", layer=3.0, seed=2).hparams["layer"] == 3  # `--set layer=3` arrives as 3.0
    assert type(get_method("RMU", layer=3.0).hparams["layer"]) is int
    assert check_hparams(METHODS["NPO_GDR"], {"beta": "5e-4", "alpha": 2}, "") == {"beta": 5e-4, "alpha": 2.0}
    cases = [({"beta": 0}, "beta: 0.0 is out of range (0, inf); beta is the inverse temperature β"),
             ({"alpha": -1}, "alpha: -1.0 is out of range [0, inf)"),
             ({"betta": 1}, "betta: unknown hyper-parameter of NPO_GDR (did you mean 'beta'?); NPO_GDR takes beta, alpha"),
             ({"beta": True}, "beta: expected a number, got True"),
             ({"beta": float("inf")}, "beta: expected a number, got inf")]
    for values, message in cases:
        with pytest.raises(UnpactError) as e:
            get_method("NPO_GDR", **values)
        assert str(e.value).startswith("method NPO_GDR: hparams." + message) and "\n" not in str(e.value)
        with pytest.raises(UnpactError) as e:
            check_hparams(METHODS["NPO_GDR"], values, "config methods[2].hparams.")
        assert str(e.value).startswith("config methods[2].hparams." + message)
    with pytest.raises(UnpactError, match=r"^method RMU: hparams.layer: expected an integer, got 2.5$"):
        get_method("RMU", layer=2.5)


def test_simnpo_names_follow_open_unlearning():
    """δ is the margin (0), γ = 0.125 the forget term's weight (open-unlearning's SimNPO.yaml)."""
    assert METHODS["SimNPO"].defaults == {"beta": 4.5, "delta": 0.0, "gamma": 0.125, "alpha": 1.0}


def test_satimp_with_no_saturation_or_importance_weighting_is_scaled_gradient_ascent(setup):
    model, _, data = setup
    moved = prepared("GA", model, data)[1]
    batch = UnlearnBatch(data.packed("forget", [0, 1, 2]), None, torch.tensor([0, 1, 2]), torch.tensor([0]))
    ga = get_method("GA").forget_loss(moved, batch)[0]
    sat = get_method("SatImp", beta1=0.0, beta2=0.0, gamma=0.5).forget_loss(moved, batch)[0]
    wga = get_method("WGA", beta=0.0).forget_loss(moved, batch)[0]
    assert sat.item() == pytest.approx(0.5 * ga.item(), rel=1e-6) and wga.item() == pytest.approx(ga.item(), rel=1e-6)


def test_undial_with_no_adjustment_is_at_its_minimum_on_the_original_model(setup):
    """β = 0: the target is the original distribution itself, so on the original model the loss is its
    entropy and its gradient zero."""
    model, _, data = setup
    method = get_method("UNDIAL", beta=0.0)
    method.prepare(model, PrepareData(data.batches))
    same = copy.deepcopy(model)
    batch = UnlearnBatch(data.packed("forget", [0, 1, 2]), None, torch.tensor([0, 1, 2]), torch.tensor([0]))
    loss = method.forget_loss(same, batch)[0]
    for g in torch.autograd.grad(loss, list(same.parameters()), allow_unused=True):
        assert g is None or g.abs().max().item() < 1e-5


def test_pdu_dual_ascent_after_warmup_and_its_checkpointed_state(setup):
    model, pairs, data = setup
    method = get_method("PDU", alpha=1.0, eps=0.5, dual_lr=2.0, warmup_epochs=1)
    method.prepare(model, PrepareData(data.batches))
    assert method.bound == pytest.approx(nll(model, pairs["retain"]) + 0.5, rel=1e-5)
    method.after_step({"retain_nll": method.bound + 1.0}, epochs_done=0)  # warm-up: λ stays
    assert method.retain_weight == 1.0
    method.after_step({"retain_nll": method.bound + 1.0}, epochs_done=1)  # λ + η·(violation 1)
    assert method.retain_weight == pytest.approx(3.0)
    method.after_step({"retain_nll": method.bound - 10.0}, epochs_done=2)  # satisfied: λ ≥ 0
    assert method.retain_weight == 0.0
    other = get_method("PDU")
    other.prepare(model, PrepareData(data.batches))
    other.load_state({"dual": 1.5, **method.state()})
    assert other.retain_weight == 0.0


def test_pdu_resumes_with_its_dual_variable(learned, tiny, tmp_path):
    """The dual variable is training state: a resumed run continues with the one it had."""
    _, tok, fmt = tiny
    model, forget, retain = learned
    cfg = UnlearnConfig(method="PDU", epochs=3, lr=1e-3, batch_size=2, retain_batch_size=4, checkpoint_every=2,
                        hparams={"warmup_epochs": 0, "eps": 0.0})
    full, logs = unlearn(copy.deepcopy(model), tok, fmt, forget, retain, cfg)

    def stop_at_step_3(step, total, parts):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        unlearn(copy.deepcopy(model), tok, fmt, forget, retain, cfg, stop_at_step_3, checkpoint_dir=tmp_path)
    resumed, _ = unlearn(copy.deepcopy(model), tok, fmt, forget, retain, cfg, checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
