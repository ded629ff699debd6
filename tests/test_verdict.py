"""The verdict (docs/design.md, Dilemma quadrant and verdict): every attack against a control that
never knew, the strongest calibrated attack decides, and the study and `unpact audit` agree."""

from __future__ import annotations

import numpy as np
import pytest

from unpact.config import StudyConfig
from unpact.evaluation.calibration import GOLD
from unpact.evaluation.quadrant import quadrant
from unpact.io import read_json
from unpact.study.audit import run_audit


def test_the_study_judges_every_method_on_its_strongest_calibrated_attack(study):
    run, metrics = study
    t = metrics["thresholds"]
    original = read_json(run / "base.json")["answers"]["forget"]["correct"]
    gold = read_json(run / "gold.json")["answers"]["forget"]["correct"]
    # the control counts the facts the original knew that the gold model does not answer unasked
    control_n = sum(k and not g for k, g in zip(original, gold, strict=True))
    assert 0 < control_n <= metrics["methods"]["KeyNPO"]["n_known"]
    for name, m in metrics["methods"].items():
        calibrated = m["calibrated"]
        assert calibrated and not any(a.startswith("placebo") for a in calibrated), name
        assert {"sampling", "relearn", "quantize_int8", "focus_on_key:instruction"} <= set(calibrated)
        for c in calibrated.values():  # the demo has a gold model: every attack is read against it
            assert c["control_kind"] == GOLD and c["n"] == m["n_forgotten"] and c["control_n"] == control_n
        best = m["strongest_attack"]
        values = [c["calibrated"] for c in calibrated.values() if c["calibrated"] is not None]
        assert best["calibrated"] == max(values) and best["attack"] in calibrated
        assert best["ci95"][0] <= best["calibrated"] <= best["ci95"][1]
        assert m["quadrant"] == quadrant(best["calibrated"], m["destructive_rate"], t["recovery"], t["destructive"])
        assert best["attack"] in best["note"]
        # finding 2 is kept apart: FocusOnKey minus its placebo, with its own interval
        spec = m["keyword_specificity"]["focus_on_key:instruction"]
        assert spec["excess"] == pytest.approx(m["recovery_excess"]["focus_on_key:instruction"])


def test_no_method_is_reliable_while_an_attack_beats_its_gold_control_by_the_threshold(study):
    _, metrics = study
    limit = metrics["thresholds"]["recovery"]
    for name, m in metrics["methods"].items():
        over = [a for a, c in m["calibrated"].items() if (c["calibrated"] or 0) >= limit]
        assert ("insufficient" in m["quadrant"]) == bool(over), (name, over)


def test_the_study_and_the_audit_give_the_same_verdict_for_the_same_models(study, tmp_path):
    run, metrics = study
    name = "TaskVector"
    v = run_audit(StudyConfig(), tmp_path / "audit", run / "model", run / "methods" / name / "model",
                  run / "data" / "forget.jsonl", run / "data" / "retain.jsonl", run / "data" / "utility.jsonl",
                  gold=run / "gold")
    in_study = metrics["methods"][name]
    assert v["quadrant"] == in_study["quadrant"]
    assert v["strongest_attack"] == in_study["strongest_attack"]["attack"]
    assert v["strongest_attack_evidence"] == pytest.approx(in_study["strongest_attack"]["calibrated"])
    assert in_study["strongest_attack"]["note"] in v["verdict"]


class _Echo:
    """A scorer stand-in answering each prompt with its last line."""

    def generate(self, prompts):
        return [p.split("\n")[-1] for p in prompts]


def test_without_a_gold_model_the_control_is_the_never_known_retain_items(benchmark, tmp_path):
    from unpact.config import RecoveryConfig
    from unpact.evaluation.calibration import NEVER_KNOWN
    from unpact.study import Study

    retain = benchmark["retain"][::4][:6]  # six entities, so demonstrations exclude only the item's own
    cfg = StudyConfig(recovery=RecoveryConfig(attacks=["few_shot"], styles=[], few_shot_k=2))
    study = Study(cfg, tmp_path)
    study.splits = {"forget": benchmark["forget"][:2], "retain": retain, "utility": []}
    known = [True, False, True, True, False, True]  # the original model never answered retain items 1 and 4
    base = {"answers": {"retain": {"correct": known}},
            "attributions": {"retain": [{"keywords": []}] * 6, "utility": []}}
    answers = {"retain": {"answers": ["x"] * 6, "correct": [False] * 6}}  # the unlearned model's own
    out = study.attack_never_known(_Echo(), base, answers)
    prompts = out["few_shot"]["prompts"]
    assert [p.split("\n")[-1] for p in prompts] == [retain[1].question.strip(), retain[4].question.strip()]
    # the demonstrations come from the known retain items only: no never-known item is handed its answer
    shown = {line for p in prompts for line in p.split("\n")[:-1]}
    assert not any(f"Q: {retain[i].question.strip()} A:" in line for i in (1, 4) for line in shown)
    assert any(f"Q: {retain[i].question.strip()} A:" in line for i in (0, 2, 3, 5) for line in shown)
    control = study.control(base | {"answers": {"forget": {"correct": [True, True]}, **base["answers"]}},
                            {"never_known": out, "answers": answers})
    assert control["kind"] == NEVER_KNOWN and control["attacks"] == {"few_shot": out["few_shot"]["correct"]}
    assert control["known"] == [True, True]


def test_a_never_known_fact_the_unlearned_model_learned_is_no_control(benchmark, tmp_path):
    """A GDR method trains on the retain facts, never-known ones included, and may learn them (Gemma 3,
    every known fact forgotten: NPO_GDR's control went to 90% and every attack read −90 points). Such an
    item says nothing about an attack without the knowledge: the control is read, as recovery is, only
    on the items the unlearned model does not answer plainly, and with none left there is no control."""
    from unpact.config import RecoveryConfig
    from unpact.evaluation.calibration import NEVER_KNOWN, calibrate
    from unpact.study import Study

    retain = benchmark["retain"][::4][:6]
    cfg = StudyConfig(recovery=RecoveryConfig(attacks=["few_shot"], styles=[], few_shot_k=2))
    study = Study(cfg, tmp_path)
    study.splits = {"forget": benchmark["forget"][:2], "retain": retain, "utility": []}
    base = {"answers": {"retain": {"correct": [True, False, True, True, False, True]}},
            "attributions": {"retain": [{"keywords": []}] * 6, "utility": []}}
    # the unlearned model now answers never-known item 1 (learned from the retain term), not item 4
    learned = {"retain": {"answers": ["x"] * 6, "correct": [True, True, True, True, False, True]}}
    out = study.attack_never_known(_Echo(), base, learned)
    asked = [p.split("\n")[-1] for p in out["few_shot"]["prompts"] if p is not None]
    assert asked == [retain[4].question.strip()]  # item 1 is not asked at all
    assert out["few_shot"]["attacked"] == [False, True]
    control = study.control(base, {"never_known": out, "answers": learned})
    assert control["kind"] == NEVER_KNOWN and control["known"] == [False, True]
    # an attack that "recovered" the learned item would not count: the control is 0 of 1, not 1 of 2
    runs = {"few_shot": [True, True]}
    c = calibrate(runs, np.array([True, True]), {**control, "attacks": {"few_shot": [True, False]}})[0]
    assert (c.control_hits, c.control_n) == (0, 1)
    # every never-known item learned: nothing to read the attacks against, the raw rates stand in
    both = {"retain": {"answers": ["x"] * 6, "correct": [True] * 6}}
    assert study.control(base, {"never_known": study.attack_never_known(_Echo(), base, both), "answers": both}) is None


def test_when_every_known_fact_is_forgotten_the_control_splits_the_never_known_items(benchmark, tmp_path):
    """``forget_known: all`` leaves no known retain item: the control's attacks are read on a seeded half
    of the never-known items and draw their demonstrations from the other half, never from their own."""
    from unpact.config import RecoveryConfig
    from unpact.study import Study

    retain = benchmark["retain"][::4][:8]
    cfg = StudyConfig(recovery=RecoveryConfig(attacks=["few_shot"], styles=[], few_shot_k=2))
    study = Study(cfg, tmp_path)
    study.splits = {"forget": benchmark["forget"][:2], "retain": retain, "utility": []}
    base = {"answers": {"retain": {"correct": [False] * 8}},
            "attributions": {"retain": [{"keywords": []}] * 8, "utility": []}}
    unlearned = {"retain": {"answers": ["x"] * 8, "correct": [False] * 8}}
    out = study.attack_never_known(_Echo(), base, unlearned)
    prompts = out["few_shot"]["prompts"]
    asked = {p.split("\n")[-1] for p in prompts}
    shown = {line for p in prompts for line in p.split("\n")[:-1]}
    pool = {it.question.strip() for it in retain}
    drawn_from = {q for q in pool if any(f"Q: {q} A:" in line for line in shown)}
    assert len(asked) == 4 and asked <= pool and drawn_from and not drawn_from & asked
    again = study.attack_never_known(_Echo(), base, unlearned)
    assert again["few_shot"]["prompts"] == prompts  # seeded


def test_the_never_known_control_is_held_out_of_what_the_method_trains_on(benchmark, tmp_path):
    """A GDR/KL method trains on retain; trained on, a never-known fact is half-learned even when it is
    not yet answered, and attacks recover it more easily than a fact the model never saw (a control
    biased up, a method read as more reliable than it is). The control's items are never trained on;
    the pool the attacks draw on is. With a gold model nothing is held out."""
    from unpact.study import Study

    retain = benchmark["retain"][::4][:8]
    study = Study(StudyConfig(), tmp_path)
    study.splits = {"forget": benchmark["forget"][:2], "retain": retain, "utility": []}
    for known in ([True, False, True, False, False, True, True, True], [False] * 8):
        base = {"answers": {"retain": {"correct": known}}}
        control, pool = study.never_known_items(base)
        forget, trained = study.training_sets(None, base)
        assert control and forget == study.splits["forget"]
        assert {it.id for it in trained} == {retain[i].id for i in pool}
        assert not {it.id for it in trained} & {retain[i].id for i in control}
    study.gold_dir = tmp_path / "gold"
    assert study.never_known_items(base) == ([], []) and study.training_sets(None, base)[1] == retain
    # one never-known item and none known: no control to read, nothing held out
    study.gold_dir = None
    base = {"answers": {"retain": {"correct": [False]}}}
    study.splits["retain"] = retain[:1]
    assert study.never_known_items(base) == ([], []) and study.training_sets(None, base)[1] == retain[:1]


def test_attacks_ask_only_the_forgotten_items_and_the_gold_control_only_its_own(study):
    """Every rate reads an attack on the forgotten items alone, so the study asks nothing else: an item
    the unlearned model still answers (or the original never knew) gets no attack prompt, and the gold
    model is attacked on the facts the original knew that it does not answer plainly."""
    run, metrics = study
    original = read_json(run / "base.json")["answers"]["forget"]["correct"]
    gold = read_json(run / "gold.json")
    asked_gold = [bool(k and not g) for k, g in zip(original, gold["answers"]["forget"]["correct"], strict=True)]
    spared = 0
    for name in metrics["methods"]:
        result = read_json(run / "methods" / name / "result.json")
        forgotten = [bool(k and not a) for k, a in zip(original, result["answers"]["forget"]["correct"], strict=True)]
        spared += forgotten.count(False)
        for attack, entry in result["attacks"].items():
            if ":retain" in attack or ":utility" in attack:
                continue  # FocusOnKey's do-no-harm runs ask every retain/utility item
            assert entry["attacked"] == forgotten, (name, attack)
            assert all((p is None) != f for p, f in zip(entry["prompts"], forgotten, strict=True)), (name, attack)
            assert not any(c and not f for c, f in zip(entry["correct"], forgotten, strict=True))
        lens = result["attacks"]["logit_lens"]["details"]["ranks"] if "logit_lens" in result["attacks"] else None
        assert lens is None or all((r is None) != f for r, f in zip(lens, forgotten, strict=True))
    assert spared > 0  # the demo's methods leave some known facts answered, and the never-known one
    for attack, entry in gold["attacks"].items():
        assert entry["attacked"] == asked_gold, attack


def test_a_model_that_forgot_nothing_is_attacked_on_nothing(tiny_scorer, benchmark, tmp_path):
    """Nothing forgotten: no weight copy, relearning or probe is paid for, every forget run is empty,
    and no item counts as recovered; FocusOnKey's do-no-harm runs still ask the retain items."""
    from unpact.study.attacks import StudyAttacks

    cfg = StudyConfig()
    cfg.recovery.attacks = ["sampling", "quantize", "relearn", "probe", "logit_lens", "direction_ablation"]
    splits = {s: benchmark[s][:4] for s in ("forget", "retain", "utility")}
    rows = lambda items: [{"keywords": it.question.split()[:1], "contributions": [0.0] * 40, "key": [0]}  # noqa: E731
                          for it in items]
    base = {"attributions": {s: rows(items) for s, items in splits.items()}}
    answers = {"forget": {"answers": ["x"] * 4}}

    class Probe(StudyAttacks):
        def scorer(self, model, tok):
            raise AssertionError("a weight attack copied the model with nothing to ask")

    study = Probe()
    study.cfg, study.splits, study.gold = cfg, splits, None
    out = study.attack(tiny_scorer, base, answers, only=[False] * 4)
    forget = {k: e for k, e in out.items() if ":retain" not in k and ":utility" not in k}
    assert {"sampling", "quantize_int8", "relearn", "probe", "logit_lens", "direction_ablation"} <= set(forget)
    for name, e in forget.items():
        assert e["attacked"] == [False] * 4 and e["correct"] == [False] * 4 and e["prompts"] == [None] * 4, name
    assert len(out["focus_on_key:instruction:retain"]["prompts"]) == 4
