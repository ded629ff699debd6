"""A study grid: models × benchmarks × seeds × methods, one resumable cell each.

    run_dir/
      config.json  manifest.json  metrics.json  records.jsonl  timings.json  report.html
      groups/<model>__<benchmark>/      data/, model/ (built-in models), base.json
      cells/<model>__<benchmark>__<method>__s<seed>/
                                         result.json, records.jsonl, metrics.json, model/, run.key

A cell is finished when its ``metrics.json`` exists with the key of its current inputs (written last,
atomically), so a killed study resumes at the first unfinished cell, a finished cell is never
recomputed, and a changed setting recomputes exactly the cells it affects. Wall-clock times go to
``timings.json`` (per group and cell, and per stage: `unpact.timing`), never into metrics, so an
interrupted and an uninterrupted run give the same ``metrics.json``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import distributed
from ..config import BenchmarkSpec, GridConfig, ModelSpec
from ..data import SPLITS, builtin
from ..data.benchmarks import Benchmark, load_benchmark
from ..errors import UnpactError
from ..evaluation.seeds import across_seeds
from ..io import read_json, read_jsonl, remove_partial_writes, write_json, write_jsonl
from ..models import finetune, hub
from ..models.builtin import prepared_info
from ..models.precision import precision_notice
from ..models.registry import model_path, resolve_model
from ..recovery import AttackKey
from ..report import render_report
from ..report.console import format_rate
from ..timing import Recorder
from ..unlearn import UnlearnConfig
from .cache import cached
from .manifest import manifest, record_models
from .progress import Reporter
from .runner import Study, model_facts


@dataclass(frozen=True)
class Cell:
    """One unlearning run of the grid: a method (overrides applied) on a model, benchmark and seed."""

    model: ModelSpec
    benchmark: BenchmarkSpec
    seed: int
    index: int  # of the method in the study's method list
    method: UnlearnConfig
    label: str  # the method's name in its group's tables: NAME, or "NAME s<seed>" with several seeds

    @property
    def group(self) -> str:
        return f"{self.model.name}__{self.benchmark.name}"

    @property
    def id(self) -> str:
        return f"{self.group}__{self.method.method}__s{self.seed}"

    def identity(self) -> dict:
        return {"cell": self.id, "group": self.group, "model_name": self.model.name,
                "benchmark": self.benchmark.name, "seed": self.seed}


class Grid:
    """Runs a `GridConfig` into one run directory."""

    def __init__(self, cfg: GridConfig, out: str | Path, reporter: Reporter | None = None, profile: bool = False):
        self.cfg, self.out = cfg, Path(out)
        self.ui = reporter or Reporter(quiet=True)
        # timings.json's per-stage table also gets model seconds and tokens (`unpact.timing`; costs a little)
        self.profile = profile
        self.manifest: dict = {}  # manifest.json of the current run (`run`)

    def cells(self) -> list[Cell]:
        """Every cell in run order: model, benchmark, seed, method."""
        multi = len(self.cfg.seeds) > 1
        out = []
        for model in self.cfg.models:
            for bench in self.cfg.benchmarks:
                for seed in self.cfg.seeds:
                    for i, m in enumerate(self.cfg.methods):
                        method = self.cfg.method_for(m, model.name, bench.name, seed)
                        out.append(Cell(model, bench, seed, i, method, m.method + (f" s{seed}" if multi else "")))
        return out

    # -- one (model, benchmark) group --------------------------------------------------------------

    def _group_dir(self, cell: Cell) -> Path:
        return self.out / "groups" / cell.group

    def _study(self, cell: Cell) -> Study:
        taught = cell.model.finetune is not None  # the pretrained model is taught the benchmark into the group
        model_dir = model_path(cell.model.path) if cell.model.path and not taught else self._group_dir(cell) / "model"
        study = Study(self.cfg.group(cell.model, cell.benchmark, cell.seed), self._group_dir(cell), self.ui,
                      model_dir=model_dir, trust_remote_code=cell.model.trust_remote_code)
        if taught:
            study.source = model_path(cell.model.path)
        if cell.model.gold:
            study.gold_dir = model_path(cell.model.gold)
        elif (cell.model.builtin is not None or taught) and self.cfg.evaluation.gold_model:
            study.gold_dir = self._group_dir(cell) / "gold"
        return study

    def _benchmark(self, bench: BenchmarkSpec) -> Benchmark:
        if bench.builtin is not None:
            return Benchmark(bench.name, builtin.generate(**asdict(bench.builtin)))
        try:
            loaded = load_benchmark(bench.format, bench.path, name=bench.name, **bench.options)
        except UnpactError as e:
            raise UnpactError(f"benchmark {bench.name}: {e}") from None
        for name in (bench.raw_text.forget, bench.raw_text.retain) if bench.raw_text else ():
            if not loaded.raw.get(name):  # before any model is trained
                raise UnpactError(f"benchmark {bench.name}: no raw corpus '{name}' (it has: "
                                  f"{', '.join(sorted(loaded.raw)) or 'none'}); name one of those in raw_text")
        return loaded

    def _model_current(self, study: Study, cell: Cell) -> bool:
        """Whether the group's original model is ready as the settings ask (no training needed)."""
        if study.teaches():
            info = finetune.prepared_info(study.model_dir)
            key = study.cfg.finetune.key(finetune.source_files(study.source), study._taught_items())
            return bool(info) and info.get("key") == key
        if cell.model.path:
            return True
        info = prepared_info(study.model_dir)
        items = [it for s in SPLITS for it in study.splits[s]]
        return bool(info) and info.get("key") == study.cfg.model.key(items)

    # -- status and run ------------------------------------------------------------------------

    def status(self) -> list[tuple[Cell, bool]]:
        """(cell, finished?) for every cell, without training, scoring or writing anything (``--dry-run``)."""
        out = []
        groups: dict[str, tuple[Study, str | None]] = {}  # group → (its study, base key or None: not ready)
        for cell in self.cells():
            study = self._study(cell)
            if cell.group not in groups:
                study.bench = self._benchmark(cell.benchmark)
                study.splits = study.bench.splits
                # every prompt measured against the model's context (the built-in one's sized), as a run would
                study.check_lengths(builtin_model=cell.model.builtin is not None)
                n = cell.benchmark.forget_known
                ready = self._model_current(study, cell) and (
                    not n or study.forget_known(n, self.cfg.seeds[0], compute=False))
                groups[cell.group] = (study, study.base_key() if ready else None)
            group, base_key = groups[cell.group]
            study.share(group)
            path = self.out / "cells" / cell.id / "metrics.json"
            done = (base_key is not None and path.is_file()
                    and read_json(path).get("key") == study.method_key(cell.index, base_key))
            out.append((cell, done))
        return out

    def run(self) -> dict:
        """Every unfinished cell, then metrics.json, records.jsonl and report.html over all cells."""
        self.out.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(self.out)  # left by a run killed mid-write; never read, so only clutter
        write_json(self.out / "config.json", self.cfg.to_dict())
        previous = read_json(self.out / "manifest.json") if (self.out / "manifest.json").is_file() else None
        self.manifest = manifest(self.cfg.seeds, previous=previous)
        write_json(self.out / "manifest.json", self.manifest)
        timings_path = self.out / "timings.json"
        timings = read_json(timings_path) if timings_path.is_file() else {}
        timings.setdefault("cells", {})
        cells = self.cells()
        status = dict((c.id, done) for c, done in self.status())
        if not all(status.values()):
            for i, m in enumerate(self.cfg.models):
                if notice := precision_notice(m.dtype, distributed.device(), f"models[{i}].dtype"):
                    self.ui.info(f"[yellow]note[/yellow]: {notice}")
        t_start = time.perf_counter()
        groups: dict[str, dict] = {}
        finished: dict[str, dict] = {}
        with self.ui.overall(f"study {self.cfg.name} (cells)", len(cells), sum(status.values())) as advance:
            for cell in cells:
                if cell.group not in groups:
                    t0 = time.perf_counter()
                    with Recorder(model_time=self.profile) as rec:
                        groups[cell.group] = self._prepare_group(cell, timings)
                    if groups[cell.group].pop("computed"):  # the original model's stage ran, not reused
                        timings.setdefault("groups", {})[cell.group] = round(time.perf_counter() - t0, 2)
                        timings.setdefault("stages", {})[cell.group] = rec.table()
                        write_json(timings_path, timings)
                study, base = groups[cell.group]["study"], groups[cell.group]["base"]
                cell_study = self._study(cell)
                cell_study.share(study)
                t0 = time.perf_counter()
                with Recorder(model_time=self.profile) as rec:
                    finished[cell.id], reused, measured = self._run_cell(cell_study, cell, base)
                if not reused:
                    seconds = round(time.perf_counter() - t0, 2)
                    if measured:  # metrics recomputed from a stored result keep the timings that measured it
                        timings["cells"][cell.id] = seconds
                        timings.setdefault("stages", {})[cell.id] = rec.table()
                        write_json(timings_path, timings)
                    advance()
                    self.ui.info(_cell_line(cell, finished[cell.id]["metrics"], timings["cells"].get(cell.id, seconds)))
        timings["last_run_seconds"] = round(time.perf_counter() - t_start, 2)
        write_json(timings_path, timings)
        metrics = self._aggregate(cells, groups, finished)
        write_jsonl(self.out / "records.jsonl",
                    (row for c in cells for row in read_jsonl(self.out / "cells" / c.id / "records.jsonl")))
        write_json(self.out / "metrics.json", metrics)
        render_report(self.out)
        return metrics

    def _prepare_group(self, cell: Cell, timings: dict) -> dict:
        study = self._study(cell)
        self.ui.info(f"[bold]{cell.model.name} × {cell.benchmark.name}[/bold]")
        if cell.model.path:  # a known model by name: converted from its wheel once; a hub model: downloaded
            resolve_model(cell.model.path, trust_remote_code=cell.model.trust_remote_code)
        info = study.prepare(self._benchmark(cell.benchmark), train=cell.model.builtin is not None)
        if cell.benchmark.forget_known:
            study.forget_known(cell.benchmark.forget_known, seed=self.cfg.seeds[0])
            study.check_lengths()  # the new forget and retain sets' answer budgets
        if "train_seconds" in info:
            timings.setdefault("models", {})[cell.group] = info["train_seconds"]
        computed = not study.base_cached()
        base = study.base()
        if cell.model.gold:
            resolve_model(cell.model.gold, trust_remote_code=cell.model.trust_remote_code)
        self._record_hub_models(cell.model)
        study.prepare_gold(base)
        path = study.model_dir.resolve()
        # inside the run directory the path is relative, so the same study run elsewhere matches
        shown = os.path.relpath(path, self.out.resolve()) if path.is_relative_to(self.out.resolve()) else hub.shown(path)
        facts = model_facts({**info, "path": shown, "dtype": study.cfg.dtype,
                             "taught_from": cell.model.path if study.teaches() else None})
        return {"study": study, "base": base, "model": facts, "computed": computed}

    def _record_hub_models(self, model: ModelSpec) -> None:
        """Add the commits that ``model``'s hub ids (original and gold) resolved to to manifest.json, so that
        a rerun can pin exactly these weights (``hf://ORG/NAME@COMMIT``)."""
        resolved = hub.resolved()
        found = {role: resolved[str(hub.parse(ref))] for role, ref in (("path", model.path), ("gold", model.gold))
                 if hub.is_hub(ref) and str(hub.parse(ref)) in resolved}
        if found:
            record_models(self.manifest, {model.name: found})
            write_json(self.out / "manifest.json", self.manifest)

    def _run_cell(self, study: Study, cell: Cell, base: dict) -> tuple[dict, bool, bool]:
        """(the cell's metrics document, whether it was reused as it was, whether the model work ran):
        a cell finished with the same inputs is reused; one whose unlearned model's answers and attacks
        are stored (``result.json``) but whose metrics are not gets them recomputed, nothing measured."""
        folder = self.out / "cells" / cell.id
        key = study.method_key(cell.index, base["key"])
        done = folder / "metrics.json"
        if done.is_file() and (stored := read_json(done)).get("key") == key:
            return stored, True, False
        measured = cached(folder / "result.json", key) is None
        res = study.run_method(cell.index, base, folder, keep_model=self.cfg.keep_models)
        ident = cell.identity()
        write_jsonl(folder / "records.jsonl",
                    ({**row, **ident, "method": cell.label} for row in study.records(base, res)))
        doc = {"key": key, **ident, "method": cell.method.method, "label": cell.label,
               "metrics": study.method_metrics(base, res)}
        write_json(done, doc)  # last: its presence with this key marks the cell finished
        return doc, False, measured

    def _aggregate(self, cells: list[Cell], groups: dict, finished: dict) -> dict:
        out_groups = []
        for gid, g in groups.items():
            members = [c for c in cells if c.group == gid]
            study = g["study"]
            methods = {c.label: {**finished[c.id]["metrics"], "cell": c.id, "method": c.method.method, "seed": c.seed}
                       for c in members}
            out_groups.append({
                "id": gid, "model_name": members[0].model.name, "benchmark": members[0].benchmark.name,
                **study.group_metrics(g["model"], g["base"]), "methods": methods,
                "across_seeds": across_seeds(methods),
            })
        return {"study": self.cfg.name, "groups": out_groups,
                "cells": {c.id: {"group": c.group, "model": c.model.name, "benchmark": c.benchmark.name,
                                 "method": c.method.method, "seed": c.seed, "label": c.label} for c in cells}}


def _cell_line(cell: Cell, m: dict, seconds: float) -> str:
    """One line per finished cell: its key numbers."""
    rates = {a: r for a, r in m["recovery_rate"].items() if r is not None and not AttackKey.parse(a).is_placebo}
    best = max(rates.items(), key=lambda kv: kv[1], default=None)
    best_text = f"{best[0]} {format_rate(best[1])}" if best else format_rate(None)
    return (f"✓ {cell.id}: forget efficacy {format_rate(m['forget_efficacy'])}, best attack {best_text}, "
            f"destructive {format_rate(m['destructive_rate'])}, {m['quadrant']} ({seconds:.0f} s)")
