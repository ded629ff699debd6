"""Why a benchmark metric is null reaches metrics.json, the HTML report and `unpact results` (issue #23)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from markupsafe import escape
from rich.console import Console

from unpact.cli import main
from unpact.data import SPLITS, builtin
from unpact.report import render_report
from unpact.report.results import missing_reasons, print_results, results_frame
from unpact.study.standard import standard_metrics, tofu_raw_splits


@pytest.fixture(scope="module")
def splits():
    """A few items of every split, as the built-in benchmark writes them (three perturbed answers each)."""
    generated = builtin.generate(seed=4, n_entities=10)
    return {s: generated[s][:4] for s in SPLITS}


def _answers(splits):
    return {s: {"answers": [it.answer for it in items]} for s, items in splits.items()}


@pytest.fixture(scope="module")
def without_perturbed(splits, tiny_scorer):
    """The standard metrics of a model on data without perturbed answers and without a gold model."""
    bare = {s: [replace(it, perturbed_answers=()) for it in items] for s, items in splits.items()}
    return standard_metrics(tofu_raw_splits(tiny_scorer, bare), _answers(bare), bare, mia={"min_k": 0.7}, gold=None)


def test_metrics_say_why_each_null_metric_is_null(without_perturbed):
    tofu, missing = without_perturbed["tofu"], without_perturbed["missing"]
    assert tofu["forget"]["truth_ratio"] is None and tofu["forget_quality"] is None
    assert missing["tofu.forget.truth_ratio"] == ("needs tofu.forget.truth_ratios: per-item truth ratios: "
                                                  "items with perturbed answers")
    assert missing["tofu.forget_quality"].startswith("needs tofu.forget.truth_ratios: ")
    assert "gold.tofu.forget.truth_ratios" in missing["tofu.forget_quality"]
    assert "gold.mia_auc.min_k" in missing["muse.privleak_min_k"]
    # only null ones: a number has no reason, and MUSE's own numbers (left out here, never shown) none either
    assert tofu["forget"]["probability"] is not None and "tofu.forget.probability" not in missing
    assert not any(where.startswith(("muse.knowmem", "muse.verbmem", "muse.utility")) for where in missing)
    assert set(missing) == {where for where in missing if _at(without_perturbed, where) is None}


def test_complete_material_has_no_reasons(splits, tiny_scorer):
    raw = tofu_raw_splits(tiny_scorer, splits)
    gold = {"tofu": raw, "mia_auc": {"min_k": 0.5}}
    standard = standard_metrics(raw, _answers(splits), splits, mia={"min_k": 0.6}, gold=gold)
    assert standard["missing"] == {}
    assert standard["tofu"]["forget_quality"] == 1.0  # the same truth ratios as its gold model's


def _at(values, where):
    for step in where.split("."):
        values = values[step]
    return values


def _run(tmp_path, standard):
    """A single run's metrics.json whose original model and one method carry ``standard``."""
    method = {"method": "GA_GDR", "forget_efficacy": 1.0, "n_known": 4, "n_forgotten": 4, "destructive_rate": 0.0,
              "accuracy": {"forget": 0.0, "retain": 1.0, "utility": 1.0}, "quadrant": "reliable",
              "strongest_attack": None, "standard": standard}
    metrics = {"model": {"path": "runs/x/model"}, "base": {"accuracy": {"forget": 1.0, "retain": 1.0, "utility": 1.0},
                                                            "standard": standard},
               "gold": None, "thresholds": {"recovery": 0.2, "destructive": 0.2}, "methods": {"GA_GDR": method}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (tmp_path / "records.jsonl").write_text("", encoding="utf-8")
    return tmp_path, metrics


def test_report_shows_the_reason_on_the_dash_and_under_the_line(tmp_path, without_perturbed):
    run, _ = _run(tmp_path, without_perturbed)
    page = render_report(run).read_text(encoding="utf-8")
    why = escape(without_perturbed["missing"]["tofu.forget.truth_ratio"])
    # the hover text on the dash, and the same words visible without hovering
    assert f'forget truth ratio <span class="why-missing" title="{why}">–</span>' in page
    assert page.count(f"<li>forget truth ratio: {why}</li>") == 2  # original model, and the method
    assert f"<li>forget quality: {escape(without_perturbed['missing']['tofu.forget_quality'])}</li>" in page
    assert "<li>PrivLeak: needs gold.mia_auc.min_k" in page
    # model utility has a number (probability and ROUGE are enough): shown as one, without a reason
    utility = without_perturbed["tofu"]["model_utility"]
    assert f"model utility {utility:.3f} · " in page and "<li>model utility" not in page


def test_report_of_a_run_without_reasons_shows_plain_dashes(tmp_path, without_perturbed):
    older = {k: v for k, v in without_perturbed.items() if k != "missing"}  # metrics.json before the reasons
    run, _ = _run(tmp_path, older)
    page = render_report(run).read_text(encoding="utf-8")
    assert "TOFU forget quality – · forget truth ratio –" in page
    assert 'class="why-missing"' not in page and "why-missing-list\"" not in page


def test_results_print_each_reason_once_under_the_table(tmp_path, without_perturbed):
    _, metrics = _run(tmp_path, without_perturbed)
    metrics["methods"]["NPO_GDR"] = {**metrics["methods"]["GA_GDR"], "method": "NPO_GDR"}
    frame = results_frame(metrics)
    assert frame["standard.missing.tofu.forget.truth_ratio"].tolist() == [
        without_perturbed["missing"]["tofu.forget.truth_ratio"]] * 2
    out = io.StringIO()
    print_results(frame, Console(file=out, width=120))
    text = out.getvalue()
    line = f"  tofu.forget.truth_ratio (2 cells): {without_perturbed['missing']['tofu.forget.truth_ratio']}"
    assert text.count(line) == 1
    assert text.index("benchmark metrics left empty, and why:") > text.index("quadrant")  # under the table
    assert ("tofu.forget.truth_ratio", without_perturbed["missing"]["tofu.forget.truth_ratio"], 2) in missing_reasons(frame)


def test_results_command_prints_the_reasons(tmp_path, capsys, without_perturbed):
    run, _ = _run(tmp_path, without_perturbed)
    assert main(["results", str(run), "--no-parquet"]) == 0
    out = capsys.readouterr().out
    assert f"tofu.forget_quality (1 cell): {without_perturbed['missing']['tofu.forget_quality']}" in out
