"""What a study writes at the end: metrics.json (the benchmark's own metrics, each method's metrics and
verdict, the group's facts), records.jsonl (one row per item and method) and report.html."""

from __future__ import annotations

from pathlib import Path

from ..config import StudyConfig
from ..data import SPLITS, Item
from ..evaluation.method_metrics import accuracy, method_metrics
from ..io import write_json, write_jsonl
from ..report import render_report
from ..report.records import records
from .standard import standard_metrics


class StudyOutputs:
    """The metrics, records and report of a `Study` (mixed into it)."""

    cfg: StudyConfig
    out: Path
    splits: dict[str, list[Item]]
    gold: dict | None

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
                                        for m in self.cfg.methods}}} if self.cfg.tuning_protocol else {}),
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
