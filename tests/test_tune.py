"""`unpact tune` (issue #21): the same budget for every method, selection on validation forget items
disjoint from the test items, and no attack run or read while selecting."""

import dataclasses

import pytest
import yaml

from unpact.config import GridConfig, TuneConfig, from_dict, load_config, validate_grid
from unpact.data.schema import Item
from unpact.errors import UnpactError
from unpact.recovery.base import Attack
from unpact.study import tune as tuning
from unpact.unlearn import METHODS, UnlearnConfig

TINY = {
    "name": "tiny-tune",
    "models": [{"name": "tiny", "builtin": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2,
                                            "num_heads": 2, "max_epochs": 30, "lr": 0.004, "target_accuracy": 0.35,
                                            "seed": 2}}],
    "benchmarks": [{"name": "builtin", "builtin": {"n_entities": 10, "forget_fraction": 0.4}}],
    "methods": [{"method": "GA_GDR", "lr": 0.001, "epochs": 2, "hparams": {"alpha": 3.0}},
                {"method": "CEU", "lr": 0.001, "epochs": 2}],
    "tune": {"lr_factors": [0.5, 2.0], "tradeoff_factors": [1.0, 2.0], "validation_share": 0.5},
}


def test_every_method_gets_the_same_budget_over_step_size_and_its_trade_off():
    t = TuneConfig(lr_factors=[0.5, 1.0, 2.0], tradeoff_factors=[0.5, 1.0, 2.0])
    for name, cls in METHODS.items():
        m = UnlearnConfig(method=name, lr=1e-3, hparams={})
        runs = tuning.sweep(m, t)
        assert len(runs) == 9, name
        assert min(r.lr for r in runs) == pytest.approx(5e-4) and max(r.lr for r in runs) == pytest.approx(2e-3)
        if cls.tradeoff is None:
            assert len({r.lr for r in runs}) == 9 and all(r.hparams == {} for r in runs)
        else:
            base = cls.defaults[cls.tradeoff]
            assert {r.hparams[cls.tradeoff] for r in runs} == {0.5 * base, base, 2 * base}, name
            assert any(r.lr == 1e-3 and r.hparams == {cls.tradeoff: base} for r in runs)  # the configured one
    assert {n: c.tradeoff for n, c in METHODS.items() if c.tradeoff != "alpha"} == {
        "TaskVector": "scale", "GA": None, "NPO": "beta", "UNDIAL": "beta", "CEU": None, "PDU": "eps"}


def test_selection_reads_only_validation_efficacy_and_destructive_rate():
    scores = [{"forget_efficacy": 1.0, "destructive_rate": 0.4},   # forgets all, too destructive
              {"forget_efficacy": 0.6, "destructive_rate": 0.08},
              {"forget_efficacy": 0.6, "destructive_rate": 0.02},  # same efficacy, less damage: chosen
              {"forget_efficacy": None, "destructive_rate": None}]
    assert tuning.select(scores, 0.10) == 2
    assert tuning.select(scores[:1], 0.10) == 0  # nothing meets the bound: the least destructive
    assert tuning.select([{"forget_efficacy": 0.5, "destructive_rate": 0.0}] * 3, 0.1, configured=1) == 1


def test_validation_split_is_by_entity_and_disjoint_from_the_test_items():
    items = [Item(f"f{e}-{a}", "q", "a", "forget", entity=f"e{e}") for e in range(6) for a in range(3)]
    val, test = tuning.split_forget(items, 0.5, seed=0)
    assert len(val) == len(test) == 9 and not {it.entity for it in val} & {it.entity for it in test}
    assert tuning.split_forget(items, 0.5, seed=0) == (val, test)  # seeded
    with pytest.raises(UnpactError, match="at least 2"):
        tuning.split_forget(items[:3], 0.5, seed=0)


def test_tune_block_is_checked_with_its_key_path():
    with pytest.raises(UnpactError, match=r"tune\.lr_factors\[1\]: -1\.0 is invalid; use a positive factor"):
        validate_grid(from_dict(GridConfig, {"tune": {"lr_factors": [1.0, -1.0]}}))
    with pytest.raises(UnpactError, match=r"tune\.validation_share: 1\.0 is invalid"):
        validate_grid(from_dict(GridConfig, {"tune": {"validation_share": 1.0}}))


def test_tune_on_the_built_in_benchmark_never_runs_an_attack(tmp_path, monkeypatch):
    """The whole command on a small built-in study: every method gets the same number of runs, the
    selection sees only two validation numbers per run, no attack runs, and tuned.yaml loads with
    each method's choice and the validation items held out of the study's forget set."""
    def no_attacks(*args, **kwargs):
        raise AssertionError("an attack ran during tuning")

    for attack in Attack.__subclasses__():
        monkeypatch.setattr(attack, "run", no_attacks)
    seen = []
    select = tuning.select
    monkeypatch.setattr(tuning, "select", lambda scores, *a: seen.append(scores) or select(scores, *a))
    cfg = validate_grid(from_dict(GridConfig, TINY))
    summary = tuning.tune(cfg, tmp_path)
    assert [len(m["runs"]) for m in summary["methods"].values()] == [4, 4] == [len(s) for s in seen]
    assert all(set(s) == {"forget_efficacy", "destructive_rate"} for scores in seen for s in scores)
    val, test = set(summary["validation_items"]), set(summary["test_items"])
    assert val and test and not val & test
    assert "no attack" in summary["protocol"] and "destructive rate ≤ 10%" in summary["protocol"]
    tuned = load_config(tmp_path / "tuned.yaml")
    assert set(tuned.tune.holdout) == val
    for m in tuned.methods:
        chosen = summary["methods"][m.method]
        assert (m.lr, m.hparams) == (chosen["lr"], chosen["hparams"])
    group = tuned.group(tuned.models[0], tuned.benchmarks[0], tuned.seeds[0])
    assert set(group.holdout) == val and group.tuning_protocol == summary["protocol"]  # for the report
    assert yaml.safe_load((tmp_path / "tuned.yaml").read_text())["tune"]["holdout"] == sorted(val, key=summary["validation_items"].index)
    assert dataclasses.asdict(tuned.tune)["lr_factors"] == [0.5, 2.0]
    # the tuned study reuses the tuned model and unlearns and judges the test items only
    from unpact.study import Grid

    grid = Grid(tuned, tmp_path)
    cell = grid.cells()[0]
    study = grid._study(cell)
    study.prepare(grid._benchmark(cell.benchmark))
    assert {it.id for it in study.splits["forget"]} == test


def test_validation_from_retain_keeps_every_forget_item_for_the_study(tmp_path, monkeypatch):
    """Validation items drawn from retain entities: tuning unlearns them and never trains them as
    retain; the study's forget set stays whole (nothing held out) and they stay retain there."""
    unlearned = []
    real = tuning.unlearn
    monkeypatch.setattr(tuning, "unlearn", lambda model, tok, fmt, forget, retain, cfg: unlearned.append(
        ({it.id for it in forget}, {it.id for it in retain})) or real(model, tok, fmt, forget, retain, cfg))
    spec = {**TINY, "methods": TINY["methods"][:1], "tune": {**TINY["tune"], "validation_from": "retain"}}
    summary = tuning.tune(validate_grid(from_dict(GridConfig, spec)), tmp_path)
    from unpact.data import builtin

    splits = builtin.generate(n_entities=10, forget_fraction=0.4)
    val = set(summary["validation_items"])
    assert set(summary["test_items"]) == {it.id for it in splits["forget"]}  # every forget item is a test item
    assert val <= {it.id for it in splits["retain"]}
    assert len({i.split("-")[1] for i in val}) == 4  # as many validation people as forget people
    assert len(unlearned) == 4 and all(f == val and not r & val for f, r in unlearned)
    assert "retain entities" in summary["protocol"]
    tuned = load_config(tmp_path / "tuned.yaml")
    assert tuned.tune.holdout == [] and tuned.tune.validation_from == "retain"
    with pytest.raises(UnpactError, match=r"tune\.validation_from: 'retian' is invalid; choose forget or retain"):
        validate_grid(from_dict(GridConfig, {"tune": {"validation_from": "retian"}}))
