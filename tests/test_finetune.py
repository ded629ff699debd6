"""Fine-tune, then unlearn (issue #24 part 5): a pretrained model is taught a fictitious benchmark before
the study, a gold model is taught the same way without the forget set, and every attack is read
against that gold model. The "pretrained" model here is a small built-in model trained on other people."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from unpact.cli import main
from unpact.config import GridConfig, from_dict, validate_grid
from unpact.data import SPLITS, builtin
from unpact.errors import UnpactError
from unpact.io import read_json
from unpact.models.builtin import BuiltinModelConfig, prepare_builtin
from unpact.models.finetune import FinetuneConfig, prepare_finetuned
from unpact.study import Grid

BENCH = {"seed": 3, "n_entities": 10, "forget_fraction": 0.2}  # 2 forget people (8 facts), 8 retain (32)
TEACH = {"lr": 0.005, "batch_size": 16, "max_epochs": 60, "target_accuracy": 0.9}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A small pretrained causal LM: the built-in architecture trained on a benchmark of other people."""
    other = builtin.generate(seed=9, n_entities=10, forget_fraction=0.2)
    folder = tmp_path_factory.mktemp("pretrained") / "model"
    cfg = BuiltinModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, max_epochs=8,
                             lr=0.01, target_accuracy=0.01, seed=0)
    prepare_builtin([it for s in SPLITS for it in other[s]], folder, cfg)
    return folder


def grid(source: Path, **teach) -> GridConfig:
    return validate_grid(from_dict(GridConfig, {
        "name": "taught", "keep_models": False,
        "models": [{"name": "pre", "path": str(source), "finetune": {**TEACH, **teach}}],
        "benchmarks": [{"name": "people", "builtin": BENCH}],
        "methods": [{"method": "GA", "lr": 0.001, "epochs": 1}],
        "recovery": {"attacks": ["sampling"], "sampling_n": 2, "styles": ["instruction"]},
    }))


@pytest.fixture(scope="module")
def run(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, Grid(grid(source), out).run()


def test_the_pretrained_model_is_taught_the_facts_and_the_gold_model_all_but_forget(run, source):
    out, metrics = run
    group = metrics["groups"][0]
    assert group["model"]["taught_from"] == str(source)
    assert group["model"]["accuracy"] >= 0.9  # exact greedy answers when teaching stopped
    # the study's own judge on the taught model (at least as lenient as exact answers): it knows the
    # 40 taught facts as teaching left them, and most of the 8 it is to forget — the target allows 4
    # misses over forget + retain, and where they fall moves with the CPU's float kernels
    acc = group["base"]["accuracy"]
    assert (8 * acc["forget"] + 32 * acc["retain"]) / 40 >= 0.9 and acc["forget"] >= 0.75 and acc["retain"] >= 0.85
    # the gold model was taught the retain facts only: it never knew the forget ones
    assert group["gold"]["accuracy"]["retain"] >= 0.85
    assert group["gold"]["accuracy"]["forget"] <= 0.25
    taught = json.loads((out / "groups" / "pre__people" / "model" / "unpact_finetune.json").read_text(encoding="utf-8"))
    gold = json.loads((out / "groups" / "pre__people" / "gold" / "unpact_finetune.json").read_text(encoding="utf-8"))
    data = {s: (out / "groups" / "pre__people" / "data" / f"{s}.jsonl").read_text(encoding="utf-8").count("\n")
            for s in SPLITS}
    assert taught["n_items"] == data["forget"] + data["retain"] == 40  # utility is not taught by default
    assert gold["n_items"] == data["retain"] == 32
    assert taught["source"] == gold["source"] == str(source)
    # every attack is read against the taught gold model, not the never-known items
    calibrated = group["methods"]["GA"]["calibrated"]
    assert calibrated and all(c["control_kind"] == "gold model" for c in calibrated.values()), calibrated
    # the pretrained folder is left as it was: the taught copies live in the run
    assert not (source / "unpact_finetune.json").exists()


def test_a_second_run_reuses_the_taught_models_and_a_changed_setting_reteaches(run, source, capsys):
    out, _ = run
    folder = out / "groups" / "pre__people" / "model"
    before = (folder / "model.safetensors").stat().st_mtime_ns
    spec = out / "study.yaml"
    spec.write_text(yaml.safe_dump(grid(source).to_dict(), sort_keys=False), encoding="utf-8")
    assert main(["run", str(spec), "--dry-run", "--out", str(out)]) == 0
    assert "1 done, 0 to run" in capsys.readouterr().out
    Grid(grid(source), out).run()
    assert (folder / "model.safetensors").stat().st_mtime_ns == before
    spec.write_text(yaml.safe_dump(grid(source, lr=0.006).to_dict(), sort_keys=False), encoding="utf-8")
    assert main(["run", str(spec), "--dry-run", "--out", str(out)]) == 0
    assert "0 done, 1 to run" in capsys.readouterr().out  # the taught model, and so the cell, is stale


def test_teaching_that_falls_short_says_what_to_raise(source, tmp_path):
    items = builtin.generate(seed=3, n_entities=4, forget_fraction=0.5)
    cfg = FinetuneConfig(lr=1e-6, batch_size=16, max_epochs=1, target_accuracy=1.0)
    with pytest.raises(UnpactError, match=r"reached only .* in 1 epochs .*raise finetune\.max_epochs or finetune\.lr"):
        prepare_finetuned(source, items["forget"] + items["retain"], tmp_path / "m", cfg)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.partial*"))  # nothing half-written kept


@pytest.mark.parametrize("model, message", [
    ({"name": "b", "builtin": {}, "finetune": {}}, r"models\[0\].finetune: 'b' .*give it a path"),
    ({"name": "p", "path": "x", "gold": "y", "finetune": {}}, r"models\[0\].gold: 'y' .*remove gold"),
    ({"name": "p", "path": "x", "finetune": {"splits": ["retain"]}}, r"models\[0\].finetune.splits: .*include forget"),
    ({"name": "p", "path": "x", "finetune": {"splits": ["forget", "retian"]}}, r"splits\[1\]: 'retian'.*retain"),
    ({"name": "p", "path": "x", "finetune": {"target_accuracy": 0}}, r"finetune.target_accuracy: 0.0 .*\(0, 1\]"),
    ({"name": "p", "path": "x", "finetune": {"lr": 0.001, "epochs": 3}}, r"finetune.epochs"),
])
def test_bad_finetune_settings_are_refused_naming_the_key(model, message):
    with pytest.raises(UnpactError, match=message):
        validate_grid(from_dict(GridConfig, {"name": "x", "models": [model]}))


def test_the_preset_is_a_finetuned_study_of_at_least_100_forget_facts():
    from unpact.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "real-smollm2-finetuned.yaml")
    (model,), (bench,) = cfg.models, cfg.benchmarks
    assert model.finetune is not None and model.path == "smollm2-135m" and model.gold is None
    splits = builtin.generate(**asdict(bench.builtin))
    assert len(splits["forget"]) >= 100
    assert cfg.evaluation.gold_model  # the taught gold model is every attack's control
    paper = {"GA_GDR", "GA_KLR", "NPO_GDR", "NPO_KLR", "TaskVector", "RMU", "KeyNPO"}
    assert paper <= {m.method for m in cfg.methods}


def test_teaching_reuses_a_finished_model(source, tmp_path):
    items = builtin.generate(seed=4, n_entities=2, forget_fraction=0.5)
    taught = items["forget"] + items["retain"]
    cfg = FinetuneConfig(lr=0.005, batch_size=16, max_epochs=40, target_accuracy=0.25)
    info, reused = prepare_finetuned(source, taught, tmp_path / "m", cfg)
    assert not reused and info["n_items"] == len(taught) and read_json(tmp_path / "m" / "unpact_finetune.json") == info
    again, reused = prepare_finetuned(source, taught, tmp_path / "m", cfg)
    assert reused and again == info
