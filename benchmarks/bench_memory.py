"""Peak memory of unlearning methods against GA on the same model and data.

    .venv/bin/python benchmarks/bench_memory.py [--methods GA NPO_KLR ...] [--hidden 512] [--layers 8]

Each method runs in a fresh process (peak RSS is per process) on the same randomly initialised
Llama of the built-in architecture scaled up (default hidden 512 × 8 layers ≈ 26M parameters, so the
weights dominate the footprint), for one epoch over the built-in forget/retain sets. Reported: peak
RSS and its growth during unlearning, and each method's ratio to GA (goal for NPO_KLR: ≤ 1.15×;
keeping a second full reference model, as open-unlearning does, would add the model's size again).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(method: str, hidden: int, layers: int) -> dict:
    import torch

    from unpact.data import builtin
    from unpact.models import PlainFormat
    from unpact.models.builtin import BuiltinModelConfig, build_model, train_tokenizer
    from unpact.unlearn import UnlearnConfig, unlearn

    torch.set_num_threads(2)
    splits = builtin.generate(seed=0)
    texts = [f"Question: {it.question}\nAnswer: {it.answer}" for s in splits.values() for it in s]
    tok = train_tokenizer(texts, 1024)
    model = build_model(BuiltinModelConfig(hidden_size=hidden, intermediate_size=3 * hidden, num_layers=layers,
                                           num_heads=8), tok)
    before = rss_mb()
    _, logs = unlearn(model, tok, PlainFormat(tok), splits["forget"], splits["retain"],
                      UnlearnConfig(method=method, epochs=1, lr=1e-5))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    return {"method": method, "parameters": params, "model_mb": params * 4 / 2**20, "rss_before_mb": before,
            "peak_rss_mb": peak, "growth_mb": peak - before, "seconds": logs["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["GA", "NPO_KLR", "GA_KLR", "NPO_GDR", "IdkDPO", "RMU"])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.hidden, args.layers)))
        return
    rows = []
    for method in args.methods:
        out = subprocess.run([sys.executable, __file__, "--child", method, "--hidden", str(args.hidden),
                              "--layers", str(args.layers)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next(r for r in rows if r["method"] == "GA")
    for r in rows:
        r["peak_vs_GA"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        r["growth_vs_GA"] = r["growth_mb"] / base["growth_mb"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": "GA", "rows": rows}, indent=2) + "\n")
    print(f"{'method':10s} {'peak MB':>9s} {'growth MB':>10s} {'peak/GA':>8s} {'growth/GA':>10s} {'s':>6s}")
    for r in rows:
        print(f"{r['method']:10s} {r['peak_rss_mb']:9.0f} {r['growth_mb']:10.0f} {r['peak_vs_GA']:8.2f} "
              f"{r['growth_vs_GA']:10.2f} {r['seconds']:6.1f}")
    print(f"(model weights: {base['model_mb']:.0f} MB; a second full reference model would add that much)")


if __name__ == "__main__":
    main()
