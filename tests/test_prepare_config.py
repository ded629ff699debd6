"""`unpact prepare --config`: the built-in model is trained on the study's first benchmark, with the
study's first model's settings (issue #23)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from unpact.cli import main
from unpact.data import SPLITS, builtin, load_items
from unpact.data.schema import save_items

# a one-layer model that stops at its first right answers: what is tested is which items it trains on
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "max_epochs": 20, "lr": 0.01,
        "target_accuracy": 0.01, "seed": 1}


def write_study(path: Path, models: list[dict], benchmarks: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"name": "prep", "models": models, "benchmarks": benchmarks}, sort_keys=False),
                    encoding="utf-8")
    return path


def jsonl_benchmark(folder: Path) -> dict[str, list]:
    """A 10-person built-in benchmark (another seed than any default) written in the jsonl layout."""
    splits = builtin.generate(seed=5, n_entities=10, forget_fraction=0.2)
    folder.mkdir()
    for split in SPLITS:
        save_items(folder / f"{split}.jsonl", splits[split])
    return {s: splits[s] for s in SPLITS}


def trained_on(out: Path) -> int:
    return json.loads((out / "unpact_builtin.json").read_text(encoding="utf-8"))["n_items"]


def test_prepare_trains_on_the_studys_first_benchmark_from_a_folder(tmp_path, capsys):
    splits = jsonl_benchmark(tmp_path / "bench")
    # a built-in benchmark second: only the first one counts
    config = write_study(tmp_path / "study.yaml", [{"name": "tiny", "builtin": TINY}],
                         [{"name": "folder", "path": str(tmp_path / "bench"), "format": "jsonl"},
                          {"name": "builtin", "builtin": {"n_entities": 12}}])
    out = tmp_path / "model"
    assert main(["prepare", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "benchmark folder (jsonl" in printed and str(tmp_path / "bench") in printed
    assert trained_on(out) == sum(len(items) for items in splits.values())
    for split in SPLITS:
        saved = load_items(out / "data" / f"{split}.jsonl")
        assert [it.to_dict() for it in saved] == [it.to_dict() for it in splits[split]]
    assert not (out / "data" / "holdout.jsonl").exists()  # the folder has none; the built-in one's is not made up
    info = json.loads((out / "unpact_builtin.json").read_text(encoding="utf-8"))
    assert info["config"]["hidden_size"] == 32 and info["config"]["num_layers"] == 1


def test_prepare_trains_on_the_studys_builtin_benchmark_settings(tmp_path, capsys):
    config = write_study(tmp_path / "study.yaml", [{"name": "tiny", "builtin": TINY}],
                         [{"name": "small", "builtin": {"seed": 3, "n_entities": 10, "forget_fraction": 0.3}}])
    out = tmp_path / "model"
    assert main(["prepare", "--config", str(config), "--out", str(out), "--quiet", "--exclude", "forget"]) == 0
    assert "benchmark small (built-in, seed 3, 10 people)" in capsys.readouterr().out
    expected = builtin.generate(seed=3, n_entities=10, forget_fraction=0.3)
    assert trained_on(out) == len(expected["retain"]) + len(expected["utility"])
    saved = load_items(out / "data" / "forget.jsonl")  # saved though not trained on
    assert [it.id for it in saved] == [it.id for it in expected["forget"]]


def test_prepare_refuses_a_study_whose_first_model_is_pretrained(tmp_path, capsys):
    jsonl_benchmark(tmp_path / "bench")
    config = write_study(tmp_path / "study.yaml",
                         [{"name": "llama", "path": str(tmp_path / "weights")}, {"name": "tiny", "builtin": TINY}],
                         [{"name": "folder", "path": str(tmp_path / "bench")}])
    out = tmp_path / "model"
    assert main(["prepare", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "`prepare` trains the built-in model only" in err and "first model (llama) is a pretrained folder" in err
    assert not out.exists()
