"""The HTML report: one self-contained page (inline CSS, no scripts, no remote resources) per run.

`render_report` reads only ``metrics.json`` and ``records.jsonl`` from the run directory, so a run
copied to another machine can be re-rendered without the model or the data.

Both documents a run directory can hold are rendered: a single run (one model on one benchmark) and a
study grid (models × benchmarks × methods × seeds, see `console.metric_groups`). The page has one part
per (model, benchmark) group; a grid's page opens with an overview of every cell. Each group's dilemma
plot is written beside the page and embedded in it as a data URI: ``dilemma.png`` for a single run (as
always), ``dilemma-<group id>.png`` per group for a grid, even a grid of one group, so that the files
of a grid run are named the same way however many groups it has.

The item lists can be filtered by method and by outcome with radio buttons and CSS ``:has()`` rules
alone (see the template's filter bar), so the page still needs no script.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from ..errors import UnpactError
from ..io import read_json, read_jsonl, write_atomic
from ..recovery import AttackKey
from .console import (
    MISSING,
    across_seeds_rows,
    attack_label,
    base_accuracy_line,
    format_interval,
    format_number,
    format_rate,
    group_title,
    is_grid,
    metric_groups,
    summary_rows,
)
from .heatmap import HEATMAP_CSS, colour, shared_scale, token_heatmap_html
from .plots import dilemma_plot

TEMPLATE = "report.html.j2"
PLOT = "dilemma.png"
# Model answers longer than this are cut in tables (the full text is in the tooltip): a degenerate
# unlearned model can emit one unbroken 150-character "word" that would push the table off screen.
ANSWER_CHARS = 60

# Forget items are listed in this order: the ones unlearning forgot (and attacks maybe brought back)
# are what the attribution is about; items the model still answers or never knew come last.
OUTCOME_ORDER = ("recovered", "forgotten", "kept", "not_known")
# Only these start expanded, which keeps a 40-item method section short enough to scroll through.
OPEN_OUTCOMES = frozenset({"recovered", "forgotten"})
# The outcome filter's choices, in the filter bar's order. "destroyed" is no forget outcome: it picks
# the retain/utility answers a method destroyed, which the page lists apart from the forget items.
FILTER_OUTCOMES = ("forgotten", "recovered", "destroyed", "kept", "not_known")

# The benchmark metrics a model's line shows: (label, path in its metrics.json "standard", decimals,
# name in the list of reasons). MUSE's own follow only where the benchmark has them.
STANDARD_SHOWN = (
    ("TOFU forget quality", "tofu.forget_quality", 3, "forget quality"),
    ("forget truth ratio", "tofu.forget.truth_ratio", 3, "forget truth ratio"),
    ("model utility", "tofu.model_utility", 3, "model utility"),
    ("MUSE PrivLeak", "muse.privleak_min_k", 1, "PrivLeak"),
)
MUSE_SHOWN = (
    ("MUSE VerbMem", "muse.verbmem_forget", 3, "VerbMem"),
    ("KnowMem forget", "muse.knowmem_forget", 3, "KnowMem forget"),
    ("KnowMem retain", "muse.knowmem_retain", 3, "KnowMem retain"),
    ("utility preserved", "muse.utility_preserved", 3, "utility preserved"),
)

TRACKING_LABELS = {
    "jaccard": "KeyToken Jaccard",
    "focus_retention": "focus retention",
    "spearman": "Spearman ρ",
    "mass_before": "|C| mass before",
    "mass_after": "|C| mass after",
}


def render_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report.html`` from the run's metrics.json and records.jsonl; return its path.

    The dilemma plots are written beside the page (see the module docstring for their names). Every
    file is written atomically, so a reader never sees half a report. Raises UnpactError when either
    input file is missing or malformed.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = _load(metrics_path, read_json)
    if not isinstance(metrics, dict):
        raise UnpactError(f"{metrics_path}: expected a JSON object; re-run `unpact demo`")
    records_path = run_dir / "records.jsonl"
    records = _load(records_path, read_jsonl)
    groups = _checked_groups(metrics, metrics_path)
    views = [
        _group_view(run_dir, index, group, records, records_path, grid=is_grid(metrics))
        for index, group in enumerate(groups, 1)
    ]
    page = _environment().get_template(TEMPLATE).render(_page_context(run_dir, metrics, groups, views))
    out = run_dir / "report.html"
    write_atomic(out, page)
    return out


def _load(path: Path, reader: Callable[[Path], Any]) -> Any:
    if not path.is_file():
        raise UnpactError(f"{path} not found; run `unpact demo` first to create a run directory")
    try:
        return reader(path)
    except json.JSONDecodeError as e:
        raise UnpactError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None
    except ValueError as e:  # read_jsonl's messages already name the file and line
        raise UnpactError(str(e)) from None


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        # A typo in the template should fail loudly, not render an empty cell.
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = format_rate
    env.filters["num"] = format_number
    env.filters["mark"] = _mark
    env.filters["show"] = _show
    env.filters["clip"] = _clip
    env.filters["css_string"] = _css_string
    env.filters["breakable"] = _breakable
    return env


def _clip(text: Any, limit: int = ANSWER_CHARS) -> Markup:
    """``text`` cut to ``limit`` characters with an ellipsis; the full text is in the tooltip."""
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return Markup(escape(text))
    return Markup('<span class="clipped" title="{}">{}…</span>').format(text, text[:limit])


def _breakable(text: Any) -> Markup:
    """``text`` escaped, with a line-break opportunity (``<wbr>``) after each ``:`` and ``+``: summary
    headers (``FocusOnKey_self:instruction``) and quadrants (``insufficient+destructive``) are single
    long words that would otherwise set their column's width and push the table past the page."""
    return Markup(str(escape("" if text is None else str(text))).replace(":", ":<wbr>").replace("+", "+<wbr>"))


def _css_string(text: Any) -> Markup:
    """``text`` for a double-quoted CSS string: every character but letters, digits, space, ``_`` and
    ``-`` as a hex escape, so a method label can neither end the string nor the ``<style>`` element."""
    escaped = "".join(c if c.isalnum() or c in " _-" else f"\\{ord(c):x} " for c in str(text))
    return Markup(escaped)


def _show(value: Any) -> Any:
    return MISSING if value is None else value


def _mark(correct: bool | None) -> str:
    return MISSING if correct is None else ("✓" if correct else "✗")


def _checked_groups(metrics: dict, path: Path) -> list[dict]:
    """The document's groups; a grid's group ids name files, so they must be safe and unique."""
    groups = metric_groups(metrics)
    if not is_grid(metrics):
        return groups
    ids = [group.get("id") if isinstance(group, dict) else None for group in groups]
    bad = [repr(i) for i in ids if not _safe_file_part(i)]
    if bad:
        raise UnpactError(
            f"{path}: group ids must be names of letters, digits, '_', '.', '-'; got {', '.join(bad)}"
        )
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise UnpactError(f"{path}: group id {', '.join(repeated)} used twice")
    return groups


def _safe_file_part(name: Any) -> bool:
    """Whether ``name`` can go into a file name in the run directory: the characters the study config
    allows in model and benchmark names, and not "." or "..", which would leave the directory."""
    return isinstance(name, str) and name.strip(".") != "" and all(c.isalnum() or c in "-_." for c in name)


def _page_context(run_dir: Path, metrics: dict, groups: list[dict], views: list[dict]) -> dict:
    """What the page shows once, above the groups: the thresholds and KeyToken settings in the reading
    guide are the study's settings, shared by its groups, so the first group's stand for all."""
    first = groups[0] if groups else {}
    thresholds = first.get("thresholds") or {}
    return {
        # the study's own name where the run says it (a run folder may be called anything)
        "title": f"unPact report — {metrics.get('study') or run_dir.resolve().name}",
        "grid": is_grid(metrics),
        "study": metrics.get("study"),
        "groups": views,
        "overview": _overview(metrics, groups, views) if is_grid(metrics) else [],
        "method_labels": list(dict.fromkeys(m["name"] for view in views for m in view["methods"])),
        "filter_outcomes": FILTER_OUTCOMES,
        "thresholds": thresholds,
        "recovery_threshold": thresholds.get("recovery"),
        "destructive_threshold": thresholds.get("destructive"),
        "keytokens": first.get("keytokens") or {},
        "tuning": first.get("tuning"),
        "heatmap_css": Markup(HEATMAP_CSS),
        "positive_colour": colour(1.0, 1.0),
        "negative_colour": colour(-1.0, 1.0),
    }


def _group_view(
    run_dir: Path, index: int, group: dict, records: list[dict], records_path: Path, grid: bool
) -> dict:
    """One (model, benchmark) group's part of the page, its dilemma plot written beside the page.

    A grid's anchors start with the group's position, so they stay unique however the groups or
    methods are named; a single run keeps the anchors and plot file name it always had.
    """
    prefix = f"g{index}-" if grid else ""
    rows = [r for r in records if r.get("group") == group["id"]] if grid else records
    title = group_title(group) if grid else None
    plot = run_dir / (f"dilemma-{group['id']}.png" if grid else PLOT)
    return {
        **_group_context(group, rows, records_path, prefix),
        "anchor": f"g{index}" if grid else None,
        "id": group.get("id"),
        "title": title,
        **_dilemma_view(plot, group, title),
    }


def _dilemma_view(path: Path, group: dict, title: str | None) -> dict:
    png = dilemma_plot(group, f"Unlearning dilemma — {title}" if title else "Unlearning dilemma")
    write_atomic(path, png)
    return {
        "plot_file": path.name,
        "dilemma_png": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        # Width and height from the PNG's IHDR chunk, so the browser reserves the space before decoding.
        "dilemma_size": (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")),
    }


def _group_context(group: dict, records: list[dict], records_path: Path, prefix: str) -> dict:
    """What every run shows, grid group or not; ``prefix`` keeps one grid group's anchors apart from
    another's."""
    header, rows = summary_rows(group)
    seeds_header, seeds_rows = across_seeds_rows(group)
    method_metrics = group.get("methods") or {}
    thresholds = group.get("thresholds") or {}
    by_method = _group_by_method(records, method_metrics)
    methods = [
        _method_view(
            f"{prefix}method-{i}", name, method_metrics.get(name) or {}, rows_, records_path, thresholds
        )
        for i, (name, rows_) in enumerate(by_method.items(), 1)
    ]
    return {
        "summary_anchor": f"{prefix}summary",
        "dilemma_anchor": f"{prefix}dilemma",
        "model": group.get("model") or {},
        "base_accuracy": base_accuracy_line(group),
        "quality": group.get("attribution_quality") or {},
        "mia": (group.get("base") or {}).get("mia_auc") or {},
        **_standard_context(group),
        "gold": group.get("gold") or {},
        "recovery_threshold": thresholds.get("recovery"),
        "destructive_threshold": thresholds.get("destructive"),
        "summary_header": header,
        "summary_rows": rows,
        "across_seeds_header": seeds_header,
        "across_seeds_rows": seeds_rows,
        "summary_alerts": [
            _summary_alerts(header, method_metrics.get(row[0]) or {}, thresholds) for row in rows
        ],
        "methods": methods,
        "anchors": {m["name"]: m["anchor"] for m in methods},
    }


def _overview(metrics: dict, groups: list[dict], views: list[dict]) -> list[dict]:
    """One row per grid cell, finished or not, so a running study's page shows what is still to come."""
    by_id = {group["id"]: (group, view) for group, view in zip(groups, views, strict=True)}
    rows = []
    for cell_id, cell in (metrics.get("cells") or {}).items():
        group, view = by_id.get(cell.get("group"), ({}, {"anchors": {}}))
        label = cell.get("label") or cell.get("method") or cell_id
        method = (group.get("methods") or {}).get(label)
        rows.append(
            {
                "cell": cell_id,
                "model": group.get("model_name") or cell.get("model"),
                "benchmark": group.get("benchmark") or cell.get("benchmark"),
                "label": label,
                "seed": cell.get("seed"),
                "anchor": view["anchors"].get(label),
                **_headline(method, group.get("thresholds") or {}),
            }
        )
    return rows


def _headline(method: dict | None, thresholds: dict) -> dict:
    """A cell's headline numbers; a cell whose method has not finished yet has none and is pending."""
    metrics = method or {}
    best = metrics.get("strongest_attack") or {}
    return {
        "quadrant": "pending" if method is None else metrics.get("quadrant") or MISSING,
        "forget_efficacy": metrics.get("forget_efficacy"),
        "attack": attack_label(best["attack"]) if best else None,
        "rate": best.get("rate"),
        "control": best.get("control"),
        "calibrated": best.get("calibrated"),
        "ci95": format_interval(best.get("ci95")),
        "calibrated_alert": _over(best.get("calibrated"), thresholds.get("recovery")),
        "destructive_rate": metrics.get("destructive_rate"),
        "destructive_alert": _over(metrics.get("destructive_rate"), thresholds.get("destructive")),
    }


def _over(value: float | None, threshold: float | None) -> bool:
    """Whether a rate reaches its quadrant threshold (never for a null rate or threshold)."""
    return value is not None and threshold is not None and value >= threshold


def _summary_alerts(header: list[str], method: dict, thresholds: dict) -> list[bool]:
    """Per summary cell: does it put the method over a quadrant threshold (so the page flags it)? The
    calibrated recovery of the strongest attack and the destructive rate can."""
    best = method.get("strongest_attack") or {}
    by_column = {"Calibrated (95% CI)": _over(best.get("calibrated"), thresholds.get("recovery")),
                 "Destructive": _over(method.get("destructive_rate"), thresholds.get("destructive"))}
    return [by_column.get(name, False) for name in header]


def _recovery_view(metrics: dict, thresholds: dict) -> list[dict]:
    """One row per attack run on the forgotten items: its recovery, its control's rate, the calibrated
    difference with its interval and p-value, and for FocusOnKey its excess over placebo (finding 2)
    and the do-no-harm control; strongest first."""
    specificity = metrics.get("keyword_specificity") or {}
    rewrite = metrics.get("rewrite_control") or {}
    strongest = (metrics.get("strongest_attack") or {}).get("attack")
    rows = []
    for attack, c in (metrics.get("calibrated") or {}).items():
        key = AttackKey.parse(attack)
        spec = specificity.get(attack) or {}
        rows.append({
            "attack": attack, "label": attack_label(attack), "changes_weights": key.changes_weights,
            "rate": c.get("rate"), "n": c.get("n"), "control": c.get("control"),
            "control_kind": c.get("control_kind"), "calibrated": c.get("calibrated"),
            "ci95": format_interval(c.get("ci95")), "p_value": c.get("p_value"), "p_holm": c.get("p_holm"),
            "alert": _over(c.get("calibrated"), thresholds.get("recovery")), "strongest": attack == strongest,
            "excess": spec.get("excess"), "excess_ci95": format_interval(spec.get("ci95")),
            "rewrite_control": rewrite.get(key.variant) if key.attack == "focus_on_key" else None,
        })
    return sorted(rows, key=lambda r: not r["strongest"])


def _where_still_view(where: dict | None) -> list[dict]:
    """The "where it is still" row as table rows, one per channel (`method_metrics.where_still`)."""
    rows = []
    for channel, c in (where or {}).items():
        # every key in every row: the template is rendered with StrictUndefined
        row = {"channel": channel, "attack": None, "missing": "not run", "rate": None, "control": None,
               "calibrated": None, "ci95": "", "still": False}
        if c is not None and channel == "output":
            row.update(missing="asked plainly", rate=c.get("rate"), still=bool(c.get("still")))
        elif c is not None:
            ci = c.get("ci95")
            row.update(attack=attack_label(c["attack"]), rate=c.get("rate"), control=c.get("control"),
                       calibrated=c.get("calibrated"), ci95=format_interval(ci) if ci else "", still=bool(c.get("still")))
        rows.append(row)
    return rows


def _group_by_method(records: list[dict], method_metrics: dict) -> dict[str, list[dict]]:
    """Records per method: methods in metrics.json order first, then any only seen in the records."""
    groups: dict[str, list[dict]] = {name: [] for name in method_metrics}
    for row in records:
        groups.setdefault(str(row.get("method", MISSING)), []).append(row)
    return groups


def _method_view(
    anchor: str, name: str, metrics: dict, rows: list[dict], records_path: Path, thresholds: dict
) -> dict:
    forget = sorted(
        (r for r in rows if r.get("split") == "forget"),
        key=lambda r: _outcome_rank(r.get("outcome")),
    )
    others = [r for r in rows if r.get("split") != "forget"]
    control = metrics.get("rewrite_control") or {}
    standard = _standard_view(metrics.get("standard"))
    return {
        "anchor": anchor,
        "name": name,
        # A grid cell's identity; absent (None) in a single run, where the name says it all.
        "cell": metrics.get("cell"),
        "method": metrics.get("method"),
        "seed": metrics.get("seed"),
        "quadrant": metrics.get("quadrant") or MISSING,
        "forget_efficacy": metrics.get("forget_efficacy"),
        "n_known": metrics.get("n_known"),
        "n_forgotten": metrics.get("n_forgotten"),
        "destructive_rate": metrics.get("destructive_rate"),
        "destructive_alert": _over(metrics.get("destructive_rate"), thresholds.get("destructive")),
        "destructive_by_split": metrics.get("destructive_rate_by_split") or {},
        "kept_items": metrics.get("kept_items"),
        "accuracy": metrics.get("accuracy") or {},
        "recovery": _recovery_view(metrics, thresholds),
        "where_still": _where_still_view(metrics.get("where_still")),
        "layer_profile": metrics.get("layer_profile"),
        "strongest": metrics.get("strongest_attack") or {},
        "rewrite_control": control,
        "tracking": _tracking_pairs(metrics.get("tracking")),
        "penalisation": metrics.get("penalisation") or {},
        "train": metrics.get("train") or {},
        "mia": metrics.get("mia_auc") or {},
        "standard": standard,
        "standard_notes": _missing_notes(standard),
        "outcomes": Counter(r.get("outcome") or MISSING for r in forget),
        "forget_items": [
            _item_view(r, f"{records_path}: {name} item {r.get('item_id', '?')}") for r in forget
        ],
        "destroyed": [_plain_item_view(r) for r in others if r.get("outcome") == "destroyed"],
    }


def _standard_context(group: dict) -> dict:
    """The benchmark metrics of a group's original and gold models, and why any of them is null."""
    original = _standard_view((group.get("base") or {}).get("standard"))
    gold = _standard_view((group.get("gold") or {}).get("standard"))
    return {"standard": original, "gold_standard": gold, "standard_notes": _missing_notes(original, gold)}


def _standard_view(standard: dict | None) -> list[dict]:
    """One model's benchmark metrics as its line shows them (label, value, decimals), each null one with
    why it is null where metrics.json says (``standard.missing``; a run before that has no reasons)."""
    if not standard:
        return []
    missing = standard.get("missing") or {}
    muse = standard.get("muse") or {}
    shown = STANDARD_SHOWN + (MUSE_SHOWN if "knowmem_forget" in muse or "verbmem_forget" in muse else ())
    parts = []
    for label, path, digits, name in shown:
        value = _lookup(standard, path)
        parts.append({"label": label, "value": value, "digits": digits, "name": name,
                      "why": missing.get(path) if value is None else None})
    return parts


def _lookup(values: dict, path: str):
    for step in path.split("."):
        values = values.get(step) if isinstance(values, dict) else None
    return values


def _missing_notes(*views: list[dict]) -> list[tuple[str, str]]:
    """(metric, why) for every null metric of these lines, each once: shown under them so that no one
    has to hover every dash to learn why it is one."""
    return list(dict.fromkeys((p["name"], p["why"]) for view in views for p in view if p["why"]))


def _outcome_rank(outcome: str | None) -> int:
    return OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)


def _tracking_pairs(tracking: dict | None) -> list[tuple[str, float | None]]:
    tracking = tracking or {}
    return [(label, tracking.get(field)) for field, label in TRACKING_LABELS.items() if field in tracking]


def _plain_item_view(row: dict) -> dict:
    """The fields every record has, retain/utility rows included."""
    return {
        "id": row.get("item_id", MISSING),
        "split": row.get("split", MISSING),
        "question": row.get("question", ""),
        "gold": row.get("gold", ""),
        "answer_before": row.get("answer_before", ""),
        "answer_after": row.get("answer_after", ""),
        "correct_before": row.get("correct_before"),
        "correct_after": row.get("correct_after"),
        "outcome": row.get("outcome") or MISSING,
    }


def _item_view(row: dict, where: str) -> dict:
    """A forget item with its before/after heatmaps drawn on one shared scale."""
    missing = [f for f in ("tokens", "contrib_before", "contrib_after") if row.get(f) is None]
    if missing:
        raise UnpactError(f"{where}: missing {', '.join(missing)}; re-run the study to regenerate records")
    tokens = row["tokens"]
    key_before, key_after = row.get("key_before") or [], row.get("key_after") or []
    scale = shared_scale(row["contrib_before"], row["contrib_after"])
    try:
        before = token_heatmap_html(tokens, row["contrib_before"], key_before, scale)
        after = token_heatmap_html(tokens, row["contrib_after"], key_after, scale)
    except ValueError as e:
        raise UnpactError(f"{where}: {e}") from None
    return {
        **_plain_item_view(row),
        "open": row.get("outcome") in OPEN_OUTCOMES,
        "keywords": row.get("keywords") or [],
        "lp_before": row.get("lp_before"),
        "lp_after": row.get("lp_after"),
        "scale": scale,
        "heatmap_before": Markup(before),
        "heatmap_after": Markup(after),
        "keytokens_before": [tokens[i].strip() for i in key_before],
        "keytokens_after": [tokens[i].strip() for i in key_after],
        "tracking": _tracking_pairs(row.get("tracking")),
        "attacks": [
            {
                "name": name,
                # Placebo attacks emphasise non-key words; they are the control, not a recovery.
                "placebo": AttackKey.parse(name).is_placebo,
                "prompt": attack.get("prompt", ""),
                "answer": attack.get("answer", ""),
                "correct": attack.get("correct"),
            }
            for name, attack in (row.get("attacks") or {}).items()
        ],
    }
