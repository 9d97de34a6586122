"""Muting TensorFlow's and LiteRT's C++ start-up banners (they write to fd 2, not via Python).

The CLI sets ``XRAY_SCORE_QUIET_TF_IMPORT=1`` (unless ``-vv``); library users see everything.
Python's ``warnings`` and ``logging`` are not touched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

QUIET_ENV = "XRAY_SCORE_QUIET_TF_IMPORT"


@contextmanager
def native_stderr_muted(active: bool | None = None) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (default: when the CLI asked)."""
    if active is None:
        active = os.environ.get(QUIET_ENV) == "1"
    if not active:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
