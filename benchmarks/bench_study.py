"""Study throughput: one full cell (unlearn → evaluate → attribute → attack), stage by stage, against
the floor of the same model work.

    .venv/bin/python benchmarks/bench_study.py [--size builtin|tiny|135m|1b] [--config YAML]
                                               [--method GA_GDR] [--n-entities 100] [--threads N]
                                               [--device cpu|cuda] [--dtype D] [--out FILE]

What runs: a one-method study grid (`unpact run --profile`), so the figures are the real study's:
- ``--size builtin`` (default): the demo's settings, its built-in model trained on the built-in
  benchmark (``--n-entities`` people), with its gold model;
- ``--size tiny|135m|1b``: a randomly initialised model of that shape (sizes.py; 135m is SmolLM2's
  shape, vocabulary 49152) saved as a pretrained model folder, on the built-in benchmark, no gold
  model (so the never-known control runs, as on a real pretrained model). It knows nothing, so its
  answers run to the full answer budget: the worst case for generation;
- ``--config YAML``: any study config (e.g. configs/real-smollm2.yaml), its first model × benchmark,
  with only ``--method``.

Per stage (``unpact.timing``): the wall time, the time inside the model's forward and backward calls,
the tokens the model was given (non-padding positions; generation counts every decoding step's
row), tokens per second, and the stage's floor: the same tokens at the model's peak rate, measured in
the same run as the fastest of three large batched calls (inference: ``--batch`` rows of
``--length`` tokens without gradients; training: the same with a backward). The cell's wall / floor
is the headline figure. The original model's stages (answers, attributions, controls; run once per
model × benchmark) are reported apart from the cell's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attribution import timed  # noqa: E402
from sizes import SIZES, fresh_model, tokenizer_and_items  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def study_config(args, work: Path) -> dict:
    """The one-cell study this run measures, as the dict a study YAML holds."""
    if args.config:
        cfg = yaml.safe_load(Path(args.config).read_text())
        cfg["models"], cfg["benchmarks"] = cfg["models"][:1], cfg["benchmarks"][:1]
    else:
        cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
        cfg["benchmarks"][0]["builtin"]["n_entities"] = args.n_entities
        if args.size != "builtin":
            cfg["models"] = [{"name": args.size, "path": str(save_fresh(args, work / "model"))}]
    cfg["name"], cfg["seeds"], cfg["keep_models"] = "bench-study", cfg.get("seeds", [0])[:1], False
    chosen = [m for m in cfg.get("methods", []) if m["method"] == args.method]
    cfg["methods"] = chosen or [{"method": args.method}]
    if args.dtype:
        cfg["dtype"] = args.dtype
    return cfg


def save_fresh(args, folder: Path) -> Path:
    """A randomly initialised model of ``--size`` saved as a model folder with its tokenizer."""
    from unpact.models.loading import save_model

    tok, _ = tokenizer_and_items()
    save_model(fresh_model(args.size, tok, "cpu", args.dtype), tok, folder)
    return folder


def peak_rates(model, batch: int, length: int, device: str) -> dict[str, float]:
    """Tokens per second of the model's largest useful calls: inference (no gradients, logits of the
    last position only, as generation and scoring need few) and a training step's forward + backward."""
    model = model.to(device)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=device)
    mask = torch.ones_like(ids)

    def infer():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)

    def train():
        out = model(input_ids=ids, attention_mask=mask, use_cache=False)
        out.logits.float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    _, t_inf = timed(infer, repeat=3)
    model.train()
    _, t_train = timed(train, repeat=3)
    model.eval()
    return {"infer": batch * length / t_inf, "train": batch * length / t_train}


def rows(stages: dict[str, dict], rates: dict[str, float]) -> list[dict]:
    out = []
    for name, s in stages.items():
        floor = s["infer_tokens"] / rates["infer"] + s["train_tokens"] / rates["train"]
        tokens = s["infer_tokens"] + s["train_tokens"]
        out.append({"stage": name, **s, "tokens_per_s": round(tokens / s["wall_s"], 1) if s["wall_s"] else None,
                    "floor_s": round(floor, 3), "wall_over_floor": round(s["wall_s"] / floor, 2) if floor else None})
    return out


def total(table: list[dict]) -> dict:
    wall, floor = sum(r["wall_s"] for r in table), sum(r["floor_s"] for r in table)
    return {"wall_s": round(wall, 2), "model_s": round(sum(r["model_s"] for r in table), 2),
            "floor_s": round(floor, 2), "wall_over_floor": round(wall / floor, 2) if floor else None}


def show(title: str, table: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'stage':<28}{'wall s':>9}{'model s':>9}{'tokens':>10}{'tok/s':>9}{'floor s':>9}{'wall/floor':>11}")
    for r in sorted(table, key=lambda r: -r["wall_s"]):
        ratio = f"{r['wall_over_floor']:.1f}×" if r["wall_over_floor"] else "–"
        print(f"  {r['stage']:<28}{r['wall_s']:>9.2f}{r['model_s']:>9.2f}{r['infer_tokens'] + r['train_tokens']:>10}"
              f"{r['tokens_per_s'] or 0:>9.0f}{r['floor_s']:>9.2f}{ratio:>11}")
    t = total(table)
    print(f"  {'total':<28}{t['wall_s']:>9.2f}{t['model_s']:>9.2f}{'':>10}{'':>9}{t['floor_s']:>9.2f}"
          f"{(t['wall_over_floor'] or 0):>10.1f}×")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=SIZES, default="builtin")
    p.add_argument("--config", default=None, help="a study config to take the model and benchmark from")
    p.add_argument("--method", default="GA_GDR")
    p.add_argument("--n-entities", type=int, default=100, help="people in the built-in benchmark")
    p.add_argument("--batch", type=int, default=32, help="rows of the peak-rate calls")
    p.add_argument("--length", type=int, default=64, help="tokens per row of the peak-rate calls")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--work", type=Path, default=None, help="run folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "study.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from unpact import distributed
    from unpact.config import GridConfig, from_dict, validate_grid
    from unpact.models import load_model
    from unpact.study import Grid
    from unpact.study.progress import Reporter

    if args.device != "cpu":
        distributed.device = lambda: torch.device(args.device)  # the study loads every model here
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        cfg = validate_grid(from_dict(GridConfig, study_config(args, work)))
        t0 = time.perf_counter()
        grid = Grid(cfg, work / "run", Reporter(quiet=True), profile=True)
        grid.run()
        wall = time.perf_counter() - t0
        timings = json.loads((work / "run" / "timings.json").read_text())
        # the group's stages are missing when ``--work`` held them finished already (reused)
        group_id = next((k for k in timings["stages"] if k in timings.get("groups", {})), None)
        cell_id = next(k for k in timings["stages"] if k in timings["cells"])
        group, cell = timings["stages"].get(group_id, {}), timings["stages"][cell_id]
        spec = cfg.models[0]
        model_dir = work / "run" / "groups" / group_id / "model" if spec.builtin is not None else spec.path
        from unpact.models.registry import model_path

        model, _ = load_model(model_path(model_dir), device=args.device)
        if args.dtype:
            model.to(getattr(torch, args.dtype))
        rates = peak_rates(model, args.batch, args.length, args.device)
    group_rows, cell_rows = rows(group, rates), rows(cell, rates)
    described = args.config or f"{args.size} model, built-in benchmark ({args.n_entities} people)"
    print(f"study cell: {described}, method {args.method}, {torch.get_num_threads()} threads on {args.device}")
    print(f"peak rates: inference {rates['infer']:.0f} tok/s, training {rates['train']:.0f} tok/s "
          f"({args.batch}×{args.length} tokens per call)")
    if group_rows:
        show(f"original model × benchmark (once per group): {group_id}", group_rows)
    show(f"the cell: {cell_id}", cell_rows)
    cell_total = total(cell_rows)
    print(f"\ncell wall / floor: {cell_total['wall_over_floor']:.1f}×   (whole run {wall:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "study", "what": described, "method": args.method, "device": args.device,
        "threads": torch.get_num_threads(), "peak_tokens_per_s": {k: round(v) for k, v in rates.items()},
        "group": {"stages": group_rows, "total": total(group_rows)},
        "cell": {"stages": cell_rows, "total": cell_total}, "run_s": round(wall, 1),
        "figure": {"cell_wall_over_floor": cell_total["wall_over_floor"]}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
