"""Scoring workers reuse freed memory: a chunk's big temporary arrays do not fault their pages
in again at every step (``xray_score.batch.memory``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import numpy as np
if sys.argv[1] == "reuse":
    from xray_score.batch.memory import reuse_freed_memory
    assert reuse_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # a chunk's steps: a few arrays of some MB alive at once, then freed
    arrays = [np.ones(1 << 20) for _ in range(4)]
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    pages_touched = 50 * 4 * (8 << 20) // 4096  # every step writes 32 MB afresh
    reused = faults("reuse")
    assert reused < pages_touched / 20, reused  # the first step's pages, then hardly any
    # glibc's default (how much it trims varies): here every step faulted most pages again
    assert faults("plain") > reused
