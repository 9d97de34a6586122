"""Scoring workers keep freed memory for reuse instead of handing it back to the system.

A chunk's steps allocate and free arrays of a few megabytes each (gradients, tables, indices).
glibc serves blocks that large with fresh mappings and unmaps them when freed, so each step
faults its pages in again: ~300,000 minor page faults per 2,496 files, ~0.03 CPU ms per file
of the baseline's HOG/LBP (``benchmarks/stages.py`` with and without this). Here blocks under
32 MB come from the heap, and the heap keeps up to 64 MB of freed memory; a larger image still
gets its own mapping and returns it. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from functools import lru_cache

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


@lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Once per process (forked children inherit it): True when glibc took the settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    log.debug("allocator keeps freed memory: %s", done)
    return done
