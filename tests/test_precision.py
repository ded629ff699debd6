"""A reduced precision the CPU only emulates is named before a study spends hours in it."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from unpact.config import GridConfig, from_dict, validate_grid
from unpact.models import precision
from unpact.study import Grid
from unpact.study.progress import Reporter


def test_cpu_slowdown_is_a_measured_ratio_of_this_cpu():
    ratio = precision.cpu_slowdown("bfloat16", rows=32, size=128, repeat=2)
    assert math.isfinite(ratio) and ratio > 0


@pytest.mark.parametrize("slowdown, said", [(2.7, True), (1.1, False), (0.6, False)])
def test_a_precision_slower_than_float32_on_this_cpu_is_named_with_its_field(monkeypatch, slowdown, said):
    monkeypatch.setattr(precision, "cpu_slowdown", lambda dtype: slowdown)
    notice = precision.precision_notice("bfloat16", "cpu", "models[1].dtype")
    if said:
        assert notice.startswith("models[1].dtype bfloat16: this CPU multiplies bfloat16 2.7× slower than float32")
        assert "leave models[1].dtype out" in notice
    else:
        assert notice is None


def test_float32_and_gpus_are_not_timed(monkeypatch):
    def never(dtype):
        raise AssertionError("timed")

    monkeypatch.setattr(precision, "cpu_slowdown", never)
    assert precision.precision_notice(None, "cpu") is None
    assert precision.precision_notice("float32", "cpu") is None
    assert precision.precision_notice("bfloat16", "cuda:0") is None


class _Stop(Exception):
    pass


def test_a_study_says_so_before_its_first_stage(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_slowdown", lambda dtype: 3.0)

    def first_stage(self, cell, timings):
        raise _Stop

    monkeypatch.setattr(Grid, "_prepare_group", first_stage)
    cfg = validate_grid(from_dict(GridConfig, {
        "name": "bf16", "models": [{"name": "tiny", "builtin": {"hidden_size": 32}, "dtype": "bfloat16"}],
        "methods": [{"method": "GA_GDR"}]}))
    out = io.StringIO()
    with pytest.raises(_Stop):
        Grid(cfg, tmp_path / "run", Reporter(Console(file=out, width=300))).run()
    assert "note: models[0].dtype bfloat16: this CPU multiplies bfloat16 3.0× slower than float32" in out.getvalue()
