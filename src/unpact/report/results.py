"""The results table: one row per cell of a study with every metric, for analysis in a notebook.

Nested metrics are flattened with dotted column names (``recovery_rate.sampling``,
``tracking.jaccard``, ``penalisation.forget.keyword_delta``); an interval [lo, hi] becomes two columns
``….lo`` and ``….hi``. Reads a grid run's metrics.json, or a single study's (one group, no cell ids).
Why a benchmark metric is null is a column too (``standard.missing.tofu.forget_quality``), and the
terminal lists each reason once under the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import UnpactError
from ..io import write_atomic
from .console import format_interval, format_rate, format_signed

IDENTITY = ("model", "benchmark", "method", "seed", "label", "cell")
SHOWN = ("forget_efficacy", "destructive_rate", "quadrant")
# the columns that say why a benchmark metric (``standard.<path>``) is null: ``standard.missing.<path>``
MISSING_PREFIX = "standard.missing."


def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        out[f"{prefix}.lo"], out[f"{prefix}.hi"] = value
    elif isinstance(value, list):
        out[prefix] = ", ".join(map(str, value))
    else:
        out[prefix] = value


def results_rows(metrics: dict) -> list[dict]:
    """One flat dict per cell: identity columns, the group's base accuracy, then the method's metrics."""
    groups = metrics.get("groups")
    if groups is None:  # a single study: one group, methods keyed by name
        groups = [{"id": "", "model_name": (metrics.get("model") or {}).get("path"), "benchmark": None, **metrics}]
    rows = []
    for g in groups:
        for label, m in (g.get("methods") or {}).items():
            row = {"model": g.get("model_name"), "benchmark": g.get("benchmark"), "method": m.get("method", label),
                   "seed": m.get("seed"), "label": label, "cell": m.get("cell")}
            _flatten((g.get("base") or {}).get("accuracy") or {}, "base_accuracy", row)
            _flatten({k: v for k, v in m.items() if k not in ("cell", "method", "seed")}, "", row)
            rows.append(row)
    if not rows:
        raise UnpactError("metrics.json holds no finished cells yet; run the study first")
    return rows


def results_frame(metrics: dict):
    """`results_rows` as a pandas DataFrame, identity columns first."""
    import pandas as pd

    frame = pd.DataFrame(results_rows(metrics))
    first = [c for c in IDENTITY if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def write_results(frame, csv: str | Path | None, parquet: str | Path | None) -> list[Path]:
    """Write the table as CSV and/or Parquet (atomically); returns the paths written."""
    written = []
    if csv is not None:
        write_atomic(csv, frame.to_csv(index=False))
        written.append(Path(csv))
    if parquet is not None:
        write_atomic(parquet, frame.to_parquet(index=False))
        written.append(Path(parquet))
    return written


def _rate(value) -> str:
    return format_rate(None if value is None or value != value else float(value))  # NaN: a null rate


def print_results(frame, console: Console | None = None) -> None:
    """The table's headline columns on the terminal: the verdict and the evidence it rests on (the
    strongest attack, its recovery, its control, the calibrated difference with its 95% interval, n);
    every column is in the files."""
    console = console or Console(width=120)
    table = Table(title=f"{len(frame)} cells · {len(frame.columns)} columns")
    for name in ("model", "benchmark", "label", "strongest attack", "recovery", "control", "calibrated (95% CI)", "n",
                 *SHOWN):
        table.add_column(name.replace("_", " "), justify="left" if name in ("model", "benchmark", "label") else "right")

    def cell(row, column: str):
        value = row.get(f"strongest_attack.{column}")
        return None if value is None or value != value else value  # NaN: a cell without one

    for _, row in frame.iterrows():
        ci = [cell(row, "ci95.lo"), cell(row, "ci95.hi")]  # lists of two are flattened to .lo/.hi
        lo_hi = format_interval(ci) if None not in ci else ""
        calibrated = cell(row, "calibrated")
        table.add_row(str(row.get("model")), str(row.get("benchmark")), str(row.get("label")),
                      str(cell(row, "attack") or "–"), _rate(cell(row, "rate")), _rate(cell(row, "control")),
                      f"{format_signed(calibrated)} {lo_hi}".strip(), str(cell(row, "n") or "–"),
                      _rate(row.get("forget_efficacy")), _rate(row.get("destructive_rate")), str(row.get("quadrant")))
    console.print(table)
    reasons = missing_reasons(frame)
    if reasons:
        console.print("benchmark metrics left empty, and why:", highlight=False)
    for metric, why, n in reasons:  # not markup: a reason may hold [brackets]
        console.print(f"  {metric} ({n} cell{'' if n == 1 else 's'}): {why}", markup=False, highlight=False,
                      soft_wrap=True)


def missing_reasons(frame) -> list[tuple[str, str, int]]:
    """(metric path, why it is null, in how many cells) for every null benchmark metric of the table,
    each reason once, from its ``standard.missing.*`` columns."""
    out = []
    for column in (c for c in frame.columns if c.startswith(MISSING_PREFIX)):
        reasons = frame[column].dropna()
        for why, n in reasons.value_counts(sort=False).items():
            out.append((column.removeprefix(MISSING_PREFIX), str(why), int(n)))
    return out
