"""Secrets never reach a run directory; config names cannot write outside it."""

from __future__ import annotations

import sys

import pytest

from unpact.config import GridConfig, from_dict, validate_grid
from unpact.errors import UnpactError
from unpact.study import Grid
from unpact.study.manifest import REDACTED, manifest, redact

KEY = "sk-unpact-test-0123456789abcdef"


def test_redact_hides_secret_options_url_credentials_and_secret_env_values():
    env = {"OPENAI_API_KEY": KEY, "HOME": "/root", "SHORT_TOKEN": "abc"}
    argv = ["unpact", "audit", "--api-key", "literal-secret-1", "--hf-token=literal-secret-2",
            "--model", "http://alice:pa55word@10.0.0.1:8080/v1", f"--note=uses {KEY} here", "--out", "/root/runs"]
    out = redact(argv, env)
    assert out == ["unpact", "audit", "--api-key", REDACTED, f"--hf-token={REDACTED}",
                   "--model", f"http://{REDACTED}@10.0.0.1:8080/v1", f"--note=uses {REDACTED} here", "--out", "/root/runs"]
    assert redact(["x", "abc"], env) == ["x", "abc"]  # a value too short to be a key is not hunted for


def test_no_secret_reaches_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HF_TOKEN", KEY[::-1])
    # a user who pasted the key on the command line: the manifest records the command line
    monkeypatch.setattr(sys, "argv", ["unpact", "run", "tiny.yaml", "--api-key", KEY])
    cfg = validate_grid(from_dict(GridConfig, {
        "name": "secret", "keep_models": False, "evaluation": {"gold_model": False},
        "models": [{"name": "tiny", "builtin": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2,
                                                "num_heads": 2, "max_epochs": 12, "lr": 0.004,
                                                "target_accuracy": 0.01}}],
        "benchmarks": [{"name": "b", "builtin": {"n_entities": 10, "forget_fraction": 0.3}}],
        "methods": [{"method": "GA_GDR", "epochs": 1}],
        "recovery": {"attacks": ["paraphrase"]},
    }))
    run = tmp_path / "run"
    Grid(cfg, run).run()
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and len(files) > 10
    for path in files:
        data = path.read_bytes()
        assert KEY.encode() not in data and KEY[::-1].encode() not in data, path
    assert manifest([0])["history"][0]["argv"][-1] == REDACTED


@pytest.mark.parametrize("where", ["name", "models", "benchmarks"])
@pytest.mark.parametrize("bad", ["..", ".", "../up", "a/b", ".hidden"])
def test_names_that_become_folders_cannot_leave_the_run_directory(where, bad):
    data: dict = {"name": "ok"}
    if where == "name":
        data["name"] = bad
    elif where == "models":
        data["models"] = [{"name": bad, "builtin": {}}]
    else:
        data["benchmarks"] = [{"name": bad, "builtin": {}}]
    with pytest.raises(UnpactError, match="name"):
        validate_grid(from_dict(GridConfig, data))
