"""Console output: the per-method summary table and a coloured token heatmap for `unpact attribute`.

`summary_rows` is the single definition of the summary's columns; the HTML report renders the same
rows, so the page and the terminal never disagree about what a run measured.

A metrics document is either a single run (one model on one benchmark: ``methods`` at the top level)
or a study grid (``groups``, one single-run-shaped dict per (model, benchmark) pair). `metric_groups`
turns both into a list of single-run dicts, so every per-run helper here serves grids unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from ..recovery.base import CHANNELS
from .heatmap import colour, shared_scale, split_leading_space, text_colour, validate_heatmap

MISSING = "–"  # shown wherever metrics.json has null (e.g. a rate over zero forgotten items)

# The width the summary is laid out for when nothing says how wide the output is (a log, CI, a pipe
# without COLUMNS): readable in a 120-column log viewer or terminal, unlike rich's 80.
UNKNOWN_WIDTH = 120

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


def format_signed(value: float | None) -> str:
    """A difference of rates as a signed percentage (``+52.2%``); `MISSING` for null."""
    return MISSING if value is None else f"{100 * value:+.1f}%"


def format_interval(ci) -> str:
    """A 95% interval of a difference as ``[+31, +70]`` (percentage points); empty when there is none."""
    return "" if not ci else f"[{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}]"


def keyword_specificity_cell(method: dict) -> str:
    """FocusOnKey's largest excess over its placebo (the paper's finding 2) with its interval."""
    rows = {a: r for a, r in (method.get("keyword_specificity") or {}).items() if r.get("excess") is not None}
    if not rows:
        return MISSING
    r = rows[max(rows, key=lambda a: rows[a]["excess"])]
    return f"{format_signed(r['excess'])} {format_interval(r.get('ci95'))}".strip()


def attack_label(attack: str) -> str:
    """An attack name as shown to people (``focus_on_key:x`` → ``FocusOnKey:x``)."""
    return attack.replace("focus_on_key", "FocusOnKey")


# Retain and utility accuracy are in each method's section, `unpact results` and metrics.json; the
# destructive rate summarises them here, so the table fits a laptop window and a 120-column log.
SUMMARY_HEADER = ["Method", "Forget efficacy", "Strongest attack", "Recovery", "Control", "Calibrated (95% CI)",
                  "n", "FocusOnKey − placebo", "Destructive", "KeyToken Jaccard", "Quadrant"]


def summary_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The summary as (header, rows) of display strings, one row per method.

    The verdict's evidence comes first: the strongest attack (the one that decides the quadrant), its
    raw recovery of the forgotten items, its control's rate (the same attack where the knowledge is
    absent), the calibrated difference with its 95% interval, and n, the forgotten items it rests on.
    FocusOnKey − placebo is the paper's keyword-specificity test, not the verdict. The last column is
    always the quadrant and the first the method, so renderers can style those cells. A grid of several
    groups gets one combined table, its rows led by Model and Benchmark columns.
    """
    groups = metric_groups(metrics)
    if len(groups) == 1:  # one model and benchmark (the demo): the caption names them
        return list(SUMMARY_HEADER), _method_rows(groups[0])
    rows = [[group.get("model_name") or MISSING, group.get("benchmark") or MISSING, *row]
            for group in groups for row in _method_rows(group)]
    return ["Model", "Benchmark", *SUMMARY_HEADER], rows


def _method_rows(metrics: dict) -> list[list[str]]:
    rows = []
    for name, method in (metrics.get("methods") or {}).items():
        tracking = method.get("tracking") or {}
        best = method.get("strongest_attack") or {}
        control = MISSING if not best else "none" if best.get("control_kind") == "none" else format_rate(best.get("control"))
        rows.append([
            name,
            format_rate(method.get("forget_efficacy")),
            attack_label(best["attack"]) if best else MISSING,
            format_rate(best.get("rate")),
            control,
            f"{format_signed(best.get('calibrated'))} {format_interval(best.get('ci95'))}".strip() if best else MISSING,
            str(best["n"]) if best else str(method.get("n_forgotten", MISSING)),
            keyword_specificity_cell(method),
            format_rate(method.get("destructive_rate")),
            format_number(tracking.get("jaccard")),
            method.get("quadrant") or MISSING,
        ])
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
    lead = header.index("Method") + 1
    return _table(header, rows, list(range(len(header))), lead, _title(metrics), _caption(metrics))


def summary_tables(metrics: dict, width: int = UNKNOWN_WIDTH) -> list[Table]:
    """The summary laid out for ``width`` columns: `summary_table` when it fits, else its rows in several
    tables of fewer metric columns, each led by the name columns; the first also shows the quadrant,
    right after the names, as the verdict the other columns explain.

    Cells stay whole on one line; headers wrap at spaces, into as few lines as the width allows. A
    column set too wide even alone (a very narrow terminal) gets a table of its own, laid out by rich.
    """
    header, rows = summary_rows(metrics)
    lead = header.index("Method") + 1
    title, caption = _title(metrics), _caption(metrics)
    everything = list(range(len(header)))
    widths = _layout(header, rows, everything, lead, width)
    if widths is not None:
        return [_table(header, rows, everything, lead, title, caption, widths)]
    names, quadrant = list(range(lead)), len(header) - 1
    parts: list[list[int]] = [[*names, quadrant]]
    for column in range(lead, quadrant):
        if len(parts[-1]) > lead and _layout(header, rows, [*parts[-1], column], lead, width) is None:
            parts.append(list(names))
        parts[-1].append(column)
    return [
        _table(header, rows, columns, lead, f"{title} ({i} of {len(parts)})", caption if i == len(parts) else None,
               _layout(header, rows, columns, lead, width))
        for i, columns in enumerate(parts, 1)
    ]


def _layout(header: list[str], rows: list[list[str]], columns: list[int], lead: int, width: int) -> list[int] | None:
    """Widths for ``columns`` of the summary within ``width`` cells, with the fewest header lines; None
    if they cannot fit. Names and quadrants are never wrapped, and no cell is."""
    quadrant = len(header) - 1
    cells = {i: max((cell_len(row[i]) for row in rows), default=0) for i in columns}
    labels = {i: _label(header[i]) for i in columns}
    most_lines = max(len(labels[i].split()) for i in columns)
    for lines in range(1, most_lines + 1):
        widths = [max(cells[i], cell_len(labels[i]) if i < lead or i == quadrant else _wrap_width(labels[i], lines))
                  for i in columns]
        # A rich table's width: a space of padding each side of a column, a rule between and at each edge.
        if sum(widths) + 3 * len(widths) + 1 <= width:
            return widths
    return None


def _wrap_width(label: str, lines: int) -> int:
    """The narrowest width at which ``label`` wraps at spaces into at most ``lines`` lines."""
    words = [cell_len(w) for w in label.split()]
    for width in range(max(words), cell_len(label) + 1):
        used, count = 0, 1
        for word in words:
            if used and used + 1 + word > width:
                used, count = 0, count + 1
            used = word if not used else used + 1 + word
        if count <= lines:
            return width
    return cell_len(label)


def _label(name: str) -> str:
    # rich wraps headers at spaces only; "FocusOnKey:instruction" may break after its colon too.
    return name.replace(":", ": ")


def _table(header: list[str], rows: list[list[str]], columns: list[int], lead: int, title: str | None,
           caption: str | None, widths: list[int] | None = None) -> Table:
    """The ``columns`` (indices into ``header``) of the summary as a rich Table, at ``widths`` when given.
    Columns before ``lead`` are names (Model, Benchmark, Method); the header's last is the quadrant."""
    table = Table(title=title, caption=caption)
    quadrant = len(header) - 1
    for k, i in enumerate(columns):
        name = header[i]
        width = None if widths is None else widths[k]
        if i < lead or i == quadrant:  # names and quadrants stay whole
            table.add_column(name, style="bold" if name == "Method" else "", no_wrap=True, width=width)
        else:
            cells = [row[i] for row in rows]
            table.add_column(_label(name), justify="right", overflow="fold", width=width,
                             min_width=max(map(cell_len, cells), default=1))
    for row, following in zip(rows, [*rows[1:], None], strict=False):  # no rows: no pairs
        table.add_row(
            *(Text(row[i], style=QUADRANT_STYLES.get(row[i], "")) if i == quadrant else row[i] for i in columns),
            end_section=following is not None and following[: lead - 1] != row[: lead - 1],
        )
    return table


def _caption(metrics: dict) -> str:
    return f"base model accuracy: {_base_accuracy_caption(metrics)}"


def _title(metrics: dict) -> str:
    return f"unPact summary — study {metrics['study']}" if metrics.get("study") else "unPact summary"


def _base_accuracy_caption(metrics: dict) -> str:
    """The original model's accuracy; per group in a grid, where each group has its own model."""
    if not is_grid(metrics):
        return base_accuracy_line(metrics)
    lines = [f"{group_title(g)}: {base_accuracy_line(g)}" for g in metric_groups(metrics)]
    return "; ".join(lines) or MISSING


def print_summary(metrics: dict, console: Console | None = None) -> None:
    """Print `summary_tables` to ``console`` (a new stdout Console when None), fitted to its width.

    A terminal's width is its own, and COLUMNS is honoured; output of unknown width (piped, a log, CI)
    is laid out for `UNKNOWN_WIDTH` columns. Every metric, unabridged: `unpact results`.
    """
    if console is None:
        console = Console()
        if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
            console = Console(width=UNKNOWN_WIDTH)
    for table in summary_tables(metrics, console.width):
        console.print(table)
    header, rows = where_still_rows(metrics)
    if rows:
        table = Table(*header, title="Where it is still", caption="output: share of known forget items still answered "
                      "plainly; others: the channel's strongest calibrated recovery (recovery − control), * where its "
                      "95% interval is above 0 and it holds after Holm's correction over the method's attacks; "
                      "— not run", caption_justify="left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    header, rows = across_seeds_rows(metrics)
    if rows:
        table = Table(*header, title="Across seeds", caption="mean (min–max) over the seeds; quadrants: how many seeds "
                      "gave each; a method is reliable across seeds only if it is reliable under every seed", caption_justify="left")
        for row in rows:
            table.add_row(*row[:-1], Text(row[-1], style=QUADRANT_STYLES.get(row[-1], "")))
        console.print(table)


def _spread_cell(spread: dict | None, signed: bool = False) -> str:
    """``mean (min–max)`` in percent, e.g. ``38.5% (31–44)`` or ``+42.1% (+14 to +53)``."""
    if not spread:
        return MISSING
    if signed:
        return f"{format_signed(spread['mean'])} ({100 * spread['min']:+.0f} to {100 * spread['max']:+.0f})"
    return f"{format_rate(spread['mean'])} ({100 * spread['min']:.0f}–{100 * spread['max']:.0f})"


def across_seeds_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Each method run under several seeds, its verdict across them (`unpact.evaluation.seeds`) as
    display strings: (header, rows); no rows when no method has more than one seed. The last column is
    the verdict, so renderers can style it like a quadrant."""
    groups = metric_groups(metrics)
    rows = []
    for group in groups:
        for name, s in (group.get("across_seeds") or {}).items():
            if len(groups) > 1:
                name = f"{group.get('model_name') or MISSING}/{group.get('benchmark') or MISSING}/{name}"
            n = len(s["seeds"])
            counts = ", ".join(f"{q} {k}" for q, k in s["quadrants"].items())
            rows.append([name, str(n), _spread_cell(s.get("forget_efficacy")),
                         _spread_cell(s.get("strongest_calibrated"), signed=True),
                         _spread_cell(s.get("destructive_rate")), counts, s["verdict"]])
    return ["Method", "Seeds", "Forget efficacy", "Strongest calibrated", "Destructive", "Quadrants",
            "Across seeds"], rows


def where_still_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The "where it is still" row of every method (`unpact.evaluation.method_metrics.where_still`) as
    display strings: (header, rows); no rows when no method has one (results from before it)."""
    channels = list(CHANNELS)
    rows = []
    groups = metric_groups(metrics)
    for group in groups:
        for name, method in (group.get("methods") or {}).items():
            if len(groups) > 1:  # a grid: every cell's row says which model and benchmark it is
                name = f"{group.get('model_name') or MISSING}/{group.get('benchmark') or MISSING}/{name}"
            where = method.get("where_still")
            if not where:
                continue
            cells = []
            for channel in channels:
                c = where.get(channel)
                if c is None:
                    cells.append(MISSING)
                elif channel == "output":
                    cells.append(format_rate(c.get("rate")))
                else:
                    mark = "*" if c.get("still") else ""
                    cells.append(f"{format_signed(c.get('calibrated'))}{mark} {attack_label(c['attack'])}")
            rows.append([name, *cells])
    return ["Method", *channels], rows


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
