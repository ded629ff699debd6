"""Report stage: the self-contained HTML report of a run, the console summary and token heatmaps."""

from .console import print_summary, summary_table, token_heatmap_text
from .heatmap import token_heatmap_html
from .html import render_report

__all__ = ["print_summary", "render_report", "summary_table", "token_heatmap_html", "token_heatmap_text"]
