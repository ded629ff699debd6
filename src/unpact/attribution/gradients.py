"""Gradient attributions over the input embeddings of the question tokens.

The attributed quantity F is the same as leave-one-out's: LP(x, y), the mean answer log-prob
(``target="mean"``), or the summed answer log-prob (``target="sum"``, captum's quantity). F of all
answer tokens comes out of one teacher-forced forward pass, so one backward pass gives the gradient of
the whole answer — not one pass per answer token (by linearity of the gradient that is the same as
summing per-token attributions, which is what captum's LLMGradientAttribution loops over).

Methods, with e_i [H] the embedding of question token i and g_i = ∂F/∂e_i:

- ``saliency``: ‖g_i‖₂ (the L2 norm over the hidden dimension; unsigned). For a multi-token feature,
  the L2 norm of the concatenated gradients (so it stays a norm).
- ``input_x_gradient``: Σ_h e_ih · g_ih (signed; a feature sums its tokens).
- ``integrated_gradients``: (e_i − b_i) · ∫₀¹ ∂F/∂e_i (b + α(e − b)) dα, summed over h, with b the
  baseline embedding: by default the pad token's embedding at every question position (template and
  special tokens are kept as they are, exactly as in replace-ablation). A zero vector is *not* a
  neutral input for RMSNorm models — RMSNorm divides by the vector's norm, so F is nearly constant
  along α·e and jumps near α = 0 — so zero is not the default. Where the pad row of the embedding is
  itself all zeros (an untrained ``padding_idx`` row, as in the built-in model) the pad baseline *is*
  a zero baseline: a warning says so; pass ``baseline_id``.
  The integral is a quadrature over ``steps`` nodes: ``gausslegendre`` (default; captum's default too)
  or a Riemann rule (``riemann_middle``, ``riemann_trapezoid``, ``riemann_left``, ``riemann_right``).
  All steps of all prompts are batched through the model. Completeness says Σ_i IG_i = F(x) − F(b);
  every result carries ``completeness_gap`` = |Σ_i IG_i − (F(x) − F(b))| and ``relative_gap`` (that
  over |F(x) − F(b)|) so an under-converged integral is visible (raise ``steps``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .. import distributed
from ..errors import UnpactError
from ..scoring import Scorer, answer_token_logprobs, pack
from .ablation import Attribution, ablate, check_target
from .features import make_features

GRADIENT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")
INTEGRATION_RULES = ("gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right")


def integration_nodes(steps: int, rule: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Nodes α [steps] in [0, 1] and weights [steps] (summing to 1) of a quadrature of ∫₀¹ f(α) dα."""
    if steps < 1 or (rule == "riemann_trapezoid" and steps < 2):
        raise UnpactError(f"--steps {steps}: integrated gradients needs at least {2 if rule == 'riemann_trapezoid' else 1} steps")
    k = np.arange(steps, dtype=np.float64)
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]; map to [0, 1]
        return (x + 1) / 2, w / 2
    if rule == "riemann_middle":
        return (k + 0.5) / steps, np.full(steps, 1 / steps)
    if rule == "riemann_left":
        return k / steps, np.full(steps, 1 / steps)
    if rule == "riemann_right":
        return (k + 1) / steps, np.full(steps, 1 / steps)
    if rule == "riemann_trapezoid":
        w = np.full(steps, 1 / (steps - 1))
        w[[0, -1]] /= 2
        return k / (steps - 1), w
    raise UnpactError(f"unknown integration rule {rule!r}: use one of {', '.join(INTEGRATION_RULES)}")


def _embedding_gradients(scorer: Scorer, prompts: list[list[int]], answers: list[list[int]],
                         qpos: list[range], alphas: np.ndarray, baseline_id: int, target: str,
                         ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """For every row r: e(ℓ) = b + α_r (e − b) at the question positions ``qpos[r]`` (other tokens kept).

    Returns per row the gradient ∂F/∂e(α_r) [n_r, H] and the intact embeddings e [n_r, H] of the
    question tokens, and F at the interpolated input [R]. Rows are packed in batches of
    ``scorer.batch_size``; one backward per batch (rows do not interact, so the gradient of the summed F
    is every row's own gradient).
    """
    model = scorer.model
    emb = model.get_input_embeddings()
    grads: list[np.ndarray] = [np.empty(0)] * len(prompts)
    embeds: list[np.ndarray] = [np.empty(0)] * len(prompts)
    values = np.empty(len(prompts))
    device = scorer.device
    base = emb(torch.tensor([baseline_id], device=device)).detach()[0]  # [H]
    for lo in range(0, len(prompts), scorer.batch_size):
        idx = range(lo, min(lo + scorer.batch_size, len(prompts)))
        batch = pack([prompts[r] for r in idx], [answers[r] for r in idx], scorer.pad_id).to(device)
        L = batch.input_ids.shape[1]
        with torch.no_grad():
            e = emb(batch.input_ids)  # [B, L, H]
        qmask = torch.zeros(e.shape[:2] + (1,), dtype=torch.bool, device=device)
        for row, r in enumerate(idx):  # left padding: the unpadded position p sits at L - len + p
            shift = L - len(prompts[r]) - len(answers[r])
            qmask[row, shift + qpos[r].start:shift + qpos[r].stop] = True
        a = torch.tensor(alphas[list(idx)], dtype=e.dtype, device=device).view(-1, 1, 1)
        x = torch.where(qmask, base + a * (e - base), e).detach().requires_grad_(True)
        lp = answer_token_logprobs(model, batch, inputs_embeds=x)  # [B, T]
        f = lp.sum(1)
        if target == "mean":
            f = f / batch.answer_mask.sum(1)
        (g,) = torch.autograd.grad(f.sum(), x)
        values[list(idx)] = f.detach().double().cpu().numpy()
        g, e = g.double().cpu().numpy(), e.double().cpu().numpy()
        for row, r in enumerate(idx):
            shift = L - len(prompts[r]) - len(answers[r])
            sl = slice(shift + qpos[r].start, shift + qpos[r].stop)
            grads[r], embeds[r] = g[row, sl], e[row, sl]
    return grads, embeds, values


def gradient_attributions(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], *,
                          method: str = "integrated_gradients", steps: int = 32, rule: str = "gausslegendre",
                          baseline_id: int | None = None, target: str = "mean", features: str = "tokens",
                          spans: Sequence[Sequence[tuple[int, int]] | None] | None = None) -> list[Attribution]:
    """Gradient attributions (module docstring) of every (question, answer) pair.

    method: one of `GRADIENT_METHODS`; steps, rule: integrated gradients' quadrature; baseline_id:
    IG's baseline token at every question position (default: the scorer's pad id); target: "mean" (LP)
    or "sum"; features/spans: as in `loo_attributions` (token scores are summed per feature, saliency
    takes the norm). Returns `Attribution`s with ``ablated_lp=None``; IG results carry ``f_baseline``,
    ``completeness_gap`` and ``relative_gap``. Under several processes (`unpact.distributed`) each
    attributes a share of the items and every process returns all of them.
    """
    check_target(target)
    if method not in GRADIENT_METHODS:
        raise UnpactError(f"unknown gradient method {method!r}: use one of {', '.join(GRADIENT_METHODS)}")
    ig = method == "integrated_gradients"
    alphas, weights = integration_nodes(steps, rule) if ig else (np.ones(1), np.ones(1))
    fmt = scorer.fmt
    baseline = scorer.pad_id if baseline_id is None else int(baseline_id)
    encoded = [fmt.encode(q) for q in questions]
    answer_ids = [fmt.encode_answer(a) for a in answers]
    for i, (enc, a) in enumerate(zip(encoded, answer_ids, strict=True)):
        scorer._check_length(len(enc.ids) + len(a), f"prompt+answer #{i}")
    if distributed.world() > 1:
        # each process attributes a contiguous share of the items (every item's gradients are its own,
        # so only the batch shapes, hence float rounding, depend on the process count)
        def share(mine: list[int]) -> list[Attribution]:
            return gradient_attributions(scorer, [questions[k] for k in mine], [answers[k] for k in mine],
                                         method=method, steps=steps, rule=rule, baseline_id=baseline_id,
                                         target=target, features=features,
                                         spans=None if spans is None else [spans[k] for k in mine])

        return distributed.map_shards(len(questions), share)
    m = len(alphas)
    rows_p = [enc.ids for enc in encoded for _ in range(m)]
    rows_a = [a for a in answer_ids for _ in range(m)]
    rows_q = [range(*enc.span) for enc in encoded for _ in range(m)]
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        grads, embeds, values = _embedding_gradients(
            scorer, rows_p, rows_a, rows_q, np.tile(alphas, len(encoded)), baseline, target)
    finally:
        scorer.model.train(was_training)
    f_ends = None
    if ig:  # F(x) and F(baseline) for the completeness check, through the ordinary scorer
        ends = scorer.score_ids([p for enc in encoded for p in (enc.ids, ablate(enc, range(len(enc.question_ids)),
                                                                              "replace", baseline)[0])],
                                [a for a in answer_ids for _ in range(2)])
        f_ends = ends.mean if target == "mean" else np.array([t.sum() for t in ends.per_token])
    base_vec = scorer.model.get_input_embeddings().weight[baseline].detach().double().cpu().numpy()
    if ig and not base_vec.any():
        warnings.warn(f"the baseline token's embedding (id {baseline}) is all zeros (an untrained padding row?): "
                      "a zero baseline is not neutral under RMSNorm and integrated gradients converge badly; "
                      "pass baseline_id= a real token", stacklevel=2)
    results = []
    for k, enc in enumerate(encoded):
        g = np.stack(grads[k * m:(k + 1) * m])  # [m, n_tok, H]
        e = embeds[k * m]  # [n_tok, H]
        tokens = fmt.token_strings(enc.question_ids)
        offsets = fmt.question_offsets(questions[k])
        f = make_features(features, questions[k], offsets, tokens, None if spans is None else spans[k])
        if method == "saliency":
            contrib = np.array([np.sqrt((g[0, grp] ** 2).sum()) for grp in f.groups])
        else:
            per_token = ((e - base_vec) * np.tensordot(weights, g, axes=1)).sum(-1) if ig else (e * g[0]).sum(-1)
            contrib = np.array([per_token[grp].sum() for grp in f.groups])
        custom = not (features == "tokens" and (spans is None or spans[k] is None))
        attr = Attribution(question=questions[k], answer=answers[k], tokens=tokens, contributions=contrib,
                           lp=float(values[k * m]) if not ig else float(f_ends[2 * k]), ablated_lp=None,
                           offsets=offsets, method=method, feature_labels=f.labels if custom else None,
                           groups=f.groups if custom else None, target=target)
        if ig:
            fx, fb = float(f_ends[2 * k]), float(f_ends[2 * k + 1])
            # completeness holds for the token attributions; features that overlap or leave tokens out
            # (user spans) would not sum to it, so the gap is taken over all question tokens.
            total = per_token.sum()
            attr.f_baseline = fb
            attr.completeness_gap = float(abs(total - (fx - fb)))
            attr.relative_gap = float(attr.completeness_gap / abs(fx - fb)) if fx != fb else None
        results.append(attr)
    return results
