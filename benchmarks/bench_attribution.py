"""Time unpact's attribution against captum 0.9 on the same work, and check the results agree.

    .venv/bin/python benchmarks/bench_attribution.py [--model DIR] [--n 20] [--steps 32] [--repeat 5]
                                                     [--only loo|ig] [--out FILE]
                                                     [--size builtin|tiny|1b] [--device cpu|cuda] [--dtype D]

Work: ``--n`` built-in benchmark questions with their gold answers, attributed on the summed answer
log-prob (captum's quantity), replacing each question token by the pad token:

- LOO: `unpact.attribution.loo_attributions(ablation="replace")` (all ablations of all prompts in one
  batched scorer call) vs captum ``LLMAttribution(FeatureAblation)`` in its correct mode
  ``forward_in_tokens=False`` (one forward of prompt+answer per perturbation; captum's default cached
  mode is wrong under transformers 5, see docs/design.md, Known pitfalls in peers), one prompt at a time;
- IG: `unpact.attribution.gradient_attributions` (all steps of all prompts batched, one backward per
  batch) vs captum
  ``LLMGradientAttribution(LayerIntegratedGradients)`` on the embedding layer (one IG per answer token),
  both Gauss-Legendre with ``--steps`` nodes and the same baseline. Both are compute-bound on CPU, and
  with one-token answers (most gold answers here) captum's per-answer-token loop costs it nothing extra,
  so the IG ratio is mostly what unpact saves in per-call overhead; the answer lengths are reported.
  Each IG case also times a floor: the model's forward and input-gradient backward alone over the same
  interpolations (prompt ⊕ answer without its last token, logits at the answer positions only, one
  batch per prompt as captum batches them, inputs built beforehand: `run_floor`). Any IG that runs
  every node over the whole sequence does this work, so captum / floor bounds the speed-up that
  removing overhead can give; unpact goes below it only by skipping model work (the template opening
  it runs once, batches across prompts).

The model is the prepared built-in model when ``--model`` is given, else a freshly initialised model
of the built-in size (4 layers, hidden 128) with a tokenizer trained on the built-in benchmark text;
``--size``/``--device``/``--dtype`` pick another fresh model and where it runs (`sizes.py`; the GPU
suite, gpu.sh, uses a 1B model in bfloat16, where the agreement checks are at bfloat16's precision).
Each timing is the fastest of ``--repeat`` runs (the runs take well under a second: one run alone is
at the mercy of anything else on the machine); both sides run alternately. Writes timings, speed
ratios, IG floors, the largest disagreement and IG completeness gaps as JSON to ``--out`` (with ``--only``, just
the part that ran).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sizes import add_arguments, build, synchronize  # noqa: E402,F401  (build: imported from here by others)


def timed(fn, repeat: int = 1):
    """fn's output and its fastest wall time over ``repeat`` runs."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        synchronize()
        t = time.perf_counter()
        out = fn()
        synchronize()  # GPU work is queued: the time must include it
        best = min(best, time.perf_counter() - t)
    return out, best


def timed_pair(ours, theirs, repeat: int):
    """Both sides' outputs and fastest times, run alternately so a busy spell hits both alike."""
    (o, to), (t, tt) = timed(ours), timed(theirs)
    for _ in range(max(1, repeat) - 1):
        to = min(to, timed(ours)[1])
        tt = min(tt, timed(theirs)[1])
    return o, to, t, tt


def ig_floor_batches(model, fmt, questions, answers, steps: int, baseline_id: int):
    """The model work of integrated gradients, prepared beforehand for `run_floor`: per prompt, its
    ``steps`` Gauss-Legendre interpolations of prompt ⊕ answer-without-its-last-token (nothing
    predicts from the last token), as one unpadded batch — captum's batching.

    Returns per prompt (x [steps, L, H] requiring grad, answer ids [T]).
    """
    from unpact.attribution import integration_nodes

    emb = model.get_input_embeddings()
    alphas, _ = integration_nodes(steps)
    out = []
    with torch.no_grad():
        base = emb(torch.tensor([baseline_id], device=model.device))[0]
        for q, a in zip(questions, answers, strict=True):
            enc, ans = fmt.encode(q), fmt.encode_answer(a)
            e = emb(torch.tensor([enc.ids + ans[:-1]], device=model.device))  # [1, L, H]
            s, t = enc.span
            alpha = torch.tensor(alphas, dtype=e.dtype, device=model.device).view(-1, 1, 1)
            x = e.repeat(steps, 1, 1)
            x[:, s:t] = base + alpha * (e[:, s:t] - base)
            out.append((x.requires_grad_(True), torch.tensor(ans, device=model.device)))
    return out


def run_floor(model, batches) -> None:
    """Forward and input-gradient backward of every prepared batch, logits only at the answer positions,
    the answer log-probs summed: the part of IG no implementation that runs every node over the whole
    sequence can skip."""
    for x, ans in batches:
        T = len(ans)
        logits = model(inputs_embeds=x, use_cache=False, logits_to_keep=T).logits[:, -T:].float()
        lp = logits.gather(-1, ans.expand(len(x), T).unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        torch.autograd.grad(lp.sum(), x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--n", type=int, default=20, help="prompts for LOO (IG uses a quarter: captum IG is slow)")
    p.add_argument("--steps", type=int, default=32, help="integrated gradients steps (Gauss-Legendre)")
    p.add_argument("--repeat", type=int, default=5, help="time each side this many times, keep the fastest")
    p.add_argument("--only", choices=("loo", "ig"), default=None, help="run only one of the two comparisons")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/attribution.json"))
    args = p.parse_args()

    from captum.attr import (
        FeatureAblation,
        LayerIntegratedGradients,
        LLMAttribution,
        LLMGradientAttribution,
        TextTokenInput,
    )

    from unpact.attribution import gradient_attributions, loo_attributions
    from unpact.scoring import Scorer

    warnings.filterwarnings("ignore", message="the baseline token's embedding")
    model, tok, fmt, items, source = build(args.model, args.size, args.device, args.dtype)
    pad = tok.pad_token_id
    # captum tokenizes the rendered prompt itself: keep the prompts where that equals unpact's ids
    items = [it for it in items if tok.encode(fmt.render(it.question)) == fmt.encode(it.question).ids][:args.n]
    qs, ans = [it.question for it in items], [it.answer for it in items]
    n_ig = max(1, len(items) // 4)  # captum IG is the slow part; a quarter of the prompts keeps the run short
    scorer = Scorer(model, tok, fmt)
    fa = LLMAttribution(FeatureAblation(model), tok)
    lig = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tok)

    def captum_loo():
        out = []
        for q, a in zip(qs, ans, strict=True):
            inp = TextTokenInput(fmt.render(q), tok, baselines=pad)
            s, e = fmt.encode(q).span
            r = fa.attribute(inp, target=torch.tensor(fmt.encode_answer(a)), forward_in_tokens=False)
            out.append(r.seq_attr.detach().double().cpu().numpy()[s:e])
        return out

    def captum_ig(answers):
        out = []
        for q, a in zip(qs[:n_ig], answers, strict=True):
            enc = fmt.encode(q)
            s, e = enc.span
            presence = torch.ones(1, len(enc.ids), dtype=torch.long,  # 0 → the input's baseline token
                                  device=model.device)
            presence[0, s:e] = 0
            r = lig.attribute(TextTokenInput(fmt.render(q), tok, baselines=pad), target=torch.tensor(fmt.encode_answer(a)),
                              baselines=presence, n_steps=args.steps, method="gausslegendre")
            out.append(r.seq_attr.detach().double().cpu().numpy()[s:e])
        return out

    def ours_loo():
        return loo_attributions(scorer, qs, ans, ablation="replace", target="sum")

    def ours_ig(answers):
        return gradient_attributions(scorer, qs[:n_ig], answers, method="integrated_gradients",
                                     steps=args.steps, target="sum")

    # Gold answers here are one or two tokens, where captum's one-IG-per-answer-token loop costs it
    # nothing; sentence answers (TOFU's are 20–40 tokens) show the cost that unpact's single pass saves.
    ig_cases = {"ig": ans[:n_ig], "ig_sentence": [f"I believe it is {a}, as far as I recall." for a in ans[:n_ig]]}

    run_loo, run_ig = args.only in (None, "loo"), args.only in (None, "ig")
    result = {
        "model": source, "parameters": sum(p.numel() for p in model.parameters()), "device": args.device,
        "torch_threads": torch.get_num_threads(), "repeat": args.repeat,
        "n_prompts_loo": len(qs) if run_loo else 0, "n_prompts_ig": n_ig if run_ig else 0, "ig_steps": args.steps,
    }
    print(f"model: {source}; {len(qs)} prompts (IG: {n_ig}, {args.steps} Gauss-Legendre steps), "
          f"{torch.get_num_threads()} threads, fastest of {args.repeat}")
    if run_loo:
        # warm-up (allocator, kernels) on one prompt each, outside the timings
        loo_attributions(scorer, qs[:1], ans[:1], ablation="replace")
        fa.attribute(TextTokenInput(fmt.render(qs[0]), tok, baselines=pad),
                     target=torch.tensor(fmt.encode_answer(ans[0])), forward_in_tokens=False)
        ours_l, t_ours_l, theirs_l, t_theirs_l = timed_pair(ours_loo, captum_loo, args.repeat)
        loo_err = max(float(np.abs(o.contributions - t).max()) for o, t in zip(ours_l, theirs_l, strict=True))
        result["loo"] = {"unpact_s": t_ours_l, "captum_s": t_theirs_l, "speedup": t_theirs_l / t_ours_l,
                         "max_abs_diff": loo_err, "agree_1e-4": loo_err <= 1e-4}
        print(f"LOO  unpact {t_ours_l:6.3f} s   captum FeatureAblation {t_theirs_l:6.3f} s   "
              f"{t_theirs_l / t_ours_l:5.1f}x   max |diff| {loo_err:.2e}")
    for case, answers in ig_cases.items() if run_ig else ():
        ours_i, t_ours_i, theirs_i, t_theirs_i = timed_pair(lambda a=answers: ours_ig(a),
                                                            lambda a=answers: captum_ig(a), args.repeat)
        ig_err = max(float(np.abs(o.contributions - t).max()) for o, t in zip(ours_i, theirs_i, strict=True))
        ig_scale = max(float(np.abs(t).max()) for t in theirs_i)
        floor_batches = ig_floor_batches(model, fmt, qs[:n_ig], answers, args.steps, pad)
        _, t_floor = timed(lambda b=floor_batches: run_floor(model, b), args.repeat)
        gaps = [o.completeness_gap for o in ours_i]
        rel = [o.relative_gap for o in ours_i if o.relative_gap is not None]
        lengths = [len(fmt.encode_answer(a)) for a in answers]
        result[case] = {"unpact_s": t_ours_i, "captum_s": t_theirs_i, "speedup": t_theirs_i / t_ours_i,
                        "max_abs_diff": ig_err, "max_abs_attr": ig_scale, "agree": ig_err <= 1e-4 + 1e-3 * ig_scale,
                        "floor_s": t_floor, "unpact_over_floor": t_ours_i / t_floor,
                        "captum_over_floor": t_theirs_i / t_floor,
                        "answer_tokens": lengths, "completeness_gap_max": max(gaps),
                        "relative_gap_median": float(np.median(rel)) if rel else None}
        print(f"IG   unpact {t_ours_i:6.3f} s   captum LayerIG         {t_theirs_i:6.3f} s   "
              f"{t_theirs_i / t_ours_i:5.1f}x   max |diff| {ig_err:.2e} (max |attr| {ig_scale:.2e}); "
              f"answers of {min(lengths)}–{max(lengths)} tokens")
        print(f"     floor {t_floor:6.3f} s: unpact {t_ours_i / t_floor:.2f}x of it, captum {t_theirs_i / t_floor:.2f}x "
              f"(captum / floor = {t_theirs_i / t_floor:.1f}x: what removing all of captum's overhead would gain)")
        print(f"     completeness gap: max {max(gaps):.3g}, median relative "
              f"{result[case]['relative_gap_median'] if rel else 'n/a'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
