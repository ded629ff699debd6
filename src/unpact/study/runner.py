"""The unPact study on one model and benchmark, its stages in order:

    prepare → original model (base) → gold model → per method: unlearn → evaluate → attack → metrics

Every stage's result is written atomically into the run directory with a key of what it depends on
(`cache.cached_stage`) and reused when the run is started again with the same settings, so an
interrupted study resumes where it stopped. What is measured lives in `measure`, the attacks in
`unpact.recovery`, the metrics in `unpact.evaluation.method_metrics`, the records in `unpact.report`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .. import distributed
from ..config import StudyConfig
from ..data import SPLITS, Item, builtin
from ..data.benchmarks import Benchmark
from ..data.chunks import raw_training_sets
from ..evaluation.method_metrics import accuracy, method_metrics
from ..io import write_atomic, write_json, write_jsonl
from ..models import hub, load_model, prompt_format
from ..models.builtin import builtin_tokenizer, context_for, prepare_builtin
from ..models.client import is_served
from ..models.finetune import prepare_finetuned
from ..models.hub import is_hub
from ..models.loading import context_length, load_tokenizer, save_model
from ..models.registry import model_path, resolve_model
from ..report import render_report
from ..report.records import records
from ..scoring import Scorer
from ..timing import stage
from ..unlearn import unlearn
from . import known, lengths, measure
from .attacks import StudyAttacks
from .cache import cached, cached_stage, digest
from .keys import StudyKeys, where
from .progress import Reporter
from .standard import standard_metrics, tofu_raw_splits


class Study(StudyKeys, StudyAttacks):
    """One run directory and the state shared by its stages."""

    def __init__(self, cfg: StudyConfig, out: str | Path, reporter: Reporter | None = None,
                 model_dir: str | Path | None = None, trust_remote_code: bool = False, served: dict | None = None):
        self.cfg, self.out = cfg, Path(out)
        self.trust_remote_code = trust_remote_code  # only when the study config asks, per model
        # How to reach served models (URLs in place of model folders): `served_scorer` options. Only audits take URLs.
        self.served = served or {}
        # The retrained gold model (never saw the forget set), when there is one; see `prepare_gold`.
        self.gold_dir: Path | None = None
        self.gold: dict | None = None
        # The pretrained model that `cfg.finetune` teaches the benchmark into ``model_dir`` (and ``gold_dir``).
        self.source: Path | None = None
        self.ui = reporter or Reporter(quiet=True)
        self.splits: dict[str, list[Item]] = {}
        self.bench: Benchmark | None = None  # what else the benchmark brings: MUSE's ICL, VerbMem, raw text
        # the original model's greedy answers by item id, when `forget_known` already generated them
        self.original_answers: dict[str, str] = {}
        # new tokens a generated answer may take, per split (`lengths.answer_budgets`; set by `check_lengths`)
        self.budgets: dict[str, int] = {}
        # the original model: a folder, or a URL (kept as a string: Path would fold its "//")
        self.model_dir = model_dir if is_served(model_dir) else Path(model_dir) if model_dir else self.out / "model"
        if is_hub(model_dir):  # fetched now, at the start, and pinned to its commit (`hub`) for the run
            self.model_dir = resolve_model(model_dir, trust_remote_code=trust_remote_code)

    # -- models ---------------------------------------------------------------------------------

    def load(self, ref: str | Path):
        """(model, tokenizer) of a model folder, on this process's device."""
        return load_model(ref, trust_remote_code=self.trust_remote_code, device=distributed.device())

    def open(self, ref: str | Path):
        """A scorer for a model folder or a served model's URL (`unpact.models.served`)."""
        if is_served(ref):
            from ..models.served import served_scorer

            return self._budgeted(served_scorer(str(ref), **self.served))
        return self.scorer(*self.load(ref))

    def scorer(self, model, tokenizer) -> Scorer:
        """The one scoring engine over ``model``, cast in place to the study's ``dtype`` first (if set)."""
        if self.cfg.dtype:
            model.to(getattr(torch, self.cfg.dtype))
        return self._budgeted(Scorer(model, tokenizer, prompt_format(tokenizer), batch_size=self.cfg.batch_size,
                                     generate_batch_size=self.cfg.generate_batch_size))

    def _budgeted(self, scorer):
        """``scorer`` generating up to the widest split's answer budget unless told otherwise (the
        attacks ask forget items, or retain ones for the never-known control)."""
        if self.budgets:
            scorer.max_new_tokens = max(self.budgets.values())
        return scorer

    def measure_model(self, scorer, known: dict[str, str] | None = None) -> dict:
        """What every model's stage stores: answers, TOFU raw material, membership AUCs, MUSE generations."""
        out = {}
        with stage("answers"):
            out["answers"] = measure.answers(scorer, self.splits, self.cfg.evaluation.rouge_threshold, known,
                                             self.budgets)
        with stage("tofu scores"):
            out["tofu"] = tofu_raw_splits(scorer, self.splits)
        with stage("membership"):
            out["mia_auc"] = measure.membership(scorer, self.splits)
        with stage("muse"):
            out["muse"] = measure.muse(scorer, self.splits, self.bench)
        return out

    # -- stages ---------------------------------------------------------------------------------

    def prepare(self, bench: Benchmark | None = None, train: bool = True) -> dict:
        """Write the benchmark's items (``bench``, or the generated built-in one) into ``out/data`` and
        prepare (or reuse) the original model in ``model_dir``: the built-in model trained on them
        (``train``), the pretrained ``source`` taught them (``cfg.finetune``), or with neither
        ``model_dir`` as given (a pretrained model). Returns the model's info (parameters, accuracy,
        train seconds)."""
        self.bench = bench or Benchmark("builtin", builtin.generate(**asdict(self.cfg.data)))
        self.splits = self.bench.splits
        self.check_lengths(builtin_model=train)
        builtin.save(self.splits, self.out / "data")
        if self.teaches():
            info, reused = self._teach([it for s in self.cfg.finetune.splits for it in self.splits[s]],
                                       Path(self.model_dir), "original model")
        elif not train:
            self._hold_out()
            return {"path": str(self.model_dir)}
        else:
            with (self.ui.bar("prepare built-in model (epochs)", self.cfg.model.max_epochs) as bar,
                  stage("train built-in model")):
                info, reused = prepare_builtin(self._all_items(), self.model_dir, self.cfg.model, bar,
                                               margin=self.cfg.generation.margin)
        self._hold_out()
        self.ui.info(f"model: {'reused' if reused else 'trained'} {info['parameters']:,} parameters, "
                     f"greedy accuracy {info['accuracy']:.1%} ({info['train_seconds']} s to train)")
        return info

    def teaches(self) -> bool:
        """Whether the original (and gold) model is a pretrained ``source`` taught the benchmark first."""
        return self.cfg.finetune is not None and self.source is not None

    def _teach(self, items: list[Item], folder: Path, what: str) -> tuple[dict, bool]:
        """``source`` taught ``items`` into ``folder`` (`unpact.models.finetune`), or reused."""
        f = self.cfg.finetune
        with self.ui.bar(f"{what}: taught {len(items)} facts (epochs)", f.max_epochs) as bar, stage(f"teach {what}"):
            return prepare_finetuned(self.source, items, folder, f, bar, margin=self.cfg.generation.margin,
                                     trust_remote_code=self.trust_remote_code, label=f"{what} taught from "
                                     f"{hub.shown(self.source)}")

    def _hold_out(self) -> None:
        """Leave tuning's validation items (``holdout``, written by `unpact tune`) out of the forget set:
        the model learnt them, but the methods are judged on the test items only."""
        if self.cfg.holdout:
            held = set(self.cfg.holdout)
            self.splits = {**self.splits, "forget": [it for it in self.splits["forget"] if it.id not in held]}

    def check_lengths(self, builtin_model: bool = False) -> None:
        """Measure every sequence the study will build against the model's context before any
        training or scoring (`lengths`), and set the answer budgets. ``builtin_model``: the model is
        the built-in one, still to be trained (or reused): its tokenizer is trained here (in well
        under a second) and, unless the config sets ``max_positions``, its context is sized to hold
        them all. Raises UnpactError naming the item, split and attack of the longest that does not fit."""
        if builtin_model:
            fmt, context, model = prompt_format(builtin_tokenizer(self._all_items(), self.cfg.model)), \
                self.cfg.model.max_positions, "the built-in model"
        elif is_served(self.model_dir):
            scorer = self.open(self.model_dir)  # its template and tokenizer are the server's
            fmt, context, model = scorer.fmt, scorer.max_length, str(self.model_dir)
        elif (path := model_path(self.source if self.teaches() else self.model_dir)).is_dir():
            fmt, context, model = (prompt_format(load_tokenizer(path, self.trust_remote_code)), context_length(path),
                                   hub.shown(path))
        else:
            return  # not converted or not there: loading it converts it, or says so
        self.budgets = lengths.answer_budgets(fmt, self.splits, self.cfg.generation)
        if context is None and not builtin_model:
            return  # a served model's server refuses what does not fit, in its own words
        every = list(lengths.needs(fmt, self.cfg, self.splits, self.bench,
                                   ("forget",) if self.gold_dir is not None else ("forget", "retain")))
        if builtin_model and context is None:
            self.cfg.model = replace(self.cfg.model, max_positions=context_for(max(n.tokens for n in every)))
        else:
            lengths.check(every, context, model, builtin=builtin_model)

    def share(self, group: Study) -> None:
        """Take what the (model, benchmark) group's study prepared: items, benchmark, gold results,
        answer budgets and the built-in model's sized settings (a cell's study prepares nothing)."""
        self.bench, self.splits, self.gold, self.budgets = group.bench, group.splits, group.gold, group.budgets
        self.cfg.model = group.cfg.model

    def forget_known(self, n: int, seed: int, compute: bool = True) -> bool:
        """Re-split forget/retain into ``n`` items the original model knows and the rest (`known`)."""
        return known.forget_known(self, n, seed, compute)

    def base_cached(self) -> bool:
        """Whether `base` would reuse a finished result."""
        return cached(self.out / "base.json", self.base_key()) is not None

    def base(self) -> dict:
        """Original model: answers on every split and attributions (oracle KeyTokens) on every item."""
        return cached_stage(self.out / "base.json", self.base_key(), self._base)

    def _base(self) -> dict:
        scorer, a, steps = self.open(self.model_dir), self.cfg.attribution, len(SPLITS) + 2
        with self.ui.bar("original model: answers, attributions per split, quality", steps) as bar:
            measured = self.measure_model(scorer, self.original_answers)
            bar(1, steps)
            loo = {}
            for i, s in enumerate(SPLITS, 2):
                with stage("loo"):
                    loo[s] = measure.loo(scorer, self.splits[s])
                bar(i, steps)
            with stage("attribution quality"):
                quality = measure.attribution_quality(scorer, self.splits["forget"], loo["forget"])
            bar(steps, steps)
        return {"answers": measured["answers"],
                "attributions": {s: measure.attribution_rows(loo[s], a.alpha, a.beta) for s in SPLITS},
                "answer_tokens": measure.answer_tokens(scorer, self.splits), "attribution_quality": quality,
                "mia_auc": measured["mia_auc"], "tofu": measured["tofu"], "muse": measured["muse"]}

    def prepare_gold(self, base: dict) -> dict | None:
        """The gold model's answers, TOFU raw material, membership AUCs and its hit rates under every
        attack on the forget items (the attacks' control; cached in ``gold.json``); a built-in gold
        model (``out/gold``) is trained first, on every split but forget."""
        if self.gold_dir is not None:
            self.gold = cached_stage(self.out / "gold.json", self.gold_key(), lambda: self._gold(base))
        return self.gold

    def _gold(self, base: dict) -> dict:
        if self._trains_gold() and self.teaches():
            self._teach(self._gold_items(), self.gold_dir, "gold model")
        elif self._trains_gold():
            with (self.ui.bar("gold model: trained without the forget set (epochs)", self.cfg.model.max_epochs) as bar,
                  stage("train gold model")):
                # the original model's tokenizer (trained on every split's text), not a new one
                prepare_builtin(self._gold_items(), self.gold_dir, self.cfg.model, bar, tokenizer_items=self._all_items(),
                                margin=self.cfg.generation.margin)
        scorer = self.open(self.gold_dir)
        measured = self.measure_model(scorer)
        with self.ui.bar("gold model: the same attacks (control)", 1) as bar:
            attacks = self.attack(scorer, base, measured["answers"], control=True)
            bar(1, 1)
        return {**measured, "attacks": attacks}

    def training_sets(self, fmt) -> tuple[list, list]:
        """What the methods unlearn and keep: the forget and retain items, or with ``raw_text`` the
        windows of the benchmark's raw corpora (`unpact.data.chunks.raw_training_sets`)."""
        if self.cfg.raw_text is None:
            return self.splits["forget"], self.splits["retain"]
        return raw_training_sets(self.bench.raw if self.bench else {}, self.cfg.raw_text, fmt.encode_text)

    def run_method(self, index: int, base: dict, folder: Path | None = None, keep_model: bool = True) -> dict:
        """Unlearn with one method, then evaluate, attribute, attack; cached in ``folder``
        (default ``methods/NAME``) as ``result.json``, with the unlearned model in ``model/`` when
        ``keep_model``. Training checkpoints in ``folder`` let an interrupted run resume."""
        mcfg = self.cfg.methods[index]
        folder = folder or self.out / "methods" / mcfg.method
        key = self.method_key(index, base["key"])
        if (stored := cached(folder / "result.json", key)) is not None:
            self.ui.info(f"{mcfg.method}: reusing finished result")
            return stored
        # A checkpoint resumes only the run it was made for: the trainer checks the method settings,
        # this marker also the original model, data and attacks (a retrained base must start over).
        marker = folder / "run.key"
        if marker.is_file() and marker.read_text(encoding="utf-8") != key:
            distributed.main_only(lambda: shutil.rmtree(folder / "checkpoint", ignore_errors=True))
        write_atomic(marker, key)
        model, tok = self.load(self.model_dir)
        forget, retain = self.training_sets(prompt_format(tok))
        steps = mcfg.epochs * -(-len(forget) // mcfg.batch_size)
        with self.ui.bar(f"{mcfg.method}: unlearning (steps)", steps) as bar, stage("unlearning"):
            model, train_logs = unlearn(model, tok, prompt_format(tok), forget, retain, mcfg, bar,
                                        checkpoint_dir=folder, resume=True)
        with stage("save model"):
            distributed.main_only(lambda: save_model(model, tok, folder / "model" if keep_model else None,
                                                     folder / "model"))
        result = self._evaluate(mcfg.method, self.scorer(model, tok), base, key, train_logs, folder)
        distributed.main_only(lambda: shutil.rmtree(folder / "checkpoint", ignore_errors=True))  # superseded
        return result

    def audit_model(self, name: str, model_dir: str | Path, base: dict) -> dict:
        """Evaluate and attack a model someone else unlearned (no training); cached like a method."""
        folder = self.out / "methods" / name
        key = digest([base["key"], where(model_dir), self._model_files(model_dir), self.cfg.recovery,
                      self.cfg.evaluation, self.gold_key()])
        if (stored := cached(folder / "result.json", key)) is not None:
            return stored
        return self._evaluate(name, self.open(model_dir), base, key, {}, folder)

    def _evaluate(self, name: str, scorer, base: dict, key: str, train_logs: dict, folder: Path) -> dict:
        """Answers, attributions and attacks of an unlearned model; written to ``folder/result.json``."""
        with self.ui.bar(f"{name}: answers, attributions, attacks", 3) as bar:
            measured = self.measure_model(scorer)
            bar(1, 3)
            with stage("loo"):
                attributions = measure.attribution_rows(measure.loo(scorer, self.splits["forget"]),
                                                        self.cfg.attribution.alpha, self.cfg.attribution.beta)
            bar(2, 3)
            attacks = self.attack(scorer, base, measured["answers"])
            bar(3, 3)
        result = {"key": key, "method": name, "train": train_logs, "answers": measured["answers"],
                  "attributions": attributions, "attacks": attacks, "mia_auc": measured["mia_auc"],
                  "tofu": measured["tofu"], "muse": measured["muse"]}
        if self.gold_dir is None:  # no model that never knew: the attacks on facts this one never knew
            result["never_known"] = self.attack_never_known(scorer, base, measured["answers"])
        write_json(folder / "result.json", result)
        return result

    # -- the run and its outputs --------------------------------------------------------------------

    def run(self) -> dict:
        """The whole study; returns the metrics also written to ``metrics.json``."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", self.cfg.to_dict())
        if self.cfg.evaluation.gold_model:
            self.gold_dir = self.out / "gold"
        info = self.prepare()
        base = self.base()
        self.prepare_gold(base)
        results = [self.run_method(i, base) for i in range(len(self.cfg.methods))]
        return self._finish(model_facts({**info, "path": str(self.model_dir), "dtype": self.cfg.dtype}), base, results)

    def audit(self, splits: dict[str, list[Item]], unlearned: dict[str, Path]) -> dict:
        """Attack already-unlearned models against the original (``model_dir``) on given items."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", self.cfg.to_dict())
        self.splits = splits
        self.check_lengths()
        base = self.base()
        self.prepare_gold(base)  # with a gold model (``gold_dir``), the attacks' control is the study's
        results = [self.audit_model(name, path, base) for name, path in unlearned.items()]
        return self._finish({"path": str(self.model_dir)}, base, results)

    def standard(self, measured: dict, base: dict) -> dict:
        """The benchmark's own metrics of one model's stored measurements."""
        return standard_metrics(measured["tofu"], measured["answers"], self.splits, measured.get("mia_auc"),
                                self.gold, measured.get("muse"), base.get("muse"))

    def method_metrics(self, base: dict, result: dict) -> dict:
        """The metrics.json entry of one unlearned model (`unpact.evaluation.method_metrics`)."""
        ev, a = self.cfg.evaluation, self.cfg.attribution
        return method_metrics(base, result, recovery_threshold=ev.recovery_threshold,
                              destructive_threshold=ev.destructive_threshold, alpha=a.alpha, beta=a.beta,
                              standard=self.standard(result, base), control=self.control(base, result))

    def records(self, base: dict, result: dict) -> list[dict]:
        """Per-item records of one unlearned model (`unpact.report.records`)."""
        return records(base, result, self.splits, self.cfg.attribution.alpha, self.cfg.attribution.beta)

    def group_metrics(self, model: dict, base: dict) -> dict:
        """Everything in metrics.json but the methods: the model, base accuracy, settings."""
        ev, g = self.cfg.evaluation, self.gold
        return {
            "model": model,
            "base": {"accuracy": {s: accuracy(base["answers"][s]["correct"]) for s in SPLITS},
                     "mia_auc": base.get("mia_auc"), "standard": self.standard(base, base)},
            "gold": None if g is None else {
                "mia_auc": g["mia_auc"], "accuracy": {s: accuracy(g["answers"][s]["correct"]) for s in SPLITS},
                "standard": self.standard(g, base)},
            "thresholds": {"recovery": ev.recovery_threshold, "destructive": ev.destructive_threshold,
                           "rouge": ev.rouge_threshold},
            "keytokens": {"alpha": self.cfg.attribution.alpha, "beta": self.cfg.attribution.beta},
            "attribution_quality": base["attribution_quality"],
            **({"tuning": {"protocol": self.cfg.tuning_protocol, "held_out": len(self.cfg.holdout),
                           "settings": {m.method: {"lr": m.lr, "epochs": m.epochs, "hparams": m.hparams}
                                        for m in self.cfg.methods}}} if self.cfg.holdout else {}),
        }

    def _finish(self, model: dict, base: dict, results: list[dict]) -> dict:
        metrics = {**self.group_metrics(model, base),
                   "methods": {r["method"]: self.method_metrics(base, r) for r in results}}
        write_jsonl(self.out / "records.jsonl", (row for r in results for row in self.records(base, r)))
        write_json(self.out / "metrics.json", metrics)
        render_report(self.out)
        return metrics


def model_facts(info: dict) -> dict:
    """The model as metrics.json records it: where, the pretrained model it was taught from (with
    ``finetune``), how big, how well it learnt, the precision it was evaluated in where the study sets
    one (no timings)."""
    return {k: info[k] for k in ("path", "taught_from", "parameters", "accuracy", "dtype") if info.get(k) is not None}
