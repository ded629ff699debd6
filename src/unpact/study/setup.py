"""A study's first stage: the benchmark's items written into the run, the original model prepared
(the built-in model trained, a pretrained model taught the benchmark, or a model used as given), and
every sequence the study will build measured against the model's context before any training."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from ..config import StudyConfig
from ..data import Item, builtin
from ..data.benchmarks import Benchmark
from ..models import hub, prompt_format
from ..models.builtin import builtin_tokenizer, context_for, prepare_builtin
from ..models.client import is_served
from ..models.finetune import prepare_finetuned
from ..models.loading import context_length, load_tokenizer
from ..models.registry import model_path
from ..timing import stage
from . import lengths
from .progress import Reporter


class StudySetup:
    """The preparing stages of a `Study` (mixed into it, as `StudyKeys` and `StudyAttacks` are)."""

    cfg: StudyConfig
    out: Path
    ui: Reporter
    model_dir: str | Path
    source: Path | None
    trust_remote_code: bool
    gold_dir: Path | None
    gold: dict | None
    splits: dict[str, list[Item]]
    bench: Benchmark | None
    budgets: dict[str, int]

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
            info, reused = self._teach(self._taught_items(), Path(self.model_dir), "original model")
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

    def share(self, group: StudySetup) -> None:
        """Take what the (model, benchmark) group's study prepared: items, benchmark, gold results,
        answer budgets and the built-in model's sized settings (a cell's study prepares nothing)."""
        self.bench, self.splits, self.gold, self.budgets = group.bench, group.splits, group.gold, group.budgets
        self.cfg.model = group.cfg.model
