"""Time training steps behind a shared opening against whole sequences, on the same model in one run.

    .venv/bin/python benchmarks/bench_training.py [--opening 30] [--batch 16] [--steps 6] [--repeat 3]
                                                  [--threads N] [--out FILE]
                                                  [--size builtin|tiny|135m|1b] [--device cpu|cuda] [--dtype D]

A chat model's template opens every prompt with the same system turn (SmolLM2: 30 tokens of a ~45-token
training sequence). Teaching, unlearning and the relearning attack all train through
`answer_token_logprobs`, which runs such an opening once per batch as a one-row cache
(`scoring._behind_opening`). Work: ``--steps`` batches of ``--batch`` built-in question/answer pairs,
each prompt preceded by the same ``--opening`` tokens; one step = the answer NLL forward + backward.
Baseline: the same steps with the opening recomputed in every row (the path taken before). Each
timing is the fastest of ``--repeat`` runs, the two sides alternating. Writes the timings and the
ratio as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attribution import timed_pair  # noqa: E402
from sizes import add_arguments, build  # noqa: E402

import unpact.scoring as scoring  # noqa: E402
from unpact.scoring import pack  # noqa: E402
from unpact.unlearn.methods.base import nll  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--opening", type=int, default=30, help="shared opening tokens before each question")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok, fmt, items, source = build(args.model, args.size, args.device, args.dtype)
    model.train()
    opening = [i for it in items[:8] for i in fmt.encode(it.question).ids][:args.opening]
    batches = []
    for s in range(args.steps):
        rows = items[s * args.batch:(s + 1) * args.batch]
        batches.append(pack([opening + fmt.encode(it.question).ids for it in rows],
                            [fmt.encode_answer(it.answer, eos=True) for it in rows], tok.pad_token_id).to(args.device))
    k = scoring._opening_length(batches[0])[0]

    def steps():
        for b in batches:
            model.zero_grad(set_to_none=True)
            nll(model, b).backward()

    def whole():
        real = scoring._behind_opening
        scoring._behind_opening = lambda model, batch: None
        try:
            steps()
        finally:
            scoring._behind_opening = real

    _, ours, _, theirs = timed_pair(steps, whole, args.repeat)
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    result = {"model": source, "opening_tokens": args.opening, "shared_opening": k, "batch": args.batch,
              "steps": args.steps, "tokens": tokens, "whole_s": round(theirs, 3), "behind_opening_s": round(ours, 3),
              "speedup": round(theirs / ours, 2), "threads": torch.get_num_threads()}
    print(f"{source}: {args.steps} training steps of {args.batch} sequences ({tokens} tokens, a shared opening of "
          f"{k}): whole sequences {theirs:.2f} s, behind the opening {ours:.2f} s — {theirs / ours:.2f}×")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
