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
  All steps of all prompts are batched through the model, which runs the template's opening (before
  the first question token: no α reaches it) once, and every interpolation from there on.
  Completeness says Σ_i IG_i = F(x) − F(b); every result carries ``completeness_gap`` =
  |Σ_i IG_i − (F(x) − F(b))| and ``relative_gap`` (that over |F(x) − F(b)|) so an under-converged
  integral is visible (raise ``steps``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .. import distributed
from ..errors import UnpactError
from ..scoring import Scorer, length_buckets, require
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


def _shared_prefix(prompts: list[list[int]], qpos: list[range]) -> int:
    """How many leading tokens all prompts have in common before any question token and before every
    prompt's last token (its output predicts the first answer token, so it always runs)."""
    limit = min(min(q.start for q in qpos), min(len(p) for p in prompts) - 1)
    n = 0
    while n < limit and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


def _embedding_gradients(scorer: Scorer, prompts: list[list[int]], answers: list[list[int]], qpos: list[range],
                         alphas: np.ndarray, baseline_id: int, target: str, prefix_reuse: bool = True,
                         ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """∂F/∂e at e(α) = b + α (e − b) on the question positions ``qpos[k]`` (other tokens kept), for every
    item k (prompt ids, answer ids) and node α_j of ``alphas`` [m].

    Returns per item the gradients [m, n_k, H] and the intact question embeddings e [n_k, H] (float64),
    and F at every interpolated input [K, m].

    The rows (item, node) run in batches of ``scorer.batch_size``, longest first (rows of one item have
    one length, so a batch holds little padding), with one backward per batch: rows do not interact, so
    the gradient of the summed F is every row's own gradient. Each row holds ``prompt ⊕ answer[:-1]``:
    the last answer token predicts nothing, and only the answer positions get logits, whose log-probs
    come from a logsumexp rather than a [B, T, V] log-softmax. Nothing before the first question
    token depends on α (causal attention), so with ``prefix_reuse`` (and a model whose cache allows it,
    see `unpact.scoring.Scorer.prefix_cache`) the prefix all prompts share — the template's opening — is
    run once, without gradients, and every row starts after it, attending to its cached keys/values.
    """
    emb = scorer.model.get_input_embeddings()
    device = scorer.device
    K, m = len(prompts), len(alphas)
    if not K:
        return [], [], np.empty((0, m))
    P = _shared_prefix(prompts, qpos) if prefix_reuse else 0
    # a batch's layout (cached prefix, then the rows' suffixes) never exceeds the longest prompt+answer
    prefix = scorer.prefix_cache(prompts[0][:P], max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True)))
    P = prefix.length if prefix is not None else 0
    seqs = [p[P:] + a[:-1] for p, a in zip(prompts, answers, strict=True)]  # what runs per row
    with torch.no_grad():
        base = emb(torch.tensor([baseline_id], device=device))[0]  # [H]
        embeds = [emb(torch.tensor(p[q.start:q.stop], device=device, dtype=torch.long)).double().cpu().numpy()
                  for p, q in zip(prompts, qpos, strict=True)]
    H = base.shape[0]
    grads = [np.empty((m, len(q), H)) for q in qpos]
    values = np.empty((K, m))
    rows = [(k, j) for k in range(K) for j in range(m)]
    for bucket in length_buckets([len(seqs[k]) for k, _ in rows], scorer.batch_size):
        items = [rows[r][0] for r in bucket]
        B, S, T = len(bucket), max(len(seqs[k]) for k in items), max(len(answers[k]) for k in items)
        if T == 0:  # no answer token: F is an empty sum, its gradient zero
            for k, j in (rows[r] for r in bucket):
                grads[k][j], values[k, j] = 0.0, 0.0 if target == "sum" else np.nan
            continue
        ids = np.full((B, S), scorer.pad_id, dtype=np.int64)
        mask = np.zeros((B, S), dtype=np.int64)
        qmask = np.zeros((B, S, 1), dtype=bool)
        answer_ids = np.zeros((B, T), dtype=np.int64)
        answer_mask = np.zeros((B, T), dtype=np.float32)
        for row, k in enumerate(items):  # left padding: token t of a suffix sits at S - len + t
            shift = S - len(seqs[k])
            ids[row, shift:], mask[row, shift:] = seqs[k], 1
            qmask[row, shift + qpos[k].start - P:shift + qpos[k].stop - P] = True
            if answers[k]:
                answer_ids[row, T - len(answers[k]):], answer_mask[row, T - len(answers[k]):] = answers[k], 1
        ids_t, qmask_t = torch.from_numpy(ids).to(device), torch.from_numpy(qmask).to(device)
        mask_t = torch.from_numpy(mask).to(device)
        answer_ids_t, answer_mask_t = torch.from_numpy(answer_ids).to(device), torch.from_numpy(answer_mask).to(device)
        position_ids = P + (mask_t.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            e = emb(ids_t)  # [B, S, H]
        a = torch.tensor([alphas[rows[r][1]] for r in bucket], dtype=e.dtype, device=device).view(-1, 1, 1)
        x = torch.where(qmask_t, base + a * (e - base), e).detach().requires_grad_(True)
        logits = scorer.forward_embeds(x, mask_t, position_ids, T, prefix)
        # [B, T, V]: position S - T + t predicts answer slot t (sliced again: a model may ignore logits_to_keep)
        logits = logits[:, -T:].float()
        lp = (logits.gather(-1, answer_ids_t.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)) * answer_mask_t
        f = lp.sum(1)
        if target == "mean":
            f = f / answer_mask_t.sum(1)
        (g,) = torch.autograd.grad(f.sum(), x)
        g, f = g.double().cpu().numpy(), f.detach().double().cpu().numpy()
        for row, r in enumerate(bucket):
            k, j = rows[r]
            start = S - len(seqs[k]) + qpos[k].start - P
            grads[k][j], values[k, j] = g[row, start:start + len(qpos[k])], f[row]
    return grads, embeds, values


def gradient_attributions(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], *,
                          method: str = "integrated_gradients", steps: int = 32, rule: str = "gausslegendre",
                          baseline_id: int | None = None, target: str = "mean", features: str = "tokens",
                          spans: Sequence[Sequence[tuple[int, int]] | None] | None = None,
                          prefix_reuse: bool = True) -> list[Attribution]:
    """Gradient attributions (module docstring) of every (question, answer) pair.

    method: one of `GRADIENT_METHODS`; steps, rule: integrated gradients' quadrature; baseline_id:
    IG's baseline token at every question position (default: the scorer's pad id); target: "mean" (LP)
    or "sum"; features/spans: as in `loo_attributions` (token scores are summed per feature, saliency
    takes the norm); prefix_reuse: run the prompts' common opening (before any question token) once and
    every interpolation from there on (`_embedding_gradients`; the same results up to float rounding).
    Returns `Attribution`s with ``ablated_lp=None``; IG results carry ``f_baseline``,
    ``completeness_gap`` and ``relative_gap``. Under several processes (`unpact.distributed`) each
    attributes a share of the items and every process returns all of them.
    """
    require(scorer, "gradient attribution", "weights", "hidden_states")
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
        scorer.check_length(len(enc.ids) + len(a), f"prompt+answer #{i}")
    if distributed.world() > 1:
        # each process attributes a contiguous share of the items (every item's gradients are its own,
        # so only the batch shapes, hence float rounding, depend on the process count)
        def share(mine: list[int]) -> list[Attribution]:
            return gradient_attributions(scorer, [questions[k] for k in mine], [answers[k] for k in mine],
                                         method=method, steps=steps, rule=rule, baseline_id=baseline_id,
                                         target=target, features=features,
                                         spans=None if spans is None else [spans[k] for k in mine],
                                         prefix_reuse=prefix_reuse)

        return distributed.map_shards(len(questions), share)
    with scorer.eval_mode():
        grads, embeds, values = _embedding_gradients(scorer, [enc.ids for enc in encoded], answer_ids,
                                                     [range(*enc.span) for enc in encoded], alphas, baseline,
                                                     target, prefix_reuse)
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
        g, e = grads[k], embeds[k]  # [m, n_tok, H], [n_tok, H]
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
                           lp=float(values[k, 0]) if not ig else float(f_ends[2 * k]), ablated_lp=None,
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


from .registry import attribution_method  # noqa: E402  (here, beside the methods it registers)


def _registered(method: str):
    """`gradient_attributions` with ``method`` fixed, in the registry's common signature."""

    def run(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], *, features: str,
            spans: Sequence[Sequence[tuple[int, int]] | None] | None, baseline_id: int | None, target: str,
            steps: int = 32, rule: str = "gausslegendre", prefix_reuse: bool = True, **_: object) -> list[Attribution]:
        return gradient_attributions(scorer, questions, answers, method=method, steps=steps, rule=rule,
                                     baseline_id=baseline_id, target=target, features=features, spans=spans,
                                     prefix_reuse=prefix_reuse)

    return run


_HELP = {
    "saliency": "‖∂F/∂e_i‖₂: the gradient's norm at each question token's embedding (unsigned)",
    "input_x_gradient": "e_i · ∂F/∂e_i: embedding times gradient, summed over the hidden dimension (signed)",
    "integrated_gradients": "(e_i − b_i) · ∫ ∂F/∂e_i along the path from a baseline b (signed, complete)",
}
for _name in GRADIENT_METHODS:  # the tuple `gradient_attributions` checks against: the two cannot drift apart
    attribution_method(_name, help=_HELP[_name], needs_weights=True)(_registered(_name))
