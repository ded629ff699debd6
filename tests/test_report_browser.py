"""The HTML report in a real browser (headless Chromium): it paints, logs nothing, and its CSS-only
filters show what they promise. String checks on the HTML cannot catch a stylesheet that hides
everything or a `:has()` rule that never matches; only a browser can.

Slow (one browser start per test), so out of the default run: `pytest -m slow tests/test_report_browser.py`.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections import Counter

import matplotlib.image
import numpy as np
import pytest

from test_report import GRID_GROUPS, METHODS, OUTCOMES, TOKENS, demo_method_metrics, write_grid_run
from unpact.report import render_report
from unpact.report.heatmap import NEGATIVE_RGB, POSITIVE_RGB, colour

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium: `apt-get install chromium`"),
]

# No network, no first-run or sync machinery: the browser only renders the local page.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Tall enough to reach the first method's heatmaps below the reading guide, overview and plot.
WINDOW = "--window-size=1280,4000"

# A common laptop browser window: every table must fit in it whole, not run off the right edge (nor
# scroll sideways inside a container; that only hides the overflow).
LAPTOP_WIDTH = 1400

# Appended to a copy of the page: opens every item and destroyed-answers list, so that the tables inside
# them are laid out too, and records the page's and every table's extent in the <body>'s data-fit.
FIT_PROBE = """<script>
for (const details of document.querySelectorAll("details")) details.open = true;
for (const toggle of document.querySelectorAll("input.toggle")) toggle.checked = true;
const root = document.documentElement;
const tables = [...document.querySelectorAll("table")].filter((t) => t.getClientRects().length > 0).map((t) => ({
  name: t.className || "(no class)", right: t.getBoundingClientRect().right,
  parentRight: t.parentElement.getBoundingClientRect().right,
  parentScroll: t.parentElement.scrollWidth, parentClient: t.parentElement.clientWidth,
}));
document.body.dataset.fit = JSON.stringify({scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, tables});
</script>"""

# Appended to a copy of the page (the report itself has no script): sets each (method, outcome) filter
# pair and records which items the browser then lays out, in the <body>'s data-probe attribute.
PROBE = """<script>
const seen = {};
for (const [method, outcome] of %s) {
  document.getElementById(method).checked = true;
  document.getElementById(outcome).checked = true;
  const shown = (selector) => [...document.querySelectorAll(selector)]
    .filter((e) => e.getClientRects().length > 0)
    .map((e) => e.dataset.method + "/" + e.dataset.outcome);
  seen[method + " " + outcome] = {
    items: shown("details.item, tr[data-outcome]"), cells: shown("tr[data-cell]"),
  };
}
document.body.dataset.probe = JSON.stringify(seen);
</script>"""


def _chromium(tmp_path, page, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def _console_lines(stderr: str) -> list[str]:
    """Page console messages and uncaught errors in Chromium's stderr log. This Chromium logs every
    console message as INFO, whatever its level; the report runs no script, so any is a fault."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def _pixels_near(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 2) -> int:
    return int((np.abs(pixels - np.array(rgb)).max(axis=1) <= tolerance).sum())


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


@pytest.fixture
def page(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    return render_report(write_grid_run(run))


def test_report_paints_text_plots_and_heatmaps(tmp_path, page):
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, page, f"--screenshot={shot}", WINDOW, "--hide-scrollbars")
    pixels = np.round(matplotlib.image.imread(shot)[..., :3] * 255).astype(int).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 500  # a blank or unstyled page has a handful
    assert _pixels_near(pixels, POSITIVE_RGB) > 100 and _pixels_near(pixels, NEGATIVE_RGB) > 100
    # Half-intensity support (the fixture's 1.0 on a 2.0 scale) fills only heatmap token boxes.
    assert _pixels_near(pixels, _rgb(colour(1.0, 2.0))) > 100


def test_report_loads_without_console_messages_and_keeps_its_content(tmp_path, page):
    result = _chromium(tmp_path, page, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert _console_lines(result.stderr) == []
    dom = result.stdout
    heatmaps = len(GRID_GROUPS) * len(METHODS) * len(OUTCOMES) * 2
    assert dom.count('<div class="heatmap"') == heatmaps
    assert len(re.findall(r'<span class="tok( key)?" style="background:#', dom)) == heatmaps * len(TOKENS)
    plots = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', dom)
    assert len(plots) == len(GRID_GROUPS)


def test_filters_show_only_the_chosen_items(tmp_path, page):
    pairs = [
        ("f-method-all", "f-outcome-all"),
        ("f-method-all", "f-outcome-recovered"),
        ("f-method-all", "f-outcome-destroyed"),
        ("f-method-2", "f-outcome-all"),
        ("f-method-1", "f-outcome-destroyed"),
    ]
    probe = page.with_name("probe.html")
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", PROBE % json.dumps(pairs) + "</body>"),
        encoding="utf-8",
    )
    result = _chromium(tmp_path, probe, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert _console_lines(result.stderr) == []
    seen = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', result.stdout).group(1)))
    everything = seen["f-method-all f-outcome-all"]
    # Unfiltered: every forget item; the destroyed answers wait in their closed list.
    assert Counter(everything["items"]) == {f"{m}/{o}": len(GRID_GROUPS) for m in METHODS for o in OUTCOMES}
    assert len(everything["cells"]) == len(GRID_GROUPS) * len(METHODS)
    assert seen["f-method-all f-outcome-recovered"]["items"] == [f"{m}/recovered" for m in METHODS] * 2
    assert seen["f-method-all f-outcome-destroyed"]["items"] == ["NPO_GDR/destroyed"]
    npo = seen["f-method-2 f-outcome-all"]
    assert npo["items"] == ["NPO_GDR/" + o for o in OUTCOMES] * len(GRID_GROUPS)
    assert npo["cells"] == ["NPO_GDR/undefined"] * len(GRID_GROUPS)  # overview rows follow the method filter
    assert seen["f-method-1 f-outcome-destroyed"]["items"] == []  # GA_GDR destroyed nothing


def test_every_table_fits_a_1400_pixel_window(tmp_path):
    # The demo's widest summary: FocusOnKey with oracle and self keywords, the weight attacks, every
    # quadrant; a grid, so the overview table is there too.
    run = tmp_path / "run"
    run.mkdir()
    page = render_report(write_grid_run(run, method_metrics=demo_method_metrics))
    probe = page.with_name("fit.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", FIT_PROBE + "</body>"), encoding="utf-8")
    result = _chromium(tmp_path, probe, f"--window-size={LAPTOP_WIDTH},1000", "--dump-dom")
    fit = json.loads(html.unescape(re.search(r'data-fit="([^"]*)"', result.stdout).group(1)))
    assert fit["scrollWidth"] <= fit["clientWidth"] <= LAPTOP_WIDTH  # the page never scrolls sideways
    names = Counter(t["name"] for t in fit["tables"])
    assert names["summary"] == len(GRID_GROUPS) and names["overview summary"] == 1
    assert names["destroyed"] >= 1 and names["attacks"] == len(GRID_GROUPS) * len(METHODS) * len(OUTCOMES)
    for table in fit["tables"]:
        # Half a pixel: layout positions are fractional.
        assert table["right"] <= min(fit["clientWidth"], table["parentRight"]) + 0.5, table
        assert table["parentScroll"] <= table["parentClient"], table  # no sideways scrolling inside either
