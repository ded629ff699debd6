"""Every attack against every method of a run, in one table per (model, benchmark) group.

The summary shows each method's strongest attack only; a reviewer also wants the rest of the evidence
side by side: for each attack (rows) and method (columns), the calibrated recovery (recovery − control)
with its 95% interval, marked where it counts as "still there" by the rule of the "where it is still"
row (`evaluation.calibration.still_there`: interval above 0 and Holm-adjusted p below 0.05)
and where it reaches the study's recovery threshold (the verdict's rule, `calibration.insufficient`).
The last column is what the attack costs: its wall seconds per cell, read from ``timings.json``
(every run of one attack shares one timed stage, so the cost sits on the attack's first row). A
never-known control is attacked inside the cell, so its cost is included; a gold model is attacked
once per group, in the group's own stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from ..evaluation.calibration import still_there
from ..recovery import AttackKey
from .console import attack_label, format_interval, format_signed, group_title, is_grid, metric_groups


@dataclass
class MatrixRow:
    """One attack run (``attack``: its result name) across the group's methods: per method label, its
    calibrated entry from metrics.json (None where the method has no such run), and the attack's mean
    wall seconds per cell (None where the run kept no timings, or on the attack's later rows)."""

    attack: str
    cells: dict[str, dict | None]
    seconds: float | None


def reaches(entry: dict | None, threshold: float | None) -> bool:
    """Whether the calibrated recovery is at or above the threshold (what makes a method insufficient)."""
    value = (entry or {}).get("calibrated")
    return value is not None and threshold is not None and value >= threshold


def attack_seconds(group: dict, timings: dict | None) -> dict[str, float]:
    """Per attack (its registry name, e.g. ``quantize``), the mean wall seconds of its stage over the
    group's cells that kept a profile in ``timings.json`` (its ``stages``: ``attack NAME`` per cell)."""
    stages = (timings or {}).get("stages") or {}
    spent: dict[str, list[float]] = {}
    for method in (group.get("methods") or {}).values():
        for name, st in (stages.get(method.get("cell")) or {}).items():
            if name.startswith("attack ") and st.get("wall_s") is not None:
                spent.setdefault(name.removeprefix("attack "), []).append(float(st["wall_s"]))
    return {attack: sum(v) / len(v) for attack, v in spent.items()}


def matrix_rows(group: dict, timings: dict | None = None) -> list[MatrixRow]:
    """The group's attack runs in the order the methods report them, each with every method's entry."""
    methods = group.get("methods") or {}
    names: list[str] = []
    for m in methods.values():
        names += [a for a in (m.get("calibrated") or {}) if a not in names]
    cost, priced, rows = attack_seconds(group, timings), set(), []
    for name in names:
        family = AttackKey.parse(name).attack
        rows.append(MatrixRow(name, {label: (m.get("calibrated") or {}).get(name) for label, m in methods.items()},
                              None if family in priced else cost.get(family)))
        priced.add(family)
    return rows


def _cell(entry: dict | None, threshold: float | None) -> str:
    if not entry or entry.get("calibrated") is None:
        return "–"
    marks = ("*" if still_there(entry.get("ci95"), entry.get("p_holm")) else "") + ("!" if reaches(entry, threshold) else "")
    return f"{format_signed(entry['calibrated'])}{marks} {format_interval(entry.get('ci95'))}".strip()


def matrix_tables(metrics: dict, timings: dict | None = None) -> list[Table]:
    """One rich table per group: attacks × methods, calibrated recovery with its interval, and s / cell."""
    tables = []
    for group in metric_groups(metrics):
        threshold = (group.get("thresholds") or {}).get("recovery")
        labels = list(group.get("methods") or {})
        table = Table(title=f"Every attack · {group_title(group)}" if is_grid(metrics) else "Every attack",
                      caption="calibrated recovery = recovery − control, 95% interval; * still there (interval above 0 "
                              "and p < 0.05 after Holm's correction over the method's attacks); ! at or above the "
                              f"{threshold:.0%} recovery threshold; s / cell: the attack's wall seconds per cell (with the "
                              "never-known control's runs; a gold model is attacked once, in the group's stage); "
                              "raw recovery, control and counts are in the results files"
                      if threshold is not None else None, caption_justify="left")
        table.add_column("attack")
        for label in labels:
            table.add_column(label, justify="right")
        table.add_column("s / cell", justify="right")
        for row in matrix_rows(group, timings):
            table.add_row(attack_label(row.attack), *(_cell(row.cells[label], threshold) for label in labels),
                          "" if row.seconds is None else f"{row.seconds:.1f}")
        tables.append(table)
    return tables


def print_attack_matrix(metrics: dict, timings: dict | None = None, console: Console | None = None) -> None:
    """Print `matrix_tables` (120 columns wide unless a console is given)."""
    console = console or Console(width=120)
    for table in matrix_tables(metrics, timings):
        console.print(table)
