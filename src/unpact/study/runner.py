"""The unPact study on one model and benchmark, its stages in order:

    prepare → original model (base) → gold model → per method: unlearn → evaluate → attack → metrics

Every stage's result is written atomically into the run directory with a key of what it depends on
(`cache.cached_stage`) and reused when the run is started again with the same settings, so an
interrupted study resumes where it stopped. Preparing the items and the original model lives in
`setup`, what is measured in `measure`, the attacks in `attacks` and `unpact.recovery`, the metrics,
records and report in `outputs`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .. import distributed
from ..config import StudyConfig
from ..data import SPLITS, Item
from ..data.benchmarks import Benchmark
from ..data.chunks import raw_training_sets
from ..io import write_atomic, write_json
from ..models import load_model, prompt_format
from ..models.builtin import prepare_builtin
from ..models.client import is_served
from ..models.hub import is_hub
from ..models.loading import save_model
from ..models.registry import resolve_model
from ..scoring import Scorer
from ..timing import stage
from ..unlearn import unlearn
from . import known, measure
from .attacks import StudyAttacks, known_unanswered
from .cache import cached, cached_stage, digest
from .keys import StudyKeys, where
from .outputs import StudyOutputs, model_facts
from .progress import Reporter
from .setup import StudySetup
from .standard import tofu_raw_splits


class Study(StudyKeys, StudyAttacks, StudySetup, StudyOutputs):
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
                quality = measure.attribution_quality(scorer, self.splits["forget"], loo["forget"],
                                                      a.quality_items, self.cfg.seed)
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
            # read on the facts the original knew and the gold model does not answer plainly (`control`)
            attacks = self.attack(scorer, base, measured["answers"], control=True,
                                  only=known_unanswered(base, measured["answers"]))
            bar(1, 1)
        return {**measured, "attacks": attacks}

    def training_sets(self, fmt, base: dict) -> tuple[list, list]:
        """What the methods unlearn and keep: the forget and retain items, or with ``raw_text`` the
        windows of the benchmark's raw corpora (`unpact.data.chunks.raw_training_sets`). The never-known
        control's items (`never_known_items`) are held out of retain: a method that trains on them
        (GDR, KL) half-learns them, and attacks would "recover" them more easily than a fact the model
        never saw — a control biased up, which reads the method as more reliable than it is."""
        if self.cfg.raw_text is None:
            held = set(self.never_known_items(base)[0])
            return self.splits["forget"], [it for i, it in enumerate(self.splits["retain"]) if i not in held]
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
        forget, retain = self.training_sets(prompt_format(tok), base)
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
            attacks = self.attack(scorer, base, measured["answers"], only=known_unanswered(base, measured["answers"]))
            bar(3, 3)
        result = {"key": key, "method": name, "train": train_logs, "answers": measured["answers"],
                  "attributions": attributions, "attacks": attacks, "mia_auc": measured["mia_auc"],
                  "tofu": measured["tofu"], "muse": measured["muse"]}
        # no model that never knew: the attacks on facts this one never knew (None with a gold model)
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


__all__ = ["Study", "model_facts"]
