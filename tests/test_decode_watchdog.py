"""The worker's watchdog over decoding: one helper thread kept from chunk to chunk, another
after a hang, and one of its own in a forked child (threads do not survive a fork)."""

from __future__ import annotations

import shutil
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest

from test_ledger import make_folder
from xray_score.batch.processes import fork_available
from xray_score.batch.watchdog import decode_files, run_watched


@dataclass(frozen=True)
class ThreadRecorder:
    """A preprocessor that notes which thread decoded each file."""

    inner: Any
    threads: list = field(default_factory=list)

    def decode(self, path: str, into: Any = None) -> Any:
        self.threads.append(threading.current_thread())
        return self.inner.decode(path, into)


def test_chunks_are_decoded_by_one_kept_thread(baseline_bundle, tmp_path):
    recorder = ThreadRecorder(baseline_bundle.preprocessor())
    paths = [str(p) for p in make_folder(tmp_path / "scans", 3)]
    for _ in range(3):
        results, unfinished, hung = decode_files(recorder, paths, 30)
        assert [r.path for r in results] == paths and [r.ok for r in results] == [True] * 3
        assert not unfinished and not hung
    assert len(recorder.threads) == 9 and len(set(recorder.threads)) == 1
    assert recorder.threads[0] is not threading.current_thread()  # the watchdog only waits
    assert recorder.threads[0].is_alive()  # kept for the next chunk


@dataclass(frozen=True)
class Gated:
    """A preprocessor whose decoder hangs on files named ``hang*`` until ``gate`` opens."""

    inner: Any
    gate: threading.Event = field(default_factory=threading.Event)
    threads: list = field(default_factory=list)

    def decode(self, path: str, into: Any = None) -> Any:
        self.threads.append(threading.current_thread())
        if Path(path).name.startswith("hang"):
            self.gate.wait(60)
        return self.inner.decode(path, into)


def test_a_hung_file_retires_its_thread_and_the_next_chunk_gets_another(baseline_bundle,
                                                                        tmp_path):
    paths = [str(p) for p in make_folder(tmp_path / "scans", 2)]
    hang = str(tmp_path / "scans" / "hang.png")
    shutil.copy(paths[0], hang)
    gated = Gated(baseline_bundle.preprocessor())
    results, unfinished, hung = decode_files(gated, [paths[0], hang, paths[1]], 1.0)
    assert hung and unfinished == [paths[1]]
    assert [r.error_kind for r in results] == [None, "timeout"]
    stuck = gated.threads[-1]
    results, unfinished, hung = decode_files(gated, unfinished, 5.0)
    assert not hung and not unfinished and results[0].ok
    assert gated.threads[-1] is not stuck and stuck.is_alive()  # another thread decoded
    gated.gate.set()  # the hung file returns at last: its retired thread ends
    stuck.join(10)
    assert not stuck.is_alive()
    assert gated.threads[-1].is_alive()  # the new one is kept


@pytest.mark.skipif(not sys.platform.startswith("linux") or not fork_available(),
                    reason="needs a fork-safe Linux process")
def test_a_forked_child_decodes_on_a_thread_of_its_own(baseline_bundle, tmp_path):
    pre = baseline_bundle.preprocessor()
    paths = [str(p) for p in make_folder(tmp_path / "scans", 3)]
    decode_files(pre, paths, 30)  # this process has its helper thread now
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        results, unfinished, hung = pool.submit(decode_files, pre, paths, 10.0).result(120)
    assert not hung and not unfinished and [r.ok for r in results] == [True] * 3


def test_an_error_in_the_chunks_model_is_raised_in_the_calling_thread(baseline_bundle,
                                                                       tmp_path):
    """The helper runs the chunk's features and model too; what they raise is not lost with
    the helper, and the helper is kept for the next chunk."""
    paths = [str(p) for p in make_folder(tmp_path / "scans", 2)]
    pre = baseline_bundle.preprocessor()

    def broken(results):
        raise RuntimeError(f"model broke on {len(results)} files")

    with pytest.raises(RuntimeError, match="model broke on 2 files"):
        run_watched(pre, paths, 30, broken, 30)
    watched = run_watched(pre, paths, 30, lambda results: [{"n": len(results)}], 30)
    assert watched.stuck is None and watched.rows == [{"n": 2}]
