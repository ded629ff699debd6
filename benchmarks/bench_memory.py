"""Peak memory of unlearning methods against GA on the same model and data.

    .venv/bin/python benchmarks/bench_memory.py [--methods GA NPO_KLR ...] [--hidden 512] [--layers 8]
                                                [--size builtin|tiny|1b] [--device cpu|cuda] [--dtype D] [--out FILE]

Each method runs in a fresh process (peak RSS is per process) on the same randomly initialised
Llama of the built-in architecture scaled up (default hidden 512 × 8 layers ≈ 26M parameters, so the
weights dominate the footprint), for one epoch over the built-in forget/retain sets. Reported: peak
RSS and its growth during unlearning, and each method's ratio to GA (goal for NPO_KLR: ≤ 1.15×;
keeping a second full reference model, as open-unlearning does, would add the model's size again).

``--size`` replaces the scaled-up model by one of sizes.py's (tiny: a smoke test; 1b: the GPU suite).
On a GPU (``--device cuda``) the figure is the peak of allocated GPU memory (torch's allocator) and its
growth during unlearning, and the ratios are taken on it; RSS is still reported.
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


def child(method: str, hidden: int, layers: int, size: str | None, device: str, dtype: str | None) -> dict:
    import torch

    from unpact.models import PlainFormat
    from unpact.unlearn import UnlearnConfig, unlearn

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sizes import fresh_model, tokenizer_and_items

    torch.set_num_threads(2)
    tok, splits = tokenizer_and_items()
    if size is None:  # the built-in architecture scaled up, so the weights dominate the footprint
        model = fresh_model("builtin", tok, device, dtype, hidden_size=hidden, intermediate_size=3 * hidden,
                            num_layers=layers, num_heads=8)
    else:
        model = fresh_model(size, tok, device, dtype)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated() / 2**20
    before = rss_mb()
    _, logs = unlearn(model, tok, PlainFormat(tok), splits["forget"], splits["retain"],
                      UnlearnConfig(method=method, epochs=1, lr=1e-5))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    bytes_per = next(model.parameters()).element_size()
    row = {"method": method, "parameters": params, "model_mb": params * bytes_per / 2**20, "device": device,
           "rss_before_mb": before, "peak_rss_mb": peak, "growth_mb": peak - before, "seconds": logs["seconds"]}
    if cuda:
        torch.cuda.synchronize()
        gpu_peak = torch.cuda.max_memory_allocated() / 2**20
        row.update({"gpu_before_mb": gpu_before, "gpu_peak_mb": gpu_peak, "gpu_growth_mb": gpu_peak - gpu_before})
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["GA", "NPO_KLR", "GA_KLR", "NPO_GDR", "IdkDPO", "RMU"])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size", choices=("builtin", "tiny", "1b"), default=None,
                   help="a model of sizes.py instead of the scaled-up built-in one (--hidden/--layers)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.hidden, args.layers, args.size, args.device, args.dtype)))
        return
    rows = []
    for method in args.methods:
        extra = [f"--{k}={v}" for k, v in (("size", args.size), ("dtype", args.dtype)) if v is not None]
        out = subprocess.run([sys.executable, __file__, "--child", method, "--hidden", str(args.hidden),
                              "--layers", str(args.layers), "--device", args.device, *extra],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    gpu = "gpu_peak_mb" in rows[0]
    peak, growth = ("gpu_peak_mb", "gpu_growth_mb") if gpu else ("peak_rss_mb", "growth_mb")
    base = next(r for r in rows if r["method"] == "GA")
    for r in rows:
        r["peak_vs_GA"] = r[peak] / base[peak]
        r["growth_vs_GA"] = r[growth] / base[growth]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": "GA", "measure": "cuda allocated" if gpu else "rss", "rows": rows},
                                   indent=2) + "\n")
    what = "GPU allocated" if gpu else "RSS"
    print(f"{'method':10s} {'peak MB':>9s} {'growth MB':>10s} {'peak/GA':>8s} {'growth/GA':>10s} {'s':>6s}   ({what})")
    for r in rows:
        print(f"{r['method']:10s} {r[peak]:9.0f} {r[growth]:10.0f} {r['peak_vs_GA']:8.2f} "
              f"{r['growth_vs_GA']:10.2f} {r['seconds']:6.1f}")
    print(f"(model weights: {base['model_mb']:.0f} MB; a second full reference model would add that much)")


if __name__ == "__main__":
    main()
