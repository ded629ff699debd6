"""Static plots for the report, drawn with matplotlib's Agg renderer (no display, no pyplot state).

`dilemma_plot` places every method of a run in the unlearning dilemma: how much it destroys (x) against
how much of the forgotten knowledge a keyword-emphasis attack brings back beyond the placebo control (y).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from ..evaluation.quadrant import DEFAULT_DESTRUCTIVE_THRESHOLD, DEFAULT_RECOVERY_THRESHOLD
from ..recovery import AttackKey

# Same hues as the report's quadrant badges, so the plot and the page agree.
QUADRANT_COLOURS = {
    "reliable": "#2e7d32",
    "insufficient": "#b26a00",
    "destructive": "#c62828",
    "insufficient+destructive": "#c62828",
}
_UNKNOWN_COLOUR = "#555555"
_FONT_SIZE = 9.0  # points, for the method labels
_DPI = 150
_MARKER_RADIUS = 3.5  # points; scatter size s is the marker area in points²


def strongest_calibrated(method: dict) -> float:
    """A method's strongest calibrated recovery (the verdict's y); 0 when there is none."""
    return float((method.get("strongest_attack") or {}).get("calibrated") or 0.0)


def dilemma_points(metrics: dict) -> list[tuple[str, float, float, str | None]]:
    """(method, destructive rate, strongest calibrated recovery, quadrant) per method; nulls count as 0."""
    return [
        (name, float(m.get("destructive_rate") or 0.0), strongest_calibrated(m), m.get("quadrant"))
        for name, m in (metrics.get("methods") or {}).items()
    ]


def family_points(metrics: dict) -> dict[str, list[tuple[float, float]]]:
    """Per attack family (FocusOnKey, sampling, …), each method's (destructive rate, best calibrated
    recovery of that family): the other attacks behind each verdict point."""
    out: dict[str, list[tuple[float, float]]] = {}
    for m in (metrics.get("methods") or {}).values():
        best: dict[str, float] = {}
        for attack, c in (m.get("calibrated") or {}).items():
            family = AttackKey.parse(attack).attack
            if c.get("calibrated") is not None:
                best[family] = max(best.get(family, -1.0), c["calibrated"])
        for family, value in best.items():
            out.setdefault(family, []).append((float(m.get("destructive_rate") or 0.0), value))
    return out


def _threshold(thresholds: dict, name: str, default: float) -> float:
    value = thresholds.get(name)
    return default if value is None else float(value)


def _limits(values: Sequence[float], threshold: float) -> tuple[float, float]:
    """0..1, widened (with a small margin) when a value or the threshold falls outside."""
    low, high = min([0.0, threshold, *values]), max([1.0, threshold, *values])
    return (low - 0.05 if low < 0 else 0.0), (high + 0.05 if high > 1 else 1.0)


def _place_labels(
    ax, points: list[tuple[str, float, float, str | None]], avoid: Sequence
) -> list[tuple[float, float, str]]:
    """(dx, dy, ha) per label, offsets in points, so that labels overlap neither each other nor ``avoid``.

    Greedy, rightmost point first (so leader lines of labels pushed upwards run left of the labels
    below them): each label goes just above-right of its point, or the first free slot further up
    (then down); labels that would run past the right edge of the axes go to the left of their point.
    """
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.canvas.draw()  # settle the layout so data -> display transforms are final
    to_points = 72.0 / ax.figure.dpi
    right_edge = ax.get_window_extent().x1 * to_points
    height = 1.35 * _FONT_SIZE
    # Boxes in points: x0, y0, x1, y1.
    placed = [tuple(c * to_points for c in artist.get_window_extent(renderer).extents) for artist in avoid]
    for _, x, y, _ in points:  # the markers themselves
        px, py = (c * to_points for c in ax.transData.transform((x, y)))
        placed.append((px - _MARKER_RADIUS, py - _MARKER_RADIUS, px + _MARKER_RADIUS, py + _MARKER_RADIUS))
    labels: dict[int, tuple[float, float, str]] = {}
    steps = [4.0 + k * height for k in range(12)] + [-4.0 - (k + 1) * height for k in range(12)]
    for i in sorted(range(len(points)), key=lambda i: (-points[i][1], -points[i][2])):
        name, x, y, _ = points[i]
        px, py = (c * to_points for c in ax.transData.transform((x, y)))
        width = 0.62 * _FONT_SIZE * len(name)
        dx, ha = (7.0, "left") if px + 7.0 + width <= right_edge else (-7.0, "right")
        left = px + dx if ha == "left" else px + dx - width
        for dy in steps:
            box = (left, py + dy, left + width, py + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        labels[i] = (dx, dy, ha)
    return [labels[i] for i in range(len(points))]


def dilemma_plot(metrics: dict, title: str = "Unlearning dilemma") -> bytes:
    """The run's methods in the dilemma plane as PNG bytes.

    ``metrics`` is one run, or one group of a study grid; ``title`` names the group, so a PNG copied
    out of the run directory still says which model and benchmark it shows.

    x is the destructive rate, y the strongest attack's calibrated recovery (null counts as 0) with its
    95% interval as an error bar, and small hollow markers for each other attack family's best; dashed lines
    mark ``metrics["thresholds"]`` and the four quadrants are named in their corners. Both axes span
    0..1 unless a value lies outside. The PNG carries no software version or timestamp, so the same
    metrics give the same bytes.
    """
    # Imported here: matplotlib is slow to load, which `unpact attribute` need not pay.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    thresholds = metrics.get("thresholds") or {}
    x_cut = _threshold(thresholds, "destructive", DEFAULT_DESTRUCTIVE_THRESHOLD)
    y_cut = _threshold(thresholds, "recovery", DEFAULT_RECOVERY_THRESHOLD)
    points = dilemma_points(metrics)

    fig = Figure(figsize=(5.6, 4.2), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x0, x1 = _limits([p[1] for p in points], x_cut)
    ends = [e for m in (metrics.get("methods") or {}).values()
            for e in ((m.get("strongest_attack") or {}).get("ci95") or [])]
    y0, y1 = _limits([p[2] for p in points] + ends + [y for pts in family_points(metrics).values() for _, y in pts], y_cut)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)

    # Quadrant backgrounds, faint, in the badge colours.
    for (left, right), (bottom, top), name in (
        ((x0, x_cut), (y0, y_cut), "reliable"),
        ((x0, x_cut), (y_cut, y1), "insufficient"),
        ((x_cut, x1), (y0, y_cut), "destructive"),
        ((x_cut, x1), (y_cut, y1), "insufficient+destructive"),
    ):
        ax.axvspan(
            left,
            right,
            ymin=(bottom - y0) / (y1 - y0),
            ymax=(top - y0) / (y1 - y0),
            color=QUADRANT_COLOURS[name],
            alpha=0.06,
            linewidth=0,
            zorder=0,
        )
    ax.axvline(x_cut, color="#444", linestyle="--", linewidth=1, zorder=1)
    ax.axhline(y_cut, color="#444", linestyle="--", linewidth=1, zorder=1)
    corner = {"fontsize": 10, "fontweight": "bold", "transform": ax.transAxes, "alpha": 0.8, "zorder": 2}
    pad = 0.02
    corners = [
        ax.text(x, y, name, ha=ha, va=va, color=QUADRANT_COLOURS[name], **corner)
        for x, y, ha, va, name in (
            (pad, pad, "left", "bottom", "reliable"),
            (pad, 1 - pad, "left", "top", "insufficient"),
            (1 - pad, pad, "right", "bottom", "destructive"),
            (1 - pad, 1 - pad, "right", "top", "insufficient+destructive"),
        )
    ]

    markers = "v^sDPX*<>"
    for (family, pts), marker in zip(sorted(family_points(metrics).items()), markers * 3, strict=False):
        ax.scatter([x for x, _ in pts], [y for _, y in pts], s=18, marker=marker, facecolors="none",
                   edgecolors="#777", linewidths=0.7, zorder=3, clip_on=False, label=family)
    for name, x, y, quadrant in points:
        ci = ((metrics.get("methods") or {}).get(name, {}).get("strongest_attack") or {}).get("ci95")
        if ci:
            ax.errorbar([x], [y], yerr=[[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]], fmt="none",
                        ecolor=QUADRANT_COLOURS.get(quadrant or "", _UNKNOWN_COLOUR), elinewidth=0.8,
                        capsize=2, alpha=0.7, zorder=3, clip_on=False)
        ax.scatter(
            [x],
            [y],
            s=(2 * _MARKER_RADIUS) ** 2,
            color=QUADRANT_COLOURS.get(quadrant or "", _UNKNOWN_COLOUR),
            edgecolors="white",
            linewidths=0.8,
            zorder=4,
            clip_on=False,
        )
    for (name, x, y, _), (dx, dy, ha) in zip(points, _place_labels(ax, points, corners), strict=True):
        far = abs(dy) > _FONT_SIZE
        ax.annotate(
            name,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=_FONT_SIZE,
            ha=ha,
            va="bottom",
            zorder=5,
            annotation_clip=False,
            arrowprops={
                "arrowstyle": "-",
                "color": "#888",
                "linewidth": 0.6,
                "shrinkA": 0,
                "shrinkB": 3,
                "relpos": (0.0 if ha == "left" else 1.0, 0.0),
            }
            if far
            else None,
        )

    ax.set_xlabel("destructive rate (retain/utility answers lost)")
    ax.set_ylabel("strongest calibrated recovery (recovery − control)")
    if family_points(metrics):
        ax.legend(loc="center right", fontsize=6, title="other attacks", title_fontsize=6, frameon=False)
    ax.set_title(title, fontsize=11)
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.yaxis.set_major_formatter("{x:.0%}")
    ax.grid(True, color="#e6e6e6", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
