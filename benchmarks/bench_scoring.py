"""Time shared-prefix reuse in LOO attribution and batched scoring, against baselines and a floor.

    .venv/bin/python benchmarks/bench_scoring.py [--model DIR] [--n 8] [--context 100] [--n-score 128]
                                                 [--repeat 3] [--threads N] [--out FILE]
                                                 [--size builtin|tiny|1b] [--device cpu|cuda] [--dtype D]

Work, on the same model in the same run (the prepared built-in model with ``--model``, else a freshly
initialised model of the built-in size, as in bench_attribution.py; ``--size``/``--device``/``--dtype``:
see sizes.py):

- LOO, ``loo_attributions(prefix_reuse=True)`` vs ``prefix_reuse=False`` (replace and delete
  ablations, target LP). Long prompts: ``--n`` built-in questions, each preceded by a context paragraph
  of at least ``--context`` tokens (built-in retain facts, "question answer." sentences), attributed
  (a) on every token of context + question — ablating token j shares the j tokens before it, so about
  half of each ablated prompt is reused on average — and (b) on the question's words only (user
  spans; the context is an unattributed preamble, so almost the whole prompt is shared). (c) Short
  prompts: ``4 × --n`` built-in questions alone, where the template is all that precedes the first
  feature.
- Floor: ONE model forward (no gradients, logits only at answer positions) over all the sequences the
  plain LOO scores — intact and ablated prompts with their answers, left-padded into a single batch.
  That is the least work any LOO needs without reusing work across sequences; each LOO time is also
  reported as a multiple of it. On CPU one huge batch runs slower than batches of 64 (cache
  locality), so the run also times "model only": the plain path's own batches (length buckets of the
  scorer's batch size), packed beforehand, through the model — the same work with unpact's
  bookkeeping taken out. Below 1× either means the run did less model work than scoring every
  sequence, which only reuse can do.
- Batched scoring: `Scorer.score_ids` on ``--n-score`` built-in question/answer pairs in one call vs
  one call per pair.

Each timing is the fastest of ``--repeat`` runs, the two sides of a ratio alternating. ``--threads``
sets torch's thread count (default: torch's own); on a machine shared with other jobs one thread
gives steadier timings. Writes every timing and ratio as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attribution import timed  # noqa: E402
from sizes import add_arguments, build  # noqa: E402


def context_paragraph(fmt, items, n_tokens: int) -> str:
    """Built-in facts as sentences, as many as it takes to reach ``n_tokens`` question tokens."""
    text = ""
    for it in items:
        text = f"{text} {it.question} {it.answer}.".strip()
        if len(fmt.encode(text).question_ids) >= n_tokens:
            break
    return text


def loo_sequences(scorer, questions, answers, ablation, spans, features="tokens"):
    """(prompts, answers, hidden) of every sequence ``loo_attributions`` scores — for the floor."""
    from unpact.attribution.ablation import ablate
    from unpact.attribution.features import make_features

    fmt = scorer.fmt
    prompts, answer_ids, hidden = [], [], []
    for k, (q, a) in enumerate(zip(questions, answers, strict=True)):
        enc = fmt.encode(q)
        f = make_features(features, q, fmt.question_offsets(q), fmt.token_strings(enc.question_ids),
                          None if spans is None else spans[k])
        variants = [(list(enc.ids), [])] + [ablate(enc, g, ablation, scorer.pad_id) for g in f.groups]
        prompts += [p for p, _ in variants]
        hidden += [h for _, h in variants]
        answer_ids += [fmt.encode_answer(a)] * len(variants)
    return prompts, answer_ids, hidden if ablation == "mask" else None


def one_forward(scorer, prompts, answers, hidden):
    """One no-grad forward over all sequences in a single left-padded batch (answer logits only)."""
    from unpact.scoring import answer_token_logprobs, pack

    batch = pack(prompts, answers, scorer.pad_id, hidden).to(scorer.device)
    with torch.no_grad():
        return answer_token_logprobs(scorer.model, batch)


def model_only(scorer, prompts, answers, hidden):
    """The plain path's model forwards alone: the batches `Scorer.score_ids` runs (length buckets of its
    batch size), packed beforehand; returns the function that runs them."""
    from unpact.scoring import answer_token_logprobs, length_buckets, pack

    batches = [pack([prompts[i] for i in idx], [answers[i] for i in idx], scorer.pad_id,
                    None if hidden is None else [hidden[i] for i in idx]).to(scorer.device)
               for idx in length_buckets([len(p) + len(a) for p, a in zip(prompts, answers, strict=True)],
                                         scorer.batch_size)]

    def run():
        with torch.no_grad():
            return [answer_token_logprobs(scorer.model, b) for b in batches]

    return run


def question_word_spans(question: str, context: str) -> list[tuple[int, int]]:
    """Character spans of the words after ``context`` in the stripped question."""
    text, start = question.strip(), len(context) + 1
    spans, i = [], start
    for w in text[start:].split(" "):
        spans.append((i, i + len(w)))
        i += len(w) + 1
    return spans


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--n", type=int, default=8, help="long prompts for LOO (short prompts: 4×)")
    p.add_argument("--context", type=int, default=100, help="tokens of context before each long question")
    p.add_argument("--n-score", type=int, default=128, help="pairs for batched vs one-at-a-time scoring")
    p.add_argument("--repeat", type=int, default=3, help="time each side this many times, keep the fastest")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unpact.attribution import loo_attributions
    from unpact.scoring import Scorer

    model, tok, fmt, items, source = build(args.model, args.size, args.device, args.dtype)
    scorer = Scorer(model, tok, fmt)
    limit = scorer.max_length or 10**9
    context = context_paragraph(fmt, items[len(items) // 2:], args.context)  # retain facts, not the questions
    long_items = [it for it in items
                  if len(fmt.encode(f"{context} {it.question}").ids) + len(fmt.encode_answer(it.answer)) <= limit]
    long_q = [f"{context} {it.question}" for it in long_items[:args.n]]
    long_a = [it.answer for it in long_items[:args.n]]
    short_q = [it.question for it in items[:4 * args.n]]
    short_a = [it.answer for it in items[:4 * args.n]]
    n_ctx = len(fmt.encode(context).question_ids)
    cases = {  # name: (questions, answers, ablation, spans)
        "long_tokens_replace": (long_q, long_a, "replace", None),
        "long_tokens_delete": (long_q, long_a, "delete", None),
        "long_question_words_replace": (long_q, long_a, "replace", [question_word_spans(q, context) for q in long_q]),
        "short_tokens_replace": (short_q, short_a, "replace", None),
    }
    result = {"model": source, "parameters": sum(x.numel() for x in model.parameters()), "device": args.device,
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "repeat": args.repeat,
              "context_tokens": n_ctx, "batch_size": scorer.batch_size, "loo": {}}
    print(f"model: {source}; {torch.get_num_threads()} threads, fastest of {args.repeat}; long prompts = "
          f"{n_ctx}-token context paragraph + a built-in question; scorer batch size {scorer.batch_size}")
    loo_attributions(scorer, short_q[:2], short_a[:2], ablation="replace")  # warm-up, outside the timings
    loo_attributions(scorer, short_q[:2], short_a[:2], ablation="replace", prefix_reuse=False)

    rows = []
    for name, (qs, ans, ablation, spans) in cases.items():
        def run(reuse, qs=qs, ans=ans, ablation=ablation, spans=spans):
            return loo_attributions(scorer, qs, ans, ablation=ablation, spans=spans, prefix_reuse=reuse)

        reused, t_reuse = timed(lambda: run(True))
        plain, t_plain = timed(lambda: run(False))
        for _ in range(args.repeat - 1):
            t_reuse = min(t_reuse, timed(lambda: run(True))[1])
            t_plain = min(t_plain, timed(lambda: run(False))[1])
        seqs = loo_sequences(scorer, qs, ans, ablation, spans)
        _, t_floor = timed(lambda s=seqs: one_forward(scorer, *s), args.repeat)
        _, t_model = timed(model_only(scorer, *seqs), args.repeat)
        diff = max(float(np.abs(r.contributions - q.contributions).max()) for r, q in zip(reused, plain, strict=True))
        lengths = [len(p) + len(a) for p, a in zip(seqs[0], seqs[1], strict=True)]
        r = {"prompts": len(qs), "sequences": len(lengths), "tokens_per_sequence": float(np.mean(lengths)),
             "features_per_prompt": float(np.mean([len(x.contributions) for x in plain])), "ablation": ablation,
             "reuse_s": t_reuse, "plain_s": t_plain, "floor_s": t_floor, "speedup": t_plain / t_reuse,
             "reuse_over_floor": t_reuse / t_floor, "plain_over_floor": t_plain / t_floor,
             "model_only_s": t_model, "reuse_over_model_only": t_reuse / t_model,
             "plain_over_model_only": t_plain / t_model, "max_abs_diff": diff}
        result["loo"][name] = r
        rows.append((name, r))

    print("\nfloor = one forward over all the plain LOO's sequences in a single batch; model = the plain "
          "path's model forwards alone (its batches, packed beforehand)")
    print(f"{'LOO case':28s} {'seqs':>5s} {'tok/seq':>7s} {'plain s':>8s} {'reuse s':>8s} {'speedup':>7s} "
          f"{'floor s':>8s} {'plain/fl':>8s} {'reuse/fl':>8s} {'model s':>8s} {'plain/m':>7s} {'reuse/m':>7s} "
          f"{'max|diff|':>9s}")
    for name, r in rows:
        print(f"{name:28s} {r['sequences']:5d} {r['tokens_per_sequence']:7.1f} {r['plain_s']:8.3f} {r['reuse_s']:8.3f} "
              f"{r['speedup']:6.2f}x {r['floor_s']:8.3f} {r['plain_over_floor']:7.2f}x {r['reuse_over_floor']:7.2f}x "
              f"{r['model_only_s']:8.3f} {r['plain_over_model_only']:6.2f}x {r['reuse_over_model_only']:6.2f}x "
              f"{r['max_abs_diff']:9.1e}")

    pairs = items[:args.n_score]
    prompts = [fmt.encode(it.question).ids for it in pairs]
    answers = [fmt.encode_answer(it.answer) for it in pairs]
    batched, t_batched = timed(lambda: scorer.score_ids(prompts, answers))
    single, t_single = timed(lambda: [scorer.score_ids([p], [a]).mean[0] for p, a in zip(prompts, answers, strict=True)])
    for _ in range(args.repeat - 1):
        t_batched = min(t_batched, timed(lambda: scorer.score_ids(prompts, answers))[1])
        t_single = min(t_single, timed(lambda: [scorer.score_ids([p], [a]) for p, a in zip(prompts, answers,
                                                                                           strict=True)])[1])
    _, t_floor = timed(lambda: one_forward(scorer, prompts, answers, None), args.repeat)
    diff = float(np.abs(batched.mean - np.array(single)).max())
    lengths = [len(p) + len(a) for p, a in zip(prompts, answers, strict=True)]
    result["batched_scoring"] = {
        "pairs": len(pairs), "tokens_per_sequence": float(np.mean(lengths)), "batched_s": t_batched,
        "one_at_a_time_s": t_single, "speedup": t_single / t_batched, "floor_s": t_floor,
        "batched_over_floor": t_batched / t_floor, "max_abs_diff": diff}
    print(f"\nscoring {len(pairs)} pairs ({np.mean(lengths):.1f} tokens each): one call {t_batched:.3f} s, one call per "
          f"pair {t_single:.3f} s, {t_single / t_batched:.1f}x; one forward {t_floor:.3f} s "
          f"(batched = {t_batched / t_floor:.2f}x of it); max |diff| {diff:.1e}")
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
