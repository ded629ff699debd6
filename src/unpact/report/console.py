"""Console output: the per-method summary table and a coloured token heatmap for `unpact attribute`.

`summary_rows` is the single definition of the summary's columns; the HTML report renders the same
rows, so the page and the terminal never disagree about what a run measured.

A metrics document is either a single run (one model on one benchmark: ``methods`` at the top level)
or a study grid (``groups``, one single-run-shaped dict per (model, benchmark) pair). `metric_groups`
turns both into a list of single-run dicts, so every per-run helper here serves grids unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from .heatmap import colour, shared_scale, split_leading_space, text_colour, validate_heatmap

MISSING = "–"  # shown wherever metrics.json has null (e.g. a rate over zero forgotten items)

QUADRANT_STYLES = {
    "reliable": "green",
    "insufficient": "yellow",
    "destructive": "red",
    "insufficient+destructive": "bold red",
}


def format_rate(value: float | None) -> str:
    """A fraction as a percentage with one decimal (``0.853`` -> ``85.3%``); `MISSING` for null."""
    return MISSING if value is None else f"{100 * value:.1f}%"


def format_number(value: float | None, digits: int = 2) -> str:
    """A plain number with ``digits`` decimals; `MISSING` for null."""
    return MISSING if value is None else f"{value:.{digits}f}"


def is_grid(metrics: dict) -> bool:
    """Whether ``metrics`` is a study grid document (``groups``) rather than a single run."""
    return isinstance(metrics.get("groups"), list)


def metric_groups(metrics: dict) -> list[dict]:
    """The (model, benchmark) groups of a document; a single run is its own only group."""
    return list(metrics["groups"]) if is_grid(metrics) else [metrics]


def group_title(group: dict) -> str:
    """``MODEL × BENCHMARK``, the name under which a grid group is shown everywhere."""
    return f"{group.get('model_name') or MISSING} × {group.get('benchmark') or MISSING}"


def recovery_attacks(metrics: dict) -> list[str]:
    """The FocusOnKey attacks the summary shows — oracle and self keywords (the heuristic source and the
    other attacks are in metrics.json and the report's method sections) — in first-seen order.

    Over all groups of a grid, so a combined table has one column set for every row."""
    seen: dict[str, None] = {}
    for group in metric_groups(metrics):
        for method in (group.get("methods") or {}).values():
            seen.update(dict.fromkeys(a for a in method.get("recovery_rate") or {}
                                      if a.startswith(("focus_on_key:", "focus_on_key_self:"))))
    return list(seen)


def best_recovery_attack(method: dict) -> str | None:
    """The attack with the largest recovery excess over placebo: the one the quadrant is judged on."""
    excess = {a: v for a, v in (method.get("recovery_excess") or {}).items() if v is not None}
    return max(excess, key=excess.get) if excess else None


def attack_label(attack: str) -> str:
    """An attack name as shown to people (``focus_on_key:x`` → ``FocusOnKey:x``)."""
    return attack.replace("focus_on_key", "FocusOnKey")


def best_baseline(method: dict) -> str:
    """The strongest non-FocusOnKey attack of a method, as ``name rate`` (`MISSING` if none ran)."""
    rates = {a: r for a, r in (method.get("recovery_rate") or {}).items()
             if not a.startswith(("focus_on_key", "placebo")) and r is not None}
    if not rates:
        return MISSING
    name = max(rates, key=rates.get)
    return f"{name} {format_rate(rates[name])}"


def placebo_of(attack: str) -> str:
    """The placebo control's name for an attack (``focus_on_key:instruction`` → ``placebo:instruction``)."""
    return "placebo:" + attack.split(":", 1)[-1]


def summary_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The summary as (header, rows) of display strings, one row per method.

    Each recovery cell reads ``rate (placebo rate)``: only the difference is evidence. The last column is
    always the quadrant and the one before the numbers is the method, so renderers can style those
    cells. A grid of several groups gets one combined table, its rows led by Model and Benchmark
    columns, so methods can be compared across models and benchmarks in one place.
    """
    attacks = recovery_attacks(metrics)
    header = [
        "Method",
        "Forget efficacy",
        *(f"Recovery {attack_label(attack)} (placebo)" for attack in attacks),
        "Best other attack",
        "Destructive",
        "Retain acc",
        "Utility acc",
        "KeyToken Jaccard",
        "Focus retention",
        "Quadrant",
    ]
    groups = metric_groups(metrics)
    if len(groups) == 1:  # one model and benchmark (the demo): the caption names them
        return header, _method_rows(groups[0], attacks)
    rows = [
        [group.get("model_name") or MISSING, group.get("benchmark") or MISSING, *row]
        for group in metric_groups(metrics)
        for row in _method_rows(group, attacks)
    ]
    return ["Model", "Benchmark", *header], rows


def _method_rows(metrics: dict, attacks: list[str]) -> list[list[str]]:
    rows = []
    for name, method in (metrics.get("methods") or {}).items():
        recovery = method.get("recovery_rate") or {}
        accuracy = method.get("accuracy") or {}
        tracking = method.get("tracking") or {}
        rows.append(
            [
                name,
                format_rate(method.get("forget_efficacy")),
                *(
                    f"{format_rate(recovery.get(a))} ({format_rate(recovery.get(placebo_of(a)))})"
                    for a in attacks
                ),
                best_baseline(method),
                format_rate(method.get("destructive_rate")),
                format_rate(accuracy.get("retain")),
                format_rate(accuracy.get("utility")),
                format_number(tracking.get("jaccard")),
                format_number(tracking.get("focus_retention")),
                method.get("quadrant") or MISSING,
            ]
        )
    return rows


def base_accuracy_line(metrics: dict) -> str:
    """One line with the original model's accuracy per split, e.g. ``forget 100.0% · retain 99.0%``."""
    accuracy = (metrics.get("base") or {}).get("accuracy") or {}
    return " · ".join(f"{split} {format_rate(value)}" for split, value in accuracy.items()) or MISSING


def summary_table(metrics: dict) -> Table:
    """The summary as a rich Table: one row per method, rates as percentages, quadrant coloured.

    A grid's groups follow each other in one table, separated by a rule.
    """
    header, rows = summary_rows(metrics)
    lead = header.index("Method") + 1  # the name columns: Method, after Model and Benchmark in a grid
    table = Table(title=_title(metrics), caption=f"base model accuracy: {_base_accuracy_caption(metrics)}")
    # Names, quadrants and values must stay whole; on a narrow terminal only the headers give way.
    for name in header[:lead]:
        table.add_column(name, style="bold" if name == "Method" else "", no_wrap=True)
    for name in header[lead:-1]:
        table.add_column(
            name,
            justify="right",
            min_width=len("100.0% (100.0%)") if name.startswith("Recovery")
            else len("quantize_int8 100.0%") if name == "Best other attack" else len("100.0%"),
            overflow="fold",
        )
    table.add_column(header[-1], no_wrap=True)
    for row, following in zip(rows, [*rows[1:], None], strict=False):  # no rows: no pairs
        quadrant = row[-1]
        table.add_row(
            *row[:-1],
            Text(quadrant, style=QUADRANT_STYLES.get(quadrant, "")),
            end_section=following is not None and following[: lead - 1] != row[: lead - 1],
        )
    return table


def _title(metrics: dict) -> str:
    return f"unPact summary — study {metrics['study']}" if metrics.get("study") else "unPact summary"


def _base_accuracy_caption(metrics: dict) -> str:
    """The original model's accuracy; per group in a grid, where each group has its own model."""
    if not is_grid(metrics):
        return base_accuracy_line(metrics)
    lines = [f"{group_title(g)}: {base_accuracy_line(g)}" for g in metric_groups(metrics)]
    return "; ".join(lines) or MISSING


def print_summary(metrics: dict, console: Console | None = None) -> None:
    """Print `summary_table` to ``console`` (a new stdout Console when None).

    Piped output gets 200 columns instead of rich's default 80, so the table is not folded in logs.
    """
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
    console.print(summary_table(metrics))


def token_heatmap_text(
    tokens: Sequence[str],
    contributions: Sequence[float | None],
    key: Iterable[int] = (),
    scale: float | None = None,
) -> Text:
    """A prompt as coloured console text: token backgrounds by sign and size of their contribution.

    Uses the same colours and scale rule as `token_heatmap_html`; KeyTokens are bold and underlined.
    The plain text is exactly the concatenated tokens.
    """
    keys = validate_heatmap(tokens, contributions, key)
    if scale is None:
        scale = shared_scale(contributions)
    text = Text()
    for i, (token, value) in enumerate(zip(tokens, contributions, strict=True)):
        lead, body = split_leading_space(token)
        is_key = i in keys
        style = Style(
            color=text_colour(value, scale), bgcolor=colour(value, scale), bold=is_key, underline=is_key
        )
        text.append(lead)
        text.append(body, style=style)
    return text
