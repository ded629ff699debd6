"""`unpact tune`: one tuning protocol for every method, so that a comparison between methods is fair.

Every method gets the same budget: ``len(lr_factors) × len(tradeoff_factors)`` unlearning runs over
its step size (the configured learning rate times each factor) and its main trade-off
hyper-parameter (`Method.tradeoff`, e.g. the retain weight α; its configured value times each
factor). A method without one (GA, CE-U) gets the same number of runs over the step size alone,
spread geometrically over the same range.

Selection uses a validation forget split disjoint from the test items the study is then judged on
(items without an entity count as their own entity). ``validation_from: forget``: the forget items of
a seeded ``validation_share`` of the forget entities, which the study then leaves out of its forget
set (``holdout``). ``validation_from: retain``: the items of as many seeded retain entities as the
forget set has, which the tuning runs leave out of their retain set; the study keeps its whole forget
set, and those entities stay ordinary retain items there. Each run unlearns the validation items and
is scored by greedy answers only: forget efficacy on the validation items and destructive rate on
retain (without the validation entities) + utility. The criterion: the highest forget efficacy with destructive rate ≤ ``max_destructive``;
ties go to the lower destructive rate, then to the run nearest the configured setting; when no run
meets the bound, the lowest destructive rate. No attack is run or read: `select` sees only those two
numbers per run.

The output is ``tune.json`` (the protocol in words, every run's validation numbers, each method's
choice) and ``tuned.yaml``: the study with each method at its selected settings and
``tune.holdout`` naming the validation items, which a study run leaves out of its forget set, so
that each method runs once, at its tuned settings, on the test items only.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from pathlib import Path

import numpy as np
import yaml

from ..config import GridConfig, TuneConfig
from ..data import Item
from ..errors import UnpactError
from ..evaluation.correctness import item_correctness
from ..evaluation.rates import destructive_rate, forget_efficacy
from ..io import write_json
from ..models import prompt_format
from ..unlearn import METHODS, UnlearnConfig, unlearn


def _entities(items: list[Item]) -> list[str]:
    return sorted({it.entity or it.id for it in items})


def _pick(items: list[Item], k: int, seed: int) -> tuple[list[Item], list[Item]]:
    """(the items of ``k`` seeded entities of ``items``, the rest)."""
    names = _entities(items)
    random.Random(seed).shuffle(names)
    chosen = set(names[:k])
    return [it for it in items if (it.entity or it.id) in chosen], [it for it in items if (it.entity or it.id) not in chosen]


def split_forget(items: list[Item], share: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(validation, test): the items of a seeded ``share`` of the forget entities, and the rest. At
    least one entity goes each way."""
    n = len(_entities(items))
    if n < 2:
        raise UnpactError(f"tune: the forget set has {n} entity; a validation split disjoint from the "
                          "test items needs at least 2; or set tune.validation_from: retain")
    return _pick(items, min(max(1, round(share * n)), n - 1), seed)


def split_validation(splits: dict[str, list[Item]], t: TuneConfig, seed: int) -> tuple[list, list, list]:
    """(validation, test, retain): the items tuning unlearns, the forget items the study is judged on,
    and the retain items the tuning runs keep (`validation_from`, see the module docstring)."""
    if t.validation_from == "forget":
        validation, test = split_forget(splits["forget"], t.validation_share, seed)
        return validation, test, splits["retain"]
    n_forget, n_retain = len(_entities(splits["forget"])), len(_entities(splits["retain"]))
    if n_retain < n_forget + 1:
        raise UnpactError(f"tune: validation_from retain needs more retain entities ({n_retain}) than forget ones "
                          f"({n_forget}), so some stay retain; use validation_from: forget")
    validation, retain = _pick(splits["retain"], max(n_forget, 1), seed)
    return validation, splits["forget"], retain


def sweep(m: UnlearnConfig, tune: TuneConfig) -> list[UnlearnConfig]:
    """The runs of one method: the same number, ``len(lr_factors) × len(tradeoff_factors)``, for every
    method; the configured setting is among them when both factor lists hold 1."""
    cls = METHODS[m.method]
    budget = len(tune.lr_factors) * len(tune.tradeoff_factors)
    name = cls.tradeoff
    if name is None:
        lo, hi = math.log(min(tune.lr_factors)), math.log(max(tune.lr_factors))
        factors = [math.exp(lo + (hi - lo) * i / max(budget - 1, 1)) for i in range(budget)]
        return [dataclasses.replace(m, lr=m.lr * f, hparams=dict(m.hparams)) for f in factors]
    value = m.hparams.get(name, cls.defaults[name])
    return [dataclasses.replace(m, lr=m.lr * f, hparams={**m.hparams, name: value * g})
            for f in tune.lr_factors for g in tune.tradeoff_factors]


def select(scores: list[dict], max_destructive: float, configured: int | None = None) -> int:
    """The chosen run's index by the declared criterion; ``scores`` hold each run's validation
    ``forget_efficacy`` and ``destructive_rate`` (None counts as 0), nothing else."""
    def value(x):
        return 0.0 if x is None else x

    ok = [i for i, s in enumerate(scores) if value(s["destructive_rate"]) <= max_destructive]
    near = (lambda i: abs(i - configured)) if configured is not None else (lambda i: 0)
    if ok:
        return min(ok, key=lambda i: (-value(scores[i]["forget_efficacy"]), value(scores[i]["destructive_rate"]), near(i)))
    return min(range(len(scores)), key=lambda i: (value(scores[i]["destructive_rate"]), near(i)))


def protocol(tune: TuneConfig, n_validation: int, n_test: int) -> str:
    """The protocol in words, as tune.json and the report state it."""
    budget = len(tune.lr_factors) * len(tune.tradeoff_factors)
    source = ("validation forget items" if tune.validation_from == "forget" else
              "validation items of retain entities (unlearned in tuning only)")
    return (f"every method: {budget} runs, learning rate × {tune.lr_factors} and its main trade-off "
            f"hyper-parameter × {tune.tradeoff_factors} of the configured values (step size alone, over the same "
            f"range, for a method without one); selected on {n_validation} {source} disjoint from the "
            f"{n_test} test items by the highest forget efficacy with destructive rate ≤ {tune.max_destructive:.0%} "
            "(ties: lower destructive rate, then nearest the configured setting); greedy answers only, no attack "
            "run or read")


def percent(x: float | None) -> str:
    """A validation rate as the console shows it ("–" where it is undefined: nothing known before)."""
    return "–" if x is None else f"{x:.1%}"


def _correct(scorer, items: list[Item], budget: int | None, threshold: float) -> np.ndarray:
    return item_correctness(scorer.generate([it.question for it in items], budget), items, threshold)


def tune(grid: GridConfig, out: Path, reporter=None) -> dict:
    """Run the protocol on the study's first model × benchmark × seed; writes tune.json and tuned.yaml."""
    from .grid import Grid  # the study stack, imported when a tune runs

    runner = Grid(grid, out, reporter)
    cell = runner.cells()[0]
    study = runner._study(cell)
    study.prepare(runner._benchmark(cell.benchmark), train=cell.model.builtin is not None)
    splits, cfg, t = study.splits, study.cfg, grid.tune
    validation, test, retain = split_validation(splits, t, cell.seed)
    threshold = cfg.evaluation.rouge_threshold
    model, tok = study.load(study.model_dir)
    scorer = study.scorer(model, tok)
    keep = retain + splits["utility"]
    before = {"forget": _correct(scorer, validation, study.budgets.get("forget"), threshold),
              "keep": _correct(scorer, keep, max(study.budgets.get("retain", 0), study.budgets.get("utility", 0)) or None,
                               threshold)}
    results = {}
    for m in cfg.methods:
        runs, t0 = [], time.perf_counter()
        configs = sweep(m, t)
        for k, run in enumerate(configs):
            trained, logs = unlearn(copy.deepcopy(model), tok, prompt_format(tok), validation, retain, run)
            s = study.scorer(trained, tok)
            after_f = _correct(s, validation, study.budgets.get("forget"), threshold)
            after_k = _correct(s, keep, max(study.budgets.get("retain", 0), study.budgets.get("utility", 0)) or None,
                               threshold)
            runs.append({"lr": run.lr, "hparams": run.hparams, "seconds": logs["seconds"],
                         "forget_efficacy": forget_efficacy(before["forget"], after_f),
                         "destructive_rate": destructive_rate(before["keep"], after_k)})
            if reporter:
                reporter.info(f"tune {m.method} {k + 1}/{len(configs)}: lr {run.lr:.3g} {run.hparams} → "
                              f"efficacy {percent(runs[-1]['forget_efficacy'])}, destructive {percent(runs[-1]['destructive_rate'])}")
        configured = next((i for i, c in enumerate(configs) if c.lr == m.lr and c.hparams == m.hparams), None)
        chosen = select([{k: r[k] for k in ("forget_efficacy", "destructive_rate")} for r in runs],
                        t.max_destructive, configured)
        results[m.method] = {"tradeoff": METHODS[m.method].tradeoff, "runs": runs, "chosen": chosen,
                             "lr": runs[chosen]["lr"], "hparams": runs[chosen]["hparams"],
                             "seconds": round(time.perf_counter() - t0, 2)}
    summary = {"protocol": protocol(t, len(validation), len(test)), "budget": len(t.lr_factors) * len(t.tradeoff_factors),
               "validation_items": [it.id for it in validation], "test_items": [it.id for it in test],
               "model": cell.model.name, "benchmark": cell.benchmark.name, "seed": cell.seed, "methods": results}
    write_json(out / "tune.json", summary)
    tuned = dataclasses.replace(grid, methods=[dataclasses.replace(m, lr=results[m.method]["lr"],
                                                                   hparams=results[m.method]["hparams"])
                                               for m in grid.methods],
                                tune=dataclasses.replace(t, holdout=[it.id for it in validation]
                                                         if t.validation_from == "forget" else [],
                                                         protocol=summary["protocol"]))
    (out / "tuned.yaml").write_text("# written by `unpact tune`: each method at its selected settings; "
                                    "tune.holdout (the validation items) is left out of the forget set\n"
                                    + yaml.safe_dump(tuned.to_dict(), allow_unicode=True, sort_keys=False),
                                    encoding="utf-8")
    return summary
