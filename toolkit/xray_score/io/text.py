"""Text that leaves the program: file names as valid UTF-8."""

from __future__ import annotations

import os


def display_path(path: str | os.PathLike) -> str:
    """A file name as valid text: undecodable bytes become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")
