"""Study grids: config, cells, overrides, resuming after SIGKILL or a full disk, the results table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from unpact.cli import main
from unpact.config import GridConfig, load_config
from unpact.errors import UnpactError
from unpact.study import Grid

ROOT = Path(__file__).resolve().parents[1]

# 2 models × 1 benchmark × 3 methods: tiny models (~5 s to train) and cheap attacks, every stage on.
SMALL = {
    "name": "small",
    "keep_models": False,
    "models": [
        {"name": "tiny-a", "builtin": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2,
                                       "max_epochs": 30, "lr": 0.004, "target_accuracy": 0.35, "seed": 2}},
        {"name": "tiny-b", "builtin": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2,
                                       "max_epochs": 30, "lr": 0.004, "target_accuracy": 0.35, "seed": 3}},
    ],
    "benchmarks": [{"name": "builtin", "builtin": {"n_entities": 10, "forget_fraction": 0.3}}],
    "methods": [
        {"method": "GA_GDR", "lr": 0.001, "epochs": 3, "hparams": {"alpha": 3.0}},
        {"method": "NPO_GDR", "lr": 0.001, "epochs": 3, "hparams": {"alpha": 5.0}},
        {"method": "TaskVector", "lr": 0.001, "epochs": 2, "hparams": {"scale": 0.75}},
    ],
    "recovery": {"sampling_n": 2, "relearn_steps": 2},
}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "unpact.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The small grid run once, uninterrupted: (config path, run dir)."""
    root = tmp_path_factory.mktemp("grid")
    config = write_config(root / "small.yaml", SMALL)
    proc = cli("run", str(config), "--out", str(root / "whole"), "--quiet")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return config, root / "whole"


# -- config ------------------------------------------------------------------------------------


def test_shipped_configs_load_and_expand_to_their_cells():
    assert load_config(ROOT / "configs" / "demo.yaml") == GridConfig()
    full = load_config(ROOT / "configs" / "full-example.yaml")
    cells = Grid(full, "unused").cells()
    assert len(cells) == 2 * 2 * 2 * 3 == len({c.id for c in cells})
    wide_key = [c for c in cells if c.model.name == "builtin-wide" and c.method.method == "KeyNPO"]
    assert all(c.method.lr == 1e-4 and c.method.epochs == 20 for c in wide_key)
    assert all(c.method.hparams == {"alpha": 20.0, "beta": 0.3} for c in wide_key)  # merged, not replaced
    plain = [c for c in cells if c.model.name == "builtin" and c.method.method == "KeyNPO"]
    assert all(c.method.lr == 5e-4 and c.method.epochs == 15 for c in plain)
    assert {c.method.seed for c in cells} == {0, 1}  # the grid's seed drives each cell's unlearning
    assert {c.label for c in cells if c.method.method == "GA_GDR"} == {"GA_GDR s0", "GA_GDR s1"}


@pytest.mark.parametrize("change, message", [
    ({"models": [{"name": "a", "builtin": {}}, {"name": "a", "builtin": {}}]}, r"models\[1\]\.name: 'a' is invalid; each name once"),
    ({"models": [{"name": "a", "builtin": {}, "path": "/m"}]}, r"models\[0\]: 'a' is invalid; give exactly one of builtin"),
    ({"models": [{"name": "a b", "builtin": {}}]}, r"models\[0\]\.name: 'a b' is invalid"),
    ({"seeds": []}, r"seeds: \[\] is invalid"),
    ({"seeds": [1, 1]}, r"seeds: \[1, 1\] is invalid; list distinct seeds"),
    ({"overrides": [{"where": {"model": "nope"}, "set": {"lr": 0.1}}]}, r"overrides\[0\]\.where\.model: 'nope' is invalid; no such model"),
    ({"overrides": [{"where": {"layer": 3}, "set": {"lr": 0.1}}]}, r"overrides\[0\]\.where\.layer: 'layer' is invalid; match on model"),
    ({"overrides": [{"where": {}, "set": {"seed": 3}}]}, r"overrides\[0\]\.set\.seed: 'seed' is invalid"),
    ({"overrides": [{"where": {}, "set": {"lr": "fast"}}]}, r"overrides\[0\]\.set\.lr: expected float, got 'fast'"),
    ({"overrides": [{"where": {"method": "GA_GDR"}, "set": {"lr": -1.0}}]}, r"methods\[0\]\.lr: -1.0 is invalid.*after overrides, in builtin × builtin × seed 0"),
    ({"benchmarks": [{"name": "b", "builtin": {"n_entities": 3}}]}, r"data\.n_entities: 3 is invalid"),
    ({"modles": []}, r"modles: unknown key"),
    ({"models": [{"name": "a", "builtin": {}, "dtype": "bf16"}]},
     r"models\[0\]\.dtype: 'bf16' is invalid; choose from float32, bfloat16, float16"),
])
def test_bad_grid_configs_name_the_key_path(tmp_path, change, message):
    path = write_config(tmp_path / "study.yaml", change)
    with pytest.raises(UnpactError, match=message) as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_non_utf8_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


# -- running, resuming -------------------------------------------------------------------------


@pytest.mark.slow  # two subprocess runs of the 6-cell grid (≈50 s): the fast tier keeps the SIGKILL-mid-write tests
def test_killed_study_resumes_to_the_same_metrics(small_run, tmp_path):
    config, whole = small_run
    out = tmp_path / "killed"
    # Start, and SIGKILL as soon as the second model's first cell has begun (3 of 6 cells finished).
    proc = cli("run", str(config), "--out", str(out), "--quiet")
    started = out / "cells" / "tiny-b__builtin__GA_GDR__s0" / "run.key"
    deadline = time.monotonic() + 300
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    done = {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/metrics.json")}
    assert set(done) == {f"tiny-a__builtin__{m}__s0" for m in ("GA_GDR", "NPO_GDR", "TaskVector")}

    dry = cli("run", str(config), "--out", str(out), "--dry-run")
    listing = dry.communicate(timeout=120)[0]
    assert "6 cells" in listing and "3 done, 3 to run" in listing, listing

    resumed = cli("run", str(config), "--out", str(out), "--quiet")
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log
    # finished cells were not recomputed, and the result is the uninterrupted run's, byte for byte
    assert {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("tiny-a*/metrics.json")} == done
    assert (out / "metrics.json").read_bytes() == (whole / "metrics.json").read_bytes()
    assert (out / "records.jsonl").read_bytes() == (whole / "records.jsonl").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["history"]) == 2 and manifest["seeds"] == [0]
    assert manifest["packages"]["torch"] and manifest["host"]["cpus"]


def test_grid_metrics_hold_every_cell_and_no_timings(small_run):
    _, run = small_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert [g["id"] for g in metrics["groups"]] == ["tiny-a__builtin", "tiny-b__builtin"]
    assert len(metrics["cells"]) == 6
    for g in metrics["groups"]:
        assert list(g["methods"]) == ["GA_GDR", "NPO_GDR", "TaskVector"]
        assert g["model"]["path"] == f"groups/{g['id']}/model"
        for m in g["methods"].values():
            assert m["cell"] in metrics["cells"] and 0 <= m["destructive_rate"] <= 1  # gains never offset losses
    assert "seconds" not in json.dumps(metrics)
    timings = json.loads((run / "timings.json").read_text())
    assert set(timings["cells"]) == set(metrics["cells"]) and timings["last_run_seconds"] > 0
    assert set(timings["groups"]) == {"tiny-a__builtin", "tiny-b__builtin"}  # the original models' stages
    assert all(seconds > 0 for seconds in timings["groups"].values())
    assert not any((run / "cells").glob("*/model"))  # keep_models: false
    assert not any((run / "cells").glob("*/checkpoint"))


def test_changed_method_settings_rerun_only_their_cells(small_run, tmp_path, capsys):
    _, run = small_run
    changed = json.loads(json.dumps(SMALL))
    changed["methods"][2]["hparams"]["scale"] = 0.5
    config = write_config(tmp_path / "changed.yaml", changed)
    assert main(["run", str(config), "--out", str(run), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    todo = sorted(line.split()[-1] for line in lines if line.startswith("to do"))
    assert todo == ["tiny-a__builtin__TaskVector__s0", "tiny-b__builtin__TaskVector__s0"]


def test_a_study_in_bfloat16_scores_every_model_in_it_and_reruns_what_it_changes(small_run, tmp_path, capsys,
                                                                                 monkeypatch):
    _, run = small_run
    half = json.loads(json.dumps(SMALL))
    half["models"][0]["dtype"] = "bfloat16"
    config = write_config(tmp_path / "half.yaml", half)
    assert main(["run", str(config), "--out", str(run), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    todo = sorted(line.split()[-1] for line in lines if line.startswith("to do"))
    assert todo == [f"tiny-a__builtin__{m}__s0" for m in ("GA_GDR", "NPO_GDR", "TaskVector")]  # not tiny-b

    # one cell of it, run: every scorer (original model, unlearned, quantised, relearned) sees bfloat16
    import unpact.study.runner as runner

    seen = []

    class Recording(runner.Scorer):
        def __init__(self, model, *args, **kwargs):
            seen.append(next(model.parameters()).dtype)
            super().__init__(model, *args, **kwargs)

    monkeypatch.setattr(runner, "Scorer", Recording)
    half["models"], half["methods"] = half["models"][:1], half["methods"][2:]
    Grid(load_config(write_config(tmp_path / "one.yaml", half)), tmp_path / "one").run()
    assert len(seen) >= 5 and set(seen) == {torch.bfloat16}
    cell = json.loads((tmp_path / "one" / "cells" / "tiny-a__builtin__TaskVector__s0" / "metrics.json").read_text())
    assert 0 <= cell["metrics"]["forget_efficacy"] <= 1
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["groups"][0]["model"]["dtype"] == "bfloat16"
    assert "attacked in bfloat16" in (tmp_path / "one" / "report.html").read_text()


def test_results_table_has_a_row_per_cell_in_csv_and_parquet(small_run, tmp_path, capsys):
    _, run = small_run
    csv, parquet = tmp_path / "r.csv", tmp_path / "r.parquet"
    assert main(["results", str(run), "--csv", str(csv), "--parquet", str(parquet)]) == 0
    assert "6 cells" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    for frame in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert len(frame) == 6 and list(frame.columns[:4]) == ["model", "benchmark", "method", "seed"]
        row = frame[(frame["model"] == "tiny-b") & (frame["method"] == "NPO_GDR")].iloc[0]
        m = metrics["groups"][1]["methods"]["NPO_GDR"]
        assert row["destructive_rate"] == pytest.approx(m["destructive_rate"])
        assert row["recovery_rate.sampling"] == pytest.approx(m["recovery_rate"]["sampling"])
        assert row["recovery_ci95.sampling.hi"] == pytest.approx(m["recovery_ci95"]["sampling"][1])
        assert row["tracking.jaccard"] == pytest.approx(m["tracking"]["jaccard"])
        assert row["base_accuracy.forget"] == pytest.approx(metrics["groups"][1]["base"]["accuracy"]["forget"])


def test_results_attacks_prints_every_attack_of_every_method_with_its_cost(small_run, tmp_path, capsys):
    _, run = small_run
    assert main(["results", str(run), "--attacks", "--csv", str(tmp_path / "r.csv"), "--no-parquet"]) == 0
    out = capsys.readouterr().out
    assert "Every attack · tiny-a × builtin" in out and "Every attack · tiny-b × builtin" in out
    timings = json.loads((run / "timings.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    cells = [m["cell"] for m in metrics["groups"][0]["methods"].values()]
    mean = sum(timings["stages"][c]["attack sampling"]["wall_s"] for c in cells) / len(cells)
    sampling = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("sampling "))
    assert sampling.rstrip("│ ").split()[-1] == f"{mean:.1f}"  # the first group's table comes first


def test_metrics_recomputed_from_a_stored_result_keep_the_timings_that_measured_it(tmp_path):
    """A cell whose answers and attacks are stored but whose metrics are not (removed, or from an older
    unpact) gets its metrics recomputed in a moment; its timings must stay those of the run that did the
    model work, or `unpact results --attacks` would show what recomputing cost. (In place: a run's keys
    name its folder, so a copied run reruns everything.)"""
    one = {**SMALL, "models": SMALL["models"][:1], "methods": SMALL["methods"][1:2],
           "recovery": {"attacks": ["paraphrase"]}, "evaluation": {"gold_model": False}}  # one attack suffices
    config, out = write_config(tmp_path / "one.yaml", one), tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    cell = "tiny-a__builtin__NPO_GDR__s0"
    before = json.loads((out / "timings.json").read_text())
    metrics = json.loads((out / "cells" / cell / "metrics.json").read_text())
    (out / "cells" / cell / "metrics.json").unlink()
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    after = json.loads((out / "timings.json").read_text())
    assert after["stages"][cell] == before["stages"][cell] and after["cells"][cell] == before["cells"][cell]
    assert any(name.startswith("attack ") for name in after["stages"][cell])
    assert json.loads((out / "cells" / cell / "metrics.json").read_text()) == metrics


def test_results_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["results", str(tmp_path)]) == 2
    assert "metrics.json not found" in capsys.readouterr().err


def test_report_of_the_grid_run_directory_renders_every_cell(small_run):
    _, run = small_run
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    for cell in json.loads((run / "metrics.json").read_text())["cells"]:
        assert cell in page
    assert page.count('class="heatmap"') == 2 * 6 * 12  # before/after × cells × forget items (10 people × 30% × 4)
    assert (run / "dilemma-tiny-a__builtin.png").is_file() and (run / "dilemma-tiny-b__builtin.png").is_file()


def test_prepare_exclude_forget_trains_the_gold_model_that_never_saw_the_forget_set(tmp_path, capsys):
    from unpact.data import load_items
    from unpact.evaluation import correctness
    from unpact.models import load_model, prompt_format
    from unpact.scoring import Scorer

    config = write_config(tmp_path / "small.yaml", {**SMALL, "models": SMALL["models"][:1]})
    assert main(["prepare", "--config", str(config), "--out", str(tmp_path / "gold"), "--exclude", "forget",
                 "--quiet"]) == 0
    assert "never trained on: forget" in capsys.readouterr().out
    model, tok = load_model(tmp_path / "gold")
    scorer = Scorer(model, tok, prompt_format(tok))
    accuracy = {}
    for split in ("forget", "retain"):
        items = load_items(tmp_path / "gold" / "data" / f"{split}.jsonl")  # every split is saved
        accuracy[split] = correctness(scorer.generate([it.question for it in items]),
                                      [it.answer for it in items]).mean()
    # retain facts were learnt (chance is 7–8%); forget facts (random attributes of unseen people) are not:
    # guessing gets 2 of the 12 right one time in four, 4 or more about one time in a hundred
    assert accuracy["retain"] >= 0.3 and accuracy["forget"] <= 3 / 12


# -- faults: disk full, SIGKILL during attribution and mid-write -------------------------------


@pytest.mark.slow  # ≈40 s of subprocess runs; see test_killed_study_resumes_to_the_same_metrics
def test_sigkill_during_attribution_then_a_full_disk_then_the_rerun_completes(small_run, tmp_path, monkeypatch,
                                                                              capsys):
    import errno

    config, whole = small_run
    out = tmp_path / "faults"
    group = out / "groups" / "tiny-a__builtin"
    weights = group / "model" / "model.safetensors"
    # 1. SIGKILL once the original model is saved, while its answers and attributions are computed
    proc = cli("run", str(config), "--out", str(out), "--quiet")
    deadline = time.monotonic() + 300
    while not weights.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert weights.exists() and not (group / "base.json").exists()
    model_stamp = weights.stat().st_mtime_ns

    # 2. rerun; the disk fills up as the second cell finishes
    target = (out / "cells" / "tiny-a__builtin__NPO_GDR__s0" / "metrics.json").resolve()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).resolve() == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and str(target) in err, err
    assert "free some space and rerun" in err
    first = out / "cells" / "tiny-a__builtin__GA_GDR__s0" / "metrics.json"
    assert json.loads(first.read_text())["metrics"]["forget_efficacy"] is not None
    assert not target.exists() and not list(out.rglob(".*.tmp"))  # nothing half-written left behind
    stamp = first.stat().st_mtime_ns

    # 3. with space again, the run completes: nothing finished is redone, the numbers are the same
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert first.stat().st_mtime_ns == stamp and weights.stat().st_mtime_ns == model_stamp
    assert (out / "metrics.json").read_bytes() == (whole / "metrics.json").read_bytes()


SLOW_WRITE = """
import os, sys, time
from pathlib import Path
from unpact.io import write_json
from unpact.report import render_report

real_fsync = os.fsync

def stall(fd):  # killed while the target's bytes are on their way to disk (Linux: the fd's path)
    if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith("." + sys.argv[3] + "."):
        print("writing", flush=True)
        time.sleep(120)
    real_fsync(fd)

os.fsync = stall
run = Path(sys.argv[1])
render_report(run) if sys.argv[2] == "report" else write_json(run / "metrics.json", {"partial": True})
"""


@pytest.mark.parametrize("what, name", [("report", "report.html"), ("metrics", "metrics.json")])
def test_sigkill_mid_write_leaves_the_previous_file_whole(small_run, tmp_path, what, name):
    import shutil

    from unpact.io import remove_partial_writes

    _, whole = small_run
    run = shutil.copytree(whole, tmp_path / "run")
    before = (run / name).read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, str(run), what, name], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / name).read_bytes() == before  # readers only ever see the complete earlier file
    partial = list(run.glob(f".{name}.*.tmp"))  # the partial bytes sit in a temporary file
    assert len(partial) == 1
    assert remove_partial_writes(run) == partial  # what `unpact run` clears when it starts again
    assert main(["report", str(run)]) == 0 and (run / "report.html").stat().st_size > 0
