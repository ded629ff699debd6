"""Report stage: HTML report from a fake run directory, heatmap colours and scale, console output."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter

import matplotlib.image
import pytest
from rich.console import Console

from unpact.errors import UnpactError
from unpact.evaluation.calibration import GOLD, Calibrated, verdict_note
from unpact.report import (
    print_summary,
    render_report,
    summary_table,
    token_heatmap_html,
    token_heatmap_text,
)
from unpact.report.console import summary_rows
from unpact.report.heatmap import NEGATIVE_RGB, POSITIVE_RGB, colour, shared_scale
from unpact.report.plots import dilemma_plot, dilemma_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

METHODS = {"GA_GDR": "reliable", "NPO_GDR": "insufficient+destructive"}
TOKENS = [" Where", " was", " Mar", "the", " <script>", " born", "?"]
# The peak |C| of each item (2.0) sits in the *after* attribution, so the before heatmap must be drawn
# on the after scale: its 1.0 token at half intensity, never at full.
BEFORE = [0.1, -0.02, 1.0, 0.4, 0.9, 0.05, 0.01]
AFTER = [0.0, 0.01, -2.0, 0.1, 0.3, 0.02, -0.01]
OUTCOMES = ["recovered", "forgotten", "kept"]


# the strongest attack first: 1 of 2 forgotten items back against 0 of 3 for the gold model
_CALIBRATED = [Calibrated("focus_on_key:instruction", 1, 2, 0, 3, GOLD),
               Calibrated("sampling", 1, 2, 1, 3, GOLD)]


def _method_metrics(quadrant: str) -> dict:
    return {
        "forget_efficacy": 0.85,
        "n_known": 3,
        "n_forgotten": 2,
        "recovery_rate": {"focus_on_key:instruction": 0.5, "placebo:instruction": None},
        "recovery_excess": {"focus_on_key:instruction": 0.5},
        "calibrated": {c.attack: c.to_dict() for c in _CALIBRATED},
        "strongest_attack": {**_CALIBRATED[0].to_dict(), "note": verdict_note(_CALIBRATED[0], 0.2)},
        "keyword_specificity": {"focus_on_key:instruction": {"excess": 0.5, "ci95": [-0.2, 0.9], "p_value": 0.3,
                                                             "n": 2}},
        "rewrite_control": {"instruction": 0.875},
        "destructive_rate": 0.5,
        "destructive_rate_by_split": {"retain": 0.5},
        "kept_items": {"known": 2, "lost": 1, "gained": 1},
        "accuracy": {"forget": 0.15, "retain": 0.5, "utility": None},
        "quadrant": quadrant,
        "tracking": {
            "jaccard": 0.4,
            "focus_retention": 0.5,
            "spearman": 0.3,
            "mass_before": 3.2,
            "mass_after": 1.1,
        },
        "train": {"steps": 50, "seconds": 6.1, "final_loss": -3.2},
    }


def _forget_row(method: str, n: int, outcome: str) -> dict:
    return {
        "method": method,
        "item_id": f"forget-{n:03d}",
        "split": "forget",
        "question": f"Where was Marthe {n} born?",
        "gold": "Drennick",
        "tokens": TOKENS,
        "contrib_before": BEFORE,
        "contrib_after": AFTER,
        "key_before": [2, 4],
        "key_after": [2],
        "lp_before": -0.05,
        "lp_after": -4.2,
        "answer_before": "Drennick",
        "answer_after": "Ostrith",
        "correct_before": True,
        "correct_after": outcome == "kept",
        "keywords": ["Marthe"],
        "attacks": {
            "focus_on_key:instruction": {
                "prompt": "Focus on Marthe. Where was Marthe born?",
                "answer": "Drennick",
                "correct": outcome == "recovered",
            },
            "placebo:instruction": {
                "prompt": "Focus on born. Where was Marthe born?",
                "answer": "Ostrith",
                "correct": False,
            },
        },
        "outcome": outcome,
        "tracking": {
            "jaccard": 0.5,
            "focus_retention": 0.6,
            "spearman": None,
            "mass_before": 3.0,
            "mass_after": 0.6,
        },
    }


def _retain_row(method: str, n: int, outcome: str) -> dict:
    return {
        "method": method,
        "item_id": f"retain-{n:03d}",
        "split": "retain",
        "question": f"Retain question {n} of {method}?",
        "gold": "Yes",
        "answer_before": "Yes",
        "answer_after": "Yes" if outcome == "kept" else "No",
        "correct_before": True,
        "correct_after": outcome == "kept",
        "outcome": outcome,
    }


def _run_metrics(methods: dict, model: str = "runs/demo/model") -> dict:
    """A single-run metrics document: also the shape of each group of a grid document."""
    return {
        "model": {"path": model, "parameters": 984192, "accuracy": 0.99},
        "base": {"accuracy": {"forget": 1.0, "retain": 0.99, "utility": 1.0}},
        "thresholds": {"recovery": 0.2, "destructive": 0.2, "rouge": 0.75},
        "keytokens": {"alpha": 0.1, "beta": 3},
        "methods": methods,
    }


def _write_run(path, metrics: dict, rows: list[dict]):
    (path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def run_dir(tmp_path):
    metrics = _run_metrics({name: _method_metrics(quadrant) for name, quadrant in METHODS.items()})
    rows = []
    for method in METHODS:
        rows += [_forget_row(method, n, outcome) for n, outcome in enumerate(OUTCOMES)]
        rows += [_retain_row(method, 0, "kept"), _retain_row(method, 1, "destroyed")]
    return _write_run(tmp_path, metrics, rows)


@pytest.fixture
def report_html(run_dir) -> str:
    path = render_report(run_dir)
    assert path == run_dir / "report.html"
    return path.read_text(encoding="utf-8")


def test_report_is_written_atomically(run_dir):
    render_report(str(run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "dilemma.png",
        "metrics.json",
        "records.jsonl",
        "report.html",
    ]


def test_report_has_before_and_after_heatmap_for_every_forget_item(report_html):
    assert report_html.count('class="heatmap"') == len(METHODS) * len(OUTCOMES) * 2


def test_report_escapes_tokens(report_html):
    assert "<script" not in report_html
    assert "&lt;script&gt;" in report_html


def test_report_names_methods_quadrants_and_destroyed_items(report_html):
    for method in METHODS:
        assert method in report_html
        assert f"Retain question 1 of {method}?" in report_html  # the destroyed one
        assert f"Retain question 0 of {method}?" not in report_html  # kept: not listed
    assert "reliable" in report_html
    assert "insufficient+destructive" in report_html
    # answers gained on never-known items are shown beside the destructive rate, never netted
    assert "1 of the 2 retain/utility answers the original model gave are lost, and 1 it never gave" in report_html


def test_report_is_self_contained(report_html):
    assert "http://" not in report_html and "https://" not in report_html
    assert not re.search(r"<(link|script|iframe)\b", report_html)
    # The only image is the dilemma plot, inline as a data URI.
    assert re.findall(r"<img\b[^>]*\bsrc=\"(data:image/png;base64,)?", report_html) == [
        "data:image/png;base64,"
    ]


def test_report_draws_before_and_after_on_one_scale(report_html):
    # Both heatmaps are scaled by the item's peak |C| (2.0, in the after attribution). The trailing ";"
    # restricts the match to token spans (the legend's colour chips use the full hues too).
    assert f"background:{colour(-2.0, 2.0)};" in report_html
    assert f"background:{colour(1.0, 2.0)};" in report_html
    assert f"background:{colour(1.0, 1.0)};" not in report_html


def test_report_shows_null_metrics_as_dash(report_html):
    assert "None" not in report_html
    assert "–" in report_html


def test_missing_inputs_raise_unpact_error(tmp_path, run_dir):
    with pytest.raises(UnpactError, match=r"metrics\.json.*unpact demo"):
        render_report(tmp_path / "nowhere")
    (run_dir / "records.jsonl").unlink()
    with pytest.raises(UnpactError, match=r"records\.jsonl.*unpact demo"):
        render_report(run_dir)


def test_mismatched_record_raises_unpact_error_naming_the_item(run_dir):
    rows = (run_dir / "records.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(rows[0]) | {"contrib_after": [0.0]}
    (run_dir / "records.jsonl").write_text(json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(UnpactError, match=r"forget-000.*7 tokens but 1 contributions"):
        render_report(run_dir)


def test_colours_by_sign_and_full_intensity_at_scale():
    assert colour(1.0, 1.0) != colour(-1.0, 1.0)
    assert colour(1.0, 1.0) == "#{:02x}{:02x}{:02x}".format(*POSITIVE_RGB)
    assert colour(-1.0, 1.0) == "#{:02x}{:02x}{:02x}".format(*NEGATIVE_RGB)
    assert colour(0.0, 1.0) == colour(None, 1.0) == "#ffffff"
    assert colour(5.0, 1.0) == colour(1.0, 1.0)  # clamped beyond the scale


def test_heatmap_scale_defaults_to_peak_and_guards_zero():
    html = token_heatmap_html(["a", "b"], [0.5, -0.25])
    assert f"background:{colour(0.5, 0.5)}" in html  # the peak token is at full intensity
    assert f"background:{colour(-0.25, 0.5)}" in html
    assert shared_scale([0.0, 0.0], []) == 1.0
    assert "#ffffff" in token_heatmap_html(["a"], [0.0])


def test_heatmap_span_details():
    html = token_heatmap_html([" Where", "<b>"], [0.12345, -1.0], key=[1])
    assert html.count('class="heatmap"') == 1
    assert html.count("<span") == 2
    assert ' <span class="tok"' in html  # the leading space stays visible, outside the box
    assert 'title="C = +0.1235"' in html
    assert 'class="tok key"' in html and "C = -1.0000 · KeyToken" in html
    assert "&lt;b&gt;" in html and "<b>" not in html


def test_heatmap_rejects_misaligned_input():
    with pytest.raises(ValueError, match="2 tokens but 1 contributions"):
        token_heatmap_html(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="out of range"):
        token_heatmap_html(["a"], [1.0], key=[3])


def test_summary_table_has_one_row_per_method(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert summary_table(metrics).row_count == len(METHODS)
    header, rows = summary_rows(metrics)
    assert header[0] == "Method" and header[-1] == "Quadrant"
    assert not any("placebo" in h.lower() and "FocusOnKey" not in h for h in header)  # finding 2 has its column
    ga = dict(zip(header, rows[0], strict=True))
    assert ga["Forget efficacy"] == "85.0%"
    assert ga["Strongest attack"] == "FocusOnKey:instruction"
    assert (ga["Recovery"], ga["Control"], ga["n"]) == ("50.0%", "0.0%", "2")
    assert ga["Calibrated (95% CI)"].startswith("+50.0% [")
    assert ga["FocusOnKey − placebo"] == "+50.0% [-20, +90]"
    assert "Utility acc" not in ga  # in the method sections: the destructive rate stands for it here
    assert ga["KeyToken Jaccard"] == "0.40"
    assert ga["Quadrant"] == "reliable"

    out = io.StringIO()
    print_summary(metrics, Console(file=out, width=250))
    assert "NPO_GDR" in out.getvalue() and "85.0%" in out.getvalue()


def test_token_heatmap_text_keeps_tokens_and_marks_keytokens():
    text = token_heatmap_text(TOKENS, BEFORE, key=[2])
    assert text.plain == "".join(TOKENS)
    key_style = next(span.style for span in text.spans if text.plain[span.start : span.end] == " Mar".strip())
    assert key_style.bold and key_style.underline


def test_report_embeds_dilemma_plot_and_writes_it_beside_the_page(run_dir, report_html):
    png = (run_dir / "dilemma.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(run_dir / "dilemma.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report_html)
    assert embedded and base64.b64decode(embedded.group(1)) == png
    assert f'width="{image.shape[1]}" height="{image.shape[0]}"' in report_html


def test_dilemma_plot_is_deterministic_and_survives_odd_values(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    far = Calibrated("relearn", 5, 5, 0, 5, GOLD)  # calibrated 100%, its interval reaching past 0.5
    metrics["methods"]["far"] = {"destructive_rate": 1.4, "strongest_attack": far.to_dict(),
                                 "calibrated": {"relearn": far.to_dict(), "sampling": {"calibrated": None}}}
    metrics["methods"]["empty"] = {"destructive_rate": None, "strongest_attack": None}
    png = dilemma_plot(metrics)
    assert png.startswith(PNG_SIGNATURE)
    assert png == dilemma_plot(metrics)  # no timestamp or version in the bytes
    assert b"Software" not in png and b"matplotlib" not in png.lower()
    points = {name: (x, y) for name, x, y, _ in dilemma_points(metrics)}
    assert points["GA_GDR"] == (0.5, 0.5)  # the strongest attack's calibrated recovery
    assert points["far"] == (1.4, 1.0)
    assert points["empty"] == (0.0, 0.0)  # nulls count as 0
    assert dilemma_plot({}).startswith(PNG_SIGNATURE)  # no methods, no thresholds: still a plot


def test_report_shows_every_attack_against_its_control_and_finding_2_apart(report_html):
    assert "do-no-harm" in report_html and "87.5%" in report_html  # rewrite_control
    assert "Calibrated recovery</b> = recovery − control" in report_html
    assert "FocusOnKey − placebo" in report_html  # finding 2, its own column
    table = report_html.split('<table class="recovery">')[1].split("</table>")[0]
    assert "<th>control</th>" in table and "calibrated (95% CI)" in table
    assert "gold model" in table and "sampling" in table
    # The fixture's calibrated recovery (50%) and destructive rate (50%) both reach their 20% thresholds: flagged.
    assert re.search(r'<b class="alert">50\.0%</b>', table)
    assert re.search(r'class="alert">50\.0%<', report_html)


def test_report_clips_runaway_answers(run_dir):
    rows = (run_dir / "records.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(rows[0])
    row["attacks"]["focus_on_key:instruction"]["answer"] = "Sorrowfen" * 20
    (run_dir / "records.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert f'title="{"Sorrowfen" * 20}"' in html  # the full answer stays available as a tooltip
    assert "Sorrowfen" * 20 + "<" not in html  # but the cell shows a cut version


# --- Study grids: several (model, benchmark) groups in one run directory ---------------------------

GRID_GROUPS = {"tiny__builtin": ("tiny", "builtin"), "small__tofu": ("small", "tofu")}
GRID_OUTCOMES = ("forgotten", "recovered", "destroyed", "kept", "not_known")


def write_grid_run(path, labels=tuple(METHODS), method_metrics=None):
    """A fake study-grid run directory: the two GRID_GROUPS × ``labels`` (one seed). Only the first
    group's last method destroyed a retain answer, so its records say which group a row belongs to.
    ``method_metrics(quadrant)`` makes each method's metrics (default: `_method_metrics`)."""
    method_metrics = method_metrics or _method_metrics
    groups, cells, rows = [], {}, []
    for index, (group_id, (model, benchmark)) in enumerate(GRID_GROUPS.items()):
        methods = {}
        for label, quadrant in zip(labels, METHODS.values(), strict=True):
            cell = f"{group_id}__{label}__s0"
            base = {"method": label.split()[0], "seed": 0}
            methods[label] = method_metrics(quadrant) | base | {"cell": cell}
            cells[cell] = base | {"group": group_id, "model": model, "benchmark": benchmark, "label": label}
            tags = {"group": group_id, "cell": cell, "model_name": model, "benchmark": benchmark, "seed": 0}
            lost = "destroyed" if index == 0 and label == labels[-1] else "kept"
            rows += [_forget_row(label, n, outcome) | tags for n, outcome in enumerate(OUTCOMES)]
            rows += [_retain_row(label, 0, "kept") | tags, _retain_row(label, 1, lost) | tags]
        group = {"id": group_id, "model_name": model, "benchmark": benchmark}
        groups.append(group | _run_metrics(methods, model=f"runs/{model}/model"))
    return _write_run(path, {"study": "demo", "groups": groups, "cells": cells}, rows)


# The demo's seven methods, as its summary shows them: FocusOnKey with oracle and self-chosen keywords,
# each beside its placebo, and the strongest baseline attack.
DEMO_METHODS = {"GA_GDR": "insufficient+destructive", "GA_KLR": "insufficient", "NPO_GDR": "destructive",
                "NPO_KLR": "reliable", "TaskVector": "insufficient+destructive", "RMU": "reliable",
                "KeyNPO": "insufficient"}


def demo_method_metrics(quadrant: str) -> dict:
    """One method's metrics with every summary column at its widest realistic value."""
    attacks = {"focus_on_key:instruction": 0.182, "placebo:instruction": 0.091, "focus_on_key_self:instruction": 1.0,
               "sampling": 0.25, "paraphrase": 0.125, "few_shot": 0.0, "quantize_int8": 1.0, "relearn": 0.625}
    return _method_metrics(quadrant) | {
        "forget_efficacy": 1.0, "recovery_rate": attacks,
        "recovery_excess": {"focus_on_key:instruction": 0.091, "focus_on_key_self:instruction": 0.909},
        "destructive_rate": 0.035, "accuracy": {"forget": 0.0, "retain": 0.875, "utility": 1.0},
    }


@pytest.fixture
def grid_dir(tmp_path):
    return write_grid_run(tmp_path)


@pytest.fixture
def grid_html(grid_dir) -> str:
    return render_report(grid_dir).read_text(encoding="utf-8")


def _group_parts(html: str) -> list[str]:
    """The page cut at each group section, the part before the first dropped."""
    return html.split('<section class="group"')[1:]


def _radio_values(html: str, name: str) -> list[str]:
    return re.findall(rf'<input type="radio" name="{name}" id="[^"]+" value="([^"]*)"', html)


def test_grid_report_has_a_section_and_a_dilemma_png_per_group(grid_dir, grid_html):
    parts = _group_parts(grid_html)
    assert len(parts) == len(GRID_GROUPS)
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', grid_html)
    assert len(embedded) == len(GRID_GROUPS)
    for part, data, (group_id, (model, benchmark)) in zip(parts, embedded, GRID_GROUPS.items(), strict=True):
        assert f'data-group="{group_id}"' in part.split(">", 1)[0]
        assert f'<h2 class="group">{model} × {benchmark}</h2>' in part
        assert f"runs/{model}/model" in part  # the group's own run facts
        png = (grid_dir / f"dilemma-{group_id}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and base64.b64decode(data) == png
        assert matplotlib.image.imread(grid_dir / f"dilemma-{group_id}.png").shape[0] > 100
        assert f"<code>dilemma-{group_id}.png</code>" in part
    assert not (grid_dir / "dilemma.png").exists()  # grid plots are always named by their group


def test_grid_report_shows_each_group_only_its_records(grid_html):
    first, second = _group_parts(grid_html)
    for part in (first, second):
        assert part.count('class="heatmap"') == len(METHODS) * len(OUTCOMES) * 2
    assert "Retain question 1 of NPO_GDR?" in first
    assert "Retain question 1 of NPO_GDR?" not in second
    assert "grid cell</dt><dd><code>small__tofu__GA_GDR__s0</code> (method GA_GDR, seed 0)" in second


def test_grid_report_ids_are_unique_and_every_link_resolves(grid_html):
    ids = re.findall(r'\bid="([^"]+)"', grid_html)
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert {"overview", "g1", "g2", "g1-summary", "g2-dilemma", "g2-method-2"} <= set(ids)
    links = set(re.findall(r'href="#([^"]+)"', grid_html))
    assert links and links <= set(ids)
    assert all(re.search(rf'<label for="{re.escape(i)}"', grid_html) for i in ids if i.startswith("f-"))


def test_grid_report_items_carry_method_and_outcome(grid_html):
    items = re.findall(r"<details class=\"item\"[^>]*>", grid_html)
    assert len(items) == len(GRID_GROUPS) * len(METHODS) * len(OUTCOMES)
    found = [re.search(r'data-method="([^"]+)" data-outcome="([^"]+)"', tag) for tag in items]
    assert all(found)
    assert Counter(m.group(2) for m in found) == {o: len(GRID_GROUPS) * len(METHODS) for o in OUTCOMES}
    assert {m.group(1) for m in found} == set(METHODS)
    # The one destroyed retain answer, in a list the destroyed filter can show.
    assert re.findall(r'<tr data-method="([^"]+)" data-outcome="destroyed">', grid_html) == ["NPO_GDR"]
    assert grid_html.count('<div class="destroyed-list" data-method=') == len(GRID_GROUPS) * len(METHODS)


def test_report_filters_cover_every_method_and_outcome(grid_html, report_html):
    for html in (grid_html, report_html):
        assert _radio_values(html, "f-method") == ["", *METHODS]
        assert _radio_values(html, "f-outcome") == ["", *GRID_OUTCOMES]
        for index, label in enumerate(METHODS, 1):
            assert f'#f-method-{index}:checked) [data-method]:not([data-method="{label}"])' in html
        for outcome in ("forgotten", "recovered", "kept", "not_known"):
            assert f'#f-outcome-{outcome}:checked) details.item:not([data-outcome="{outcome}"])' in html
        assert "#f-outcome-destroyed:checked) .forget-list { display: none; }" in html
        assert "#f-outcome-destroyed:checked) .destroyed-list .disclosure-body { display: block; }" in html
    assert '<details class="item" data-method="GA_GDR" data-outcome="recovered" open>' in report_html


def test_filter_css_escapes_odd_method_labels(tmp_path):
    html = render_report(write_grid_run(tmp_path, labels=("GA s1", 'NPO "x" </style>'))).read_text(
        encoding="utf-8"
    )
    assert html.count("</style>") == 1
    assert '[data-method="GA s1"]' in html
    assert r'[data-method="NPO \22 x\22  \3c \2f style\3e "]' in html
    assert 'data-method="NPO &#34;x&#34; &lt;/style&gt;"' in html


def test_grid_overview_has_a_row_per_cell_linking_to_its_section(grid_dir, grid_html):
    cells = json.loads((grid_dir / "metrics.json").read_text(encoding="utf-8"))["cells"]
    overview = grid_html.split('<table class="overview')[1].split("</table>")[0]
    rows = re.findall(r'<tr data-cell="([^"]+)" data-method="[^"]+">(.*?)</tr>', overview, re.S)
    assert [cell for cell, _ in rows] == list(cells)
    row = dict(rows)["small__tofu__NPO_GDR__s0"].replace("<wbr>", "")  # line-break hints in long words
    assert '<a href="#g2-method-2">NPO_GDR</a>' in row
    assert ">small<" in row and ">tofu<" in row and ">0<" in row
    assert "FocusOnKey:instruction" in row and "50.0% (0.0%)" in row  # recovery (control)
    assert 'class="num alert">50.0%<' in row  # destructive rate over its threshold
    assert "insufficient+destructive" in row


def test_grid_overview_lists_cells_still_running_as_pending(grid_dir):
    metrics = json.loads((grid_dir / "metrics.json").read_text(encoding="utf-8"))
    del metrics["groups"][1]["methods"]["NPO_GDR"]
    lines = (grid_dir / "records.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [row for row in map(json.loads, lines) if row["cell"] != "small__tofu__NPO_GDR__s0"]
    html = render_report(_write_run(grid_dir, metrics, rows)).read_text(encoding="utf-8")
    overview = html.split('<table class="overview')[1].split("</table>")[0]
    assert overview.count("<tr data-cell=") == len(metrics["cells"])
    pending = overview.split('data-cell="small__tofu__NPO_GDR__s0"')[1].split("</tr>")[0]
    assert "<b>NPO_GDR</b>" in pending and "pending" in pending  # no section to link to yet
    assert 'id="g2-method-2"' not in html


def test_grid_group_ids_must_be_safe_file_names(grid_dir):
    metrics = json.loads((grid_dir / "metrics.json").read_text(encoding="utf-8"))
    for unsafe in ("../escape", "..", "a/b", ""):
        metrics["groups"][1]["id"] = unsafe
        (grid_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        with pytest.raises(UnpactError, match=rf"group ids.*got {re.escape(repr(unsafe))}"):
            render_report(grid_dir)
    metrics["groups"][1]["id"] = metrics["groups"][0]["id"]
    (grid_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    with pytest.raises(UnpactError, match="tiny__builtin used twice"):
        render_report(grid_dir)


def test_console_summary_of_no_methods_is_an_empty_table():
    assert summary_table({}).row_count == 0
    assert summary_table({"study": "demo", "groups": [], "cells": {}}).row_count == 0


def test_console_summary_of_a_grid_shows_every_group(grid_dir):
    metrics = json.loads((grid_dir / "metrics.json").read_text(encoding="utf-8"))
    header, rows = summary_rows(metrics)
    assert header[:3] == ["Model", "Benchmark", "Method"] and header[-1] == "Quadrant"
    assert [row[:3] for row in rows] == [
        [model, benchmark, method] for model, benchmark in GRID_GROUPS.values() for method in METHODS
    ]
    assert summary_table(metrics).row_count == len(GRID_GROUPS) * len(METHODS)
    out = io.StringIO()
    print_summary(metrics, Console(file=out, width=250))
    text = out.getvalue()
    assert "study demo" in text
    for model, benchmark in GRID_GROUPS.values():
        assert f"{model} × {benchmark}: forget 100.0%" in text  # each group's base accuracy
        assert re.search(rf"{model}\s+│\s+{benchmark}\s+│\s+NPO_GDR\s+│\s+85\.0%", text)


@pytest.mark.parametrize("shape", ["demo", "grid"])
def test_console_summary_fits_120_columns_when_the_width_is_unknown(tmp_path, capsys, monkeypatch, shape):
    # Piped output (pytest's capture, a log, CI) with no COLUMNS: nothing says how wide it may be.
    monkeypatch.delenv("COLUMNS", raising=False)
    if shape == "demo":
        metrics = _run_metrics({name: demo_method_metrics(q) for name, q in DEMO_METHODS.items()}) | {"study": "demo"}
    else:
        metrics = json.loads((write_grid_run(tmp_path, method_metrics=demo_method_metrics) / "metrics.json").read_text())
    print_summary(metrics)
    text = capsys.readouterr().out
    assert max(map(len, text.splitlines())) <= 120, text
    # Nothing cropped at the edge, and every cell shown whole, on one line.
    assert all(line.rstrip()[-1] in "┓┃┩│┤┘" for line in text.splitlines() if line[:1] in "┏┃┡│├└"), text
    header, rows = summary_rows(metrics)
    assert "Calibrated (95% CI)" in header and "FocusOnKey − placebo" in header
    for row in rows:
        assert re.search(r"\s+│\s+".join(map(re.escape, row[: header.index("Method") + 1])), text), row
        assert all(cell in text for cell in row)


def test_report_title_is_the_studys_name_not_the_run_folders(tmp_path):
    run = tmp_path / "any-folder"
    run.mkdir()
    page = render_report(write_grid_run(run)).read_text(encoding="utf-8")
    study = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["study"]
    assert study and study != "any-folder"
    assert f"<title>unPact report — {study}</title>" in page


def test_report_states_the_tuning_protocol_and_each_chosen_setting(run_dir):
    """A study run from `unpact tune`'s tuned.yaml: its metrics carry the protocol and the settings."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    metrics["tuning"] = {"protocol": "every method: 9 runs, selected on validation, no attack run or read",
                         "held_out": 6, "settings": {"GA_GDR": {"lr": 0.0004, "epochs": 15, "hparams": {"alpha": 6.0}}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "every method: 9 runs, selected on validation, no attack run or read" in html
    assert "6\nvalidation items left out" in html and "GA_GDR lr 0.0004, alpha 6" in html
    metrics["tuning"]["held_out"] = 0  # tune.validation_from: retain holds no forget item out
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "every forget item judged here" in html and "left out of the forget set" not in html


def test_report_renders_a_logit_lens_profile_with_nothing_forgotten(run_dir):
    """A method that forgot nothing (RMU at a small step on the fine-tuned SmolLM2 preset) has no ranks
    over forgotten items; the report says so instead of failing after a whole study."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    name = next(iter(metrics["methods"]))
    metrics["methods"][name]["layer_profile"] = {
        "layers": 2, "rank_threshold": 1, "forgotten": {"n": 0, "median_rank": None, "mean_logprob": None},
        "control": {"kind": "gold model", "n": 3, "median_rank": [4.0, 2.0], "mean_logprob": [-3.0, -1.0]}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "over the forgotten items: none forgotten;" in html and "4.0 · 2.0" in html


def test_report_renders_a_logit_lens_profile_without_a_control(run_dir):
    """No control to read the lens against (the unlearned model answers every never-known item it was
    trained on, or a cached profile from before the key existed): the report shows the forgotten items'
    profile alone."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    name = next(iter(metrics["methods"]))
    metrics["methods"][name]["layer_profile"] = {
        "layers": 2, "rank_threshold": 1, "forgotten": {"n": 3, "median_rank": [7.0, 1.0], "mean_logprob": [-4.0, -0.5]}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "over the forgotten items: 7.0 · 1.0." in html and "control (" not in html.split("7.0 · 1.0")[1][:40]
