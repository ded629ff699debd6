"""`make bench`: run every benchmark, print its table, and collect the figures in
benchmarks/results/latest.json. Each figure is a ratio against a baseline measured in the same run.

    .venv/bin/python benchmarks/run.py [--only NAME ...] [--results DIR]
                                       [--size builtin|tiny|135m|1b] [--device cpu|cuda] [--dtype D]
                                       [--arg NAME:--flag=value ...]

``--size``/``--device``/``--dtype`` go to every benchmark (the model they run on; sizes.py): without
them each runs its CPU default. ``--arg`` passes a flag to one benchmark (e.g.
``--arg attribution:--n=12``); gpu.sh uses these to fit the suite to a GPU and a time budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "attribution": "bench_attribution.py",
    "scoring": "bench_scoring.py",
    "memory": "bench_memory.py",
    "scaling": "bench_scaling.py",
    "study": "bench_study.py",
    "training": "bench_training.py",
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    p.add_argument("--results", type=Path, default=HERE / "results", help="folder of the JSON results")
    p.add_argument("--size", choices=("builtin", "tiny", "135m", "1b"), default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--arg", action="append", default=[], metavar="NAME:FLAG", help="a flag for one benchmark")
    args = p.parse_args()
    common = [f"--{k}={v}" for k, v in (("size", args.size), ("device", args.device), ("dtype", args.dtype))
              if v is not None]
    extra: dict[str, list[str]] = {name: [] for name in BENCHES}
    for a in args.arg:
        name, _, flag = a.partition(":")
        if name not in BENCHES or not flag:
            p.error(f"--arg {a!r}: write NAME:FLAG with NAME one of {', '.join(BENCHES)}")
        extra[name].append(flag)
    args.results.mkdir(parents=True, exist_ok=True)
    latest = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "options": common, "benchmarks": {}}
    for name in args.only:
        out = args.results / f"{name}.json"
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / BENCHES[name]), "--out", str(out), *common, *extra[name]],
                       check=True)
        latest["benchmarks"][name] = json.loads(out.read_text())
        latest["benchmarks"][name]["wall_s"] = round(time.perf_counter() - t, 1)
    (args.results / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    print(f"wrote {args.results / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
