"""Text that leaves the program: file names as valid UTF-8, CSV cells that are not formulas."""

from __future__ import annotations

import os
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def display_path(path: str | os.PathLike) -> str:
    """A file name as valid text: undecodable bytes become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def csv_safe(value: Any) -> Any:
    """A CSV text cell that a spreadsheet will not run as a formula (OWASP): text starting
    with ``= + - @``, tab or CR gets a leading ``'``. Numbers, and text that is a number, are
    left alone."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def csv_unsafe(value: Any) -> Any:
    """The text :func:`csv_safe` was given (for reading our own CSV files back)."""
    if isinstance(value, str) and value[:1] == "'" and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value
