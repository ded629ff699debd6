"""Throughput from 1 to N processes under ``accelerate launch`` (data-parallel attribution, DDP unlearning).

    .venv/bin/python benchmarks/bench_scaling.py [--processes 2] [--n 160] [--repeat 3] [--epochs 4] [--rounds 2]
                                                 [--threads-reference]
                                                 [--model DIR] [--size builtin|tiny|1b] [--device cpu|cuda]
                                                 [--dtype D] [--out FILE]

Work, the same in every arm, on the same model (the built-in size by default; sizes.py):

- LOO attribution: `loo_attributions` of ``--n`` built-in questions with their gold answers (the
  study's form: delete ablation, shared-prefix reuse). Under N processes the scorer splits the prompts
  between them and gathers the results (`unpact.distributed`). Figure: attributions per second.
- Unlearning: NPO_GDR for ``--epochs`` over the built-in forget set (batches of 8 forget + 32 retain
  items); under N processes DDP splits every step's batch. Figure: optimiser steps per second (the
  training loop's own time, the reference log-probs computed before it excluded).

Arms, each a fresh run (one plain process; N processes through ``accelerate launch``), every process
with cores / N torch threads, so each process has the same share of the machine in both arms:

- ``1 process`` — the named baseline — with cores / N threads;
- ``N processes`` with cores / N threads each: together they use all the cores, and perfect scaling
  would be N times the baseline's throughput;
- with ``--threads-reference``, ``1 process, <cores> threads``: a reference, not a baseline — one
  process given all the cores as threads, i.e. what the same cores give without splitting the work
  between processes. Off by default: on a machine whose cores something else also uses, torch's
  OpenMP threads spin-wait for each other and this arm runs tens of times slower (measured here: LOO
  33x slower with 2 threads than with 1 on 2 shared cores; OMP_WAIT_POLICY=PASSIVE removes it).

Every figure is reported with its ratio to the baseline and a floor: the time of perfect scaling
(baseline time / N). On a machine with few cores (2 here: the 2-process arm has one core per process,
if nothing else runs) the processes also share them with the gathers and anything else running, which
the figure includes, honestly. On GPUs (``--device cuda``) each process has its
own GPU; with fewer GPUs than ``--processes`` the benchmark writes why it skipped and exits 0. Each
arm runs ``--rounds`` times, the arms alternating, and each figure is the fastest of them (and of
``--repeat`` runs within an arm for attribution), timed between barriers so it spans the slowest
process. Writes JSON to ``--out``; the processes' attributions are checked against the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def child(args) -> None:
    """One arm's measurements (every process runs this; the main one prints the result line)."""
    import torch

    torch.set_num_threads(args.threads)
    import warnings

    from sizes import build

    from unpact import distributed
    from unpact.attribution import loo_attributions
    from unpact.scoring import Scorer
    from unpact.unlearn import UnlearnConfig, unlearn

    warnings.filterwarnings("ignore")
    device = str(distributed.device()) if args.device.startswith("cuda") else args.device  # a GPU per process
    model, tok, fmt, items, source = build(args.model, args.size, device, args.dtype)
    scorer = Scorer(model, tok, fmt)
    qs, ans = [it.question for it in items[:args.n]], [it.answer for it in items[:args.n]]

    def timed(fn):
        distributed.barrier()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        distributed.barrier()  # the time of the slowest process: the results are only complete then
        return out, time.perf_counter() - t

    loo_attributions(scorer, qs[:2], ans[:2])  # warm-up, outside the timings
    attrs, t_loo = timed(lambda: loo_attributions(scorer, qs, ans))
    for _ in range(args.repeat - 1):
        t_loo = min(t_loo, timed(lambda: loo_attributions(scorer, qs, ans))[1])
    forget = [it for it in items if it.split == "forget"]
    retain = [it for it in items if it.split == "retain"]
    _, logs = unlearn(model, tok, fmt, forget, retain, UnlearnConfig(method="NPO_GDR", epochs=args.epochs, lr=1e-5))
    if distributed.is_main():
        print("RESULT " + json.dumps({
            "processes": distributed.world(), "threads_per_process": torch.get_num_threads(), "model": source,
            "parameters": sum(p.numel() for p in model.parameters()), "prompts": len(qs),
            "loo_s": t_loo, "loo_per_s": len(qs) / t_loo, "unlearn_steps": logs["steps"],
            "unlearn_s": logs["seconds"], "steps_per_s": logs["steps"] / logs["seconds"],
            "contributions": [a.contributions.tolist() for a in attrs]}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_arm(args, processes: int, threads: int) -> dict:
    """One arm in fresh processes; its result line as a dict."""
    me = [str(Path(__file__).resolve()), "--child", "--threads", str(threads), "--n", str(args.n),
          "--repeat", str(args.repeat), "--epochs", str(args.epochs), "--size", args.size, "--device", args.device]
    me += [f"--{k}={v}" for k, v in (("model", args.model), ("dtype", args.dtype)) if v is not None]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if processes == 1:
        cmd = [sys.executable, *me]
    else:
        # accelerate's --multi_gpu starts the processes with torchrun; on a CPU run ACCELERATE_USE_CPU
        # and no visible GPU make them CPU processes on gloo (its --cpu flag starts several only via MPI)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *me]
        if not args.device.startswith("cuda"):
            env.update({"ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""})
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"arm with {processes} process(es) failed (exit {out.returncode})")
    line = next(x for x in out.stdout.splitlines()[::-1] if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    from sizes import add_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--processes", type=int, default=2, help="processes of the scaled arm")
    p.add_argument("--n", type=int, default=160, help="questions to attribute")
    p.add_argument("--repeat", type=int, default=3, help="time the attribution this many times, keep the fastest")
    p.add_argument("--epochs", type=int, default=4, help="NPO_GDR epochs over the built-in forget set")
    p.add_argument("--threads-reference", action="store_true",
                   help="also run one process with all the cores as threads (a reference arm)")
    p.add_argument("--rounds", type=int, default=2, help="run every arm this many times (alternating), keep the fastest")
    p.add_argument("--out", type=Path, default=HERE / "results" / "scaling.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    import numpy as np
    import torch

    N = args.processes
    cores = len(os.sched_getaffinity(0))
    result: dict = {"baseline": "1 process", "processes": N, "cores": cores, "device": args.device,
                    "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    if args.device.startswith("cuda") and gpus < N:
        result["skipped"] = f"{N} processes need {N} GPUs; this machine has {gpus}"
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"skipped: {result['skipped']}")
        return
    per = max(1, cores // N)
    arms = {"1 process": (1, per), f"{N} processes": (N, per)}
    if args.threads_reference:
        arms[f"1 process, {cores} threads"] = (1, cores)
    rows: dict[str, dict] = {}
    for _ in range(args.rounds):  # arms alternate, so a busy spell on the machine hits all of them alike
        for name, (procs, threads) in arms.items():
            r = run_arm(args, procs, threads)
            if name not in rows:
                rows[name] = r
            else:  # the fastest of the rounds, per figure
                rows[name]["loo_s"] = min(rows[name]["loo_s"], r["loo_s"])
                rows[name]["unlearn_s"] = min(rows[name]["unlearn_s"], r["unlearn_s"])
    for r in rows.values():
        r["loo_per_s"], r["steps_per_s"] = r["prompts"] / r["loo_s"], r["unlearn_steps"] / r["unlearn_s"]
    base = rows["1 process"]
    reference = np.concatenate([np.array(c) for c in base.pop("contributions")])
    for name, r in rows.items():
        if name != "1 process":
            mine = np.concatenate([np.array(c) for c in r.pop("contributions")])
            r["max_abs_diff_vs_baseline"] = float(np.abs(mine - reference).max())
        r["loo_vs_baseline"] = base["loo_s"] / r["loo_s"]  # throughput ratio: > 1 is faster
        r["unlearn_vs_baseline"] = base["unlearn_s"] / r["unlearn_s"]
        r["loo_floor_s"] = base["loo_s"] / r["processes"]  # perfect scaling from the baseline
        r["loo_over_floor"] = r["loo_s"] / r["loo_floor_s"]
        r["unlearn_floor_s"] = base["unlearn_s"] / r["processes"]
        r["unlearn_over_floor"] = r["unlearn_s"] / r["unlearn_floor_s"]
    result.update({"model": base["model"], "parameters": base["parameters"], "prompts": base["prompts"],
                   "unlearn_steps": base["unlearn_steps"], "rows": rows,
                   "note": (f"{cores} cores; every process runs {per} torch thread(s) (cores / {N}), in the "
                            f"baseline's 1 process as in each of the {N}; floor = baseline time / processes "
                            "(perfect scaling)" + ("; the arm with all cores as threads of one process is a reference"
                                                   if args.threads_reference else "")),
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"model: {base['model']}; {base['prompts']} LOO prompts, NPO_GDR {base['unlearn_steps']} steps; "
          f"{result['note']}")
    print(f"{'arm':24s} {'procs':>5s} {'thr':>4s} {'LOO/s':>7s} {'vs base':>7s} {'/floor':>7s} "
          f"{'steps/s':>8s} {'vs base':>7s} {'/floor':>7s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['processes']:5d} {r['threads_per_process']:4d} {r['loo_per_s']:7.2f} "
              f"{r['loo_vs_baseline']:6.2f}x {r['loo_over_floor']:6.2f}x {r['steps_per_s']:8.2f} "
              f"{r['unlearn_vs_baseline']:6.2f}x {r['unlearn_over_floor']:6.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
