"""The demo study end to end (shared fixture `study`, run once per session)."""

import json
import os

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from unpact.config import StudyConfig
from unpact.io import read_json, read_jsonl
from unpact.study import Study

# Methods with a retain term must keep retain answers: the base model answers ~100% of them. The
# settings `unpact tune` chose (destructive ≤ 10% on validation) keep 84.7–99.7% on the test run
# (README, "What the demo shows"); 0.75 leaves room for platform variation and still fails a method
# that wrecks retain knowledge (GA without a retain term drops to ~60%).
RETAIN_FLOOR = 0.75


def test_built_in_model_memorises_its_facts_and_is_a_standard_hf_folder(study):
    run, metrics = study
    assert metrics["model"]["accuracy"] >= 0.99
    for split, acc in metrics["base"]["accuracy"].items():
        assert acc >= 0.97, split
    q = metrics["attribution_quality"]
    assert q["loo"]["comprehensiveness"] > 0 and -1 <= q["kendall_tau_loo_ig"] <= 1
    assert q["integrated_gradients"]["relative_gap_median"] >= 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (run / "model" / name).is_file()
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert tok.pad_token_id is not None and tok.eos_token_id is not None


@pytest.mark.parametrize("method", ["GA_GDR", "GA_KLR", "NPO_GDR", "NPO_KLR", "TaskVector", "RMU", "KeyNPO"])
def test_unlearning_forgets_while_retain_stays_above_floor(study, method):
    _, metrics = study
    m = metrics["methods"][method]
    assert m["forget_efficacy"] >= 0.3
    assert m["accuracy"]["forget"] <= metrics["base"]["accuracy"]["forget"] - 0.3
    if method != "TaskVector":  # the one method of the six without a retain term
        assert m["accuracy"]["retain"] >= RETAIN_FLOOR
    assert m["quadrant"] in ("reliable", "insufficient", "destructive", "insufficient+destructive")
    for attack, rate in m["recovery_rate"].items():
        assert rate is None or 0 <= rate <= 1, attack
        lo, hi = m["recovery_ci95"][attack]
        assert lo <= rate <= hi and hi - lo > 0  # Wilson interval around the measured rate
    assert 0 <= m["tracking"]["jaccard"] <= 1 and 0 <= m["tracking"]["focus_retention"] <= 1
    pen = m["penalisation"]
    # finding 3's measurement: forget answers lose more probability than retain answers (by 4–32 nats
    # for the methods that forget most; TaskVector, forgetting ~40%, by 1.03 on an AMD EPYC and 0.73 on
    # an Intel Xeon, whose float kernels train a slightly different model)
    assert pen["forget"]["keyword_delta"] < pen["retain"]["keyword_delta"] - 0.5
    assert pen["retain"]["n_tokens"] > 360


def test_key_npo_forgets_most_and_is_reliable_at_the_six_methods_least_collateral_damage(study):
    """Issue 5's aim, at the resolution the built-in benchmark supports: KeyNPO forgets at least as much
    as the best of the paper's six (within two of the 39 known facts), no attack brings its forgotten
    facts back beyond the gold model's rate by the threshold (reliable under the calibrated verdict),
    and it destroys no more retain/utility facts than the least destructive of the six, within one
    item. All seven run at the settings `unpact tune configs/demo-tune.yaml` chose by one protocol
    (README, "What the demo shows": KeyNPO forgets 38 of 39 and destroys 2 of 458 facts, the six
    4.8–15.3%). Single-item orderings between methods change with the CPU's float kernels, so they are
    not asserted."""
    run, metrics = study
    key = metrics["methods"]["KeyNPO"]
    six = {n: m for n, m in metrics["methods"].items() if n != "KeyNPO"}
    assert len(six) == 6
    rows = [r for r in read_jsonl(run / "records.jsonl") if r["method"] == "KeyNPO"]
    kept_known = sum(r["correct_before"] for r in rows if r["split"] != "forget")
    known = sum(r["correct_before"] for r in rows if r["split"] == "forget")
    assert key["destructive_rate"] <= min(m["destructive_rate"] for m in six.values()) + 1 / kept_known + 1e-9
    # within two facts: one on an AMD EPYC (38 vs NPO_GDR's 39), two on an Intel Xeon (37 vs 39)
    assert key["forget_efficacy"] >= max(m["forget_efficacy"] for m in six.values()) - 2 / known - 1e-9
    assert key["quadrant"] == "reliable"


def test_membership_inference_separates_memorised_facts_and_unlearning_moves_it(study):
    _, metrics = study
    original = metrics["base"]["mia_auc"]
    assert set(original) == {"loss", "zlib", "min_k", "min_k++"}
    assert original["loss"] > 0.9  # the original model memorised the forget facts; the holdout it never saw
    for name, m in metrics["methods"].items():
        assert set(m["mia_auc"]) == set(original) and all(0 <= v <= 1 for v in m["mia_auc"].values()), name
        assert m["mia_auc"]["loss"] < original["loss"], name  # forgetting lowers the forget set's likelihood


def test_standard_metrics_against_the_retrained_gold_model(study):
    """TOFU forget quality / model utility and MUSE PrivLeak beside the dilemma rates (issue 11)."""
    run, metrics = study
    gold = metrics["gold"]
    assert (run / "gold" / "model.safetensors").is_file()
    # the gold model shares the original's tokenizer, so both score the very same tokens
    assert (run / "gold" / "tokenizer.json").read_bytes() == (run / "model" / "tokenizer.json").read_bytes()
    assert gold["standard"]["tofu"]["forget_quality"] == 1.0  # the gold model against itself
    assert gold["accuracy"]["forget"] <= 0.2 < 0.9 <= gold["accuracy"]["retain"]  # it never saw the forget facts
    assert 0.25 <= gold["mia_auc"]["loss"] <= 0.75  # forget and holdout people are alike to it
    original = metrics["base"]["standard"]
    assert original["muse"]["privleak_min_k"] < -50  # memorised: far from the gold model, as in MUSE's tables
    assert original["tofu"]["forget_quality"] < 0.05
    for name, m in metrics["methods"].items():
        tofu = m["standard"]["tofu"]
        assert 0 <= tofu["forget_quality"] <= 1 and 0 < tofu["model_utility"] <= 1, name
        assert m["standard"]["muse"]["privleak_min_k"] is not None, name
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "gold model (never saw the forget set): TOFU forget quality 1.000" in page
    assert page.count("TOFU forget quality") == len(metrics["methods"]) + 2  # each method, original, gold


def test_records_and_report_cover_every_forget_item(study):
    run, metrics = study
    rows = read_jsonl(run / "records.jsonl")
    n_forget = len([r for r in rows if r["split"] == "forget"]) // len(metrics["methods"])
    assert n_forget == 40
    for r in rows:
        if r["split"] == "forget":
            assert len(r["tokens"]) == len(r["contrib_before"]) == len(r["contrib_after"]) > 0
            assert r["outcome"] in ("kept", "forgotten", "recovered", "not_known")
            assert all(k < len(r["tokens"]) for k in r["key_before"])
            if r["outcome"] in ("kept", "not_known"):  # only the forgotten items are attacked
                assert r["attacks"] == {}
                continue
            assert set(r["attacks"]) == {f"{source}:instruction" for source in (
                "focus_on_key", "focus_on_key_self", "focus_on_key_heuristic", "placebo", "placebo_low")} | {
                "sampling", "paraphrase", "few_shot", "quantize_int8", "quantize_int4", "relearn"}
            assert r["attacks"]["relearn"]["changes_weights"] and not r["attacks"]["few_shot"]["changes_weights"]
            assert r["attacks"]["few_shot"]["prompt"].count("Q: ") == 3
            assert r["keywords"] and all(w in r["question"] for w in r["keywords"])
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.count('class="heatmap"') == 2 * n_forget * len(metrics["methods"])
    assert "GA_GDR" in html and "NPO_GDR" in html and "penalisation profile" in html
    retain_row = next(r for r in rows if r["split"] == "retain")
    assert len(retain_row["answer_tokens"]) == len(retain_row["token_delta"]) == len(retain_row["answer_keyword"])


def test_rerun_resumes_from_finished_stages(study):
    run, metrics = study
    result = run / "methods" / "GA_GDR" / "result.json"
    stamp = result.stat().st_mtime_ns
    again = Study(StudyConfig(), run).run()
    assert result.stat().st_mtime_ns == stamp  # reused, not recomputed
    assert json.dumps(again, sort_keys=True) == json.dumps(metrics, sort_keys=True)
    assert not [p for p in os.listdir(run) if p.endswith(".tmp") or p.endswith(".partial")]


# The methods outside the paper's six, with settings tuned on the built-in model.
OTHER_METHODS = {
    "GA": dict(lr=1e-4, epochs=3),
    "NPO": dict(lr=1e-4, epochs=5),
    "SimNPO": dict(lr=5e-4, epochs=10, hparams={"alpha": 3.0}),
    "IdkNLL": dict(lr=5e-4, epochs=10),
    "IdkDPO": dict(lr=2e-3, epochs=15, hparams={"beta": 0.5}),
}


@pytest.mark.parametrize("name", list(OTHER_METHODS))
def test_other_methods_forget_on_the_built_in_model(study, benchmark, name):
    from unpact.evaluation import correctness
    from unpact.models import PlainFormat, load_model
    from unpact.scoring import Scorer
    from unpact.unlearn import METHODS, UnlearnConfig, unlearn

    run, metrics = study
    model, tok = load_model(run / "model")
    fmt = PlainFormat(tok)
    model, _ = unlearn(model, tok, fmt, benchmark["forget"], benchmark["retain"],
                       UnlearnConfig(method=name, **OTHER_METHODS[name]))
    scorer = Scorer(model, tok, fmt)

    def accuracy(items):
        return correctness(scorer.generate([it.question for it in items]), [it.answer for it in items]).mean()

    assert accuracy(benchmark["forget"]) <= metrics["base"]["accuracy"]["forget"] - 0.1
    if METHODS[name].retain is not None:
        assert accuracy(benchmark["retain"]) >= RETAIN_FLOOR


def test_forget_known_forgets_what_the_model_answers_and_asks_each_question_once(study, tmp_path, monkeypatch):
    """The forget set is drawn from the items the original model answers; its stage reuses those
    answers instead of generating them again (a tenth of the stage on Gemma 3 270M)."""
    from unpact.scoring import Scorer

    run, _ = study
    s = Study(StudyConfig(), tmp_path, model_dir=run / "model")
    s.prepare(train=False)
    pool = len(s.splits["forget"]) + len(s.splits["retain"])
    asked: list[str] = []
    generate = Scorer.generate
    monkeypatch.setattr(Scorer, "generate", lambda self, qs, *a, **k: asked.extend(qs) or generate(self, qs, *a, **k))
    assert s.forget_known(6, seed=0)
    base = s.base()
    assert len(s.splits["forget"]) == 6 and len(s.splits["forget"]) + len(s.splits["retain"]) == pool
    assert base["answers"]["forget"]["correct"] == [True] * 6
    questions = [it.question for split in ("forget", "retain", "utility") for it in s.splits[split]]
    assert sorted(asked) == sorted(questions)  # each once: the pool by forget_known, utility by the stage
    # a fresh study reading the cached selection reuses the answers too
    again = Study(StudyConfig(), tmp_path / "again", model_dir=run / "model")
    again.prepare(train=False)
    (tmp_path / "again" / "data").mkdir(exist_ok=True)
    (tmp_path / "again" / "data" / "forget_known.json").write_bytes((tmp_path / "data" / "forget_known.json").read_bytes())
    assert again.forget_known(6, seed=0, compute=False)
    assert again.original_answers == s.original_answers and len(again.original_answers) == pool
    # forget_known: all — every fact the original model answers is a forget item, none stays retain
    every = Study(StudyConfig(), tmp_path / "all", model_dir=run / "model")
    every.prepare(train=False)
    assert every.forget_known("all", seed=0)
    known = read_json(tmp_path / "all" / "data" / "forget_known.json")["known"]
    assert sorted(it.id for it in every.splits["forget"]) == sorted(known) and len(known) > pool // 2
    assert len(every.splits["forget"]) + len(every.splits["retain"]) == pool
