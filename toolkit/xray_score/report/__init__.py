"""Self-contained HTML reports: Jinja2 templates (autoescaped) and inline matplotlib figures.

Every figure is embedded as a base64 PNG data URI and the CSS is inline, so a report is one file
that opens offline and references no network asset.
"""

from .compare_page import write_compare_report
from .pages import write_evaluation_report, write_run_summary

__all__ = ["write_compare_report", "write_evaluation_report", "write_run_summary"]
