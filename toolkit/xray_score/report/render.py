"""Formatting filters and rendering of the autoescaped Jinja2 templates to one HTML file."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .. import __version__

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float | np.floating) and math.isnan(x))


def fmt_num(x: Any, digits: int = 3) -> str:
    """Number with ``digits`` decimals; ints stay ints; missing -> an em dash."""
    if _missing(x):
        return "—"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    if isinstance(x, float | np.floating):
        return f"{float(x):.{digits}f}"
    return str(x)


def fmt_pct(x: Any, digits: int = 1) -> str:
    """Fraction as a percentage."""
    return "—" if _missing(x) else f"{100 * float(x):.{digits}f}%"


def fmt_ci(ci: Any, digits: int = 3) -> str:
    """A (lo, hi) pair as ``lo–hi``."""
    if ci is None or any(_missing(v) for v in ci):
        return "—"
    return f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def fmt_p(p: Any) -> str:
    """p-value with 3 significant digits, ``< 0.001`` below that."""
    if _missing(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct, ci=fmt_ci, pval=fmt_p)
    return env


def render(template: str, out_html: str | os.PathLike[str], **context: Any) -> Path:
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    context.setdefault("generated", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    html = _env().get_template(template).render(version=__version__, **context)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    log.info("wrote %s", out)
    return out
