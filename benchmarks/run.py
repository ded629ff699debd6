"""`make bench`: run every benchmark, print its table, and collect the figures in
benchmarks/results/latest.json. Each figure is a ratio against a baseline measured in the same run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "attribution": ["bench_attribution.py", "--out", str(HERE / "results" / "attribution.json")],
    "scoring": ["bench_scoring.py", "--out", str(HERE / "results" / "scoring.json")],
    "memory": ["bench_memory.py", "--out", str(HERE / "results" / "memory.json")],
}


def main() -> int:
    latest = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "benchmarks": {}}
    for name, (script, *args) in BENCHES.items():
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *args], check=True)
        latest["benchmarks"][name] = json.loads(Path(args[-1]).read_text())
    (HERE / "results" / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    print(f"wrote {HERE / 'results' / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
