"""A chunk of files scored where the files are: the worker-side half of ``batch``.

A task is a list of paths. The worker (a local joblib/loky process, or a thread of a Dask
worker) reads each file and hashes it, decodes it to canonical pixels (a watchdog gives up on a
file after ``timeout`` seconds), transforms the chunk's pixels in one batch (HOG/LBP for the
baseline), runs the model, applies the bundle's calibration and threshold, and returns result
rows: a few hundred bytes per file, never pixels. The caller only plans, commits rows to its
ledger and exports (:mod:`xray_score.batch.runners`, :mod:`xray_score.batch.job`).

The bundle is loaded and verified once per process, and must be the caller's (same
``model_id``); each thread gets its own model (a TFLite interpreter is not thread-safe), with
``threads`` threads of its own (1: parallelism comes from the workers).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import BundleError, ErrorKind
from ..io.preprocess import FileResult
from .memory import reuse_freed_memory
from .scorer import grouped, limit_native_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkTask:
    """What a worker needs to score chunks: the bundle (by path, pinned by ``model_id``) and
    the run's options. Small and picklable; called with a list of paths."""

    bundle_path: str
    model_id: str
    timeout: float | None = 60.0
    batch_size: int = 64
    weights: str | None = None
    engine: str = "auto"
    threads: int = 1
    preprocessor: Any = None  # replaces the bundle's (tests wrap it to hang or crash)
    kinds: tuple[Any, ...] = ()  # model kinds the caller registered at run time
    log_level: int | None = None  # the caller's level for xray_score's logs (None: leave)
    kind: str | None = None  # the bundle's model kind (lets a forking runner preload it)

    def __call__(self, paths: list[str]) -> ChunkResult:
        model = worker_model(self)
        pre = self.preprocessor or model.scorer.preprocessor
        results, unfinished, hung = decode_files(pre, paths, self.timeout)
        transform(pre, results)
        rows: list[dict[str, Any]] = []
        for batch in grouped(results, self.batch_size):
            rows += model.scorer.rows(batch)
        return ChunkResult(rows=rows, unfinished=unfinished, hung=hung,
                           runtime=model.runtime, worker=_dask_worker_address(),
                           nbytes=len(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)))

    def preload(self) -> None:
        """Import here what each worker would otherwise import on its first chunk: the
        bundle's model kind (its modules), Pillow's image plugins and threadpoolctl. A runner
        that forks its workers calls this first, so that they inherit them (~30 ms less before
        the slower of 2 workers has its model). Nothing imported here starts a thread or
        loads a fork-unsafe library (``tests/test_scale_out.py``)."""
        import threadpoolctl  # noqa: F401 - imported for the workers to inherit
        from PIL import Image

        from ..model.kinds import get_kind

        Image.preinit()
        if self.kind:
            get_kind(self.kind)


@dataclass
class ChunkResult:
    """What comes back from a chunk: its rows (one per file it finished) and the files it
    left (after a hung file)."""

    rows: list[dict[str, Any]]
    unfinished: list[str] = field(default_factory=list)
    hung: bool = False  # a file hung: its thread is abandoned (Dask restarts the worker)
    runtime: str | None = None  # what ran the model
    worker: str | None = None  # the Dask worker's address
    nbytes: int = 0  # pickled size of the rows: what travelled back
    failures: list[FileResult] = field(default_factory=list)  # files that killed a worker


@dataclass
class WorkerModel:
    """A verified bundle and this thread's model, as a BatchScorer (rows, calibration)."""

    scorer: Any
    runtime: str


_BUNDLES: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()
_LOCAL = threading.local()


def worker_model(task: ChunkTask) -> WorkerModel:
    """This thread's model for ``task`` (bundle verified once per process, model per thread)."""
    from .scorer import BatchScorer

    key = (task.bundle_path, task.model_id, task.weights, task.engine, task.threads)
    models = getattr(_LOCAL, "models", None)
    if models is None:
        models = _LOCAL.models = {}
    if key not in models:
        from ..model.kinds import kind_names, register_kind

        _worker_logging(task.log_level)
        limit_native_threads(task.threads)
        reuse_freed_memory()
        for kind in task.kinds:
            if kind.name not in kind_names():
                register_kind(kind)
        bundle = verified_bundle(task.bundle_path, task.model_id)
        predictor = bundle.predictor(weights=task.weights, engine=task.engine,
                                     threads=task.threads)
        models[key] = WorkerModel(BatchScorer(bundle, predictor=predictor),
                                  getattr(predictor, "runtime", bundle.kind))
    return models[key]


def verified_bundle(path: str, model_id: str) -> Any:
    """The bundle at ``path`` (checksums verified on first use in this process), which must be
    the caller's: a worker that sees another bundle there refuses to score."""
    from ..model.bundle import Bundle

    with _LOCK:
        if (path, model_id) not in _BUNDLES:
            bundle = Bundle.load(path)
            if bundle.model_id != model_id:
                raise BundleError(
                    f"the bundle at {path} on this worker is model_id {bundle.model_id}, not the "
                    f"caller's {model_id}: workers must see the caller's bundle at the same path")
            _BUNDLES[(path, model_id)] = bundle
        return _BUNDLES[(path, model_id)]


class _DecodingThread:
    """A thread that decodes chunk after chunk for one calling thread of one process.

    Started on first use and kept: a new thread per chunk cost ~0.14 ms on every file
    (``perf stat`` task-clock, 20 alternations of 1,280 files, against decoding in the calling
    thread; a kept thread: no measurable cost). A thread stuck on a hung file is retired (it
    ends if the file ever returns) and the next chunk starts another.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.retired = False
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="xray-score-decode", daemon=True).start()

    def _serve(self) -> None:
        while not self.retired:
            job = self.jobs.get()
            try:
                job()
            except BaseException:  # noqa: BLE001 - the job's caller sees its unfilled slots
                log.debug("decoding job failed", exc_info=True)


def _decoding_thread() -> _DecodingThread:
    """This calling thread's decoding thread (a new one in a forked child: threads do not
    survive a fork)."""
    current = getattr(_LOCAL, "decoder", None)
    if current is None or current.pid != os.getpid():
        current = _LOCAL.decoder = _DecodingThread()
    return current


def decode_files(pre: Any, paths: list[str], timeout: float | None
                 ) -> tuple[list[FileResult], list[str], bool]:
    """Every file's canonical pixels or error, in order: ``(results, unfinished, hung)``.

    With a ``timeout``, a watchdog (this thread) waits on the decoding thread; a file that
    takes longer gets a ``timeout`` row, the decoding thread is abandoned, and the files after
    it are handed back as ``unfinished`` (the caller sends them again)."""
    if not timeout:
        return [pre.decode(p) for p in paths], [], False
    slots = [FileResult(path=str(p)) for p in paths]
    decoder = _decoding_thread()
    at = [(0, time.perf_counter())]  # which file the decoding thread is on, since when
    finished = threading.Event()

    def work() -> None:
        try:
            for i, path in enumerate(paths):
                if decoder.retired:  # the watchdog gave up on a file before this one
                    return
                at[0] = (i, time.perf_counter())  # one tuple, replaced at once
                pre.decode(path, into=slots[i])
            at[0] = (len(paths), time.perf_counter())
        finally:
            finished.set()

    decoder.jobs.put(work)
    while not finished.wait(max(0.0, at[0][1] + timeout - time.perf_counter())):
        index, since = at[0]
        if index < len(paths) and time.perf_counter() - since >= timeout:
            break  # stuck on this file
    else:
        return slots, [], False
    decoder.retired = True  # its thread stays on the file: the next chunk gets another
    _LOCAL.decoder = None
    stuck = slots[index]
    log.warning("%s: no result after %g s; abandoning it (its thread stays busy)",
                stuck.path, timeout)
    timed_out = FileResult(path=stuck.path, sha256=stuck.sha256,
                           error_kind=ErrorKind.TIMEOUT.value,
                           error=f"no result after {timeout:g} s; abandoned by the "
                                 "worker's watchdog", ms=timeout * 1000)
    return [*slots[:index], timed_out], [str(p) for p in paths[index + 1:]], True


def transform(pre: Any, results: list[FileResult]) -> None:
    """Replace the good results' pixels by model inputs, one batch call for the chunk; a file
    whose transform fails alone becomes an ``unreadable`` row, as in the per-file route."""
    good = [r for r in results if r.ok]
    try:
        for result, x in zip(good, pre.transform_batch([r.x for r in good]), strict=True):
            result.x = x
        return
    except Exception:  # noqa: BLE001 - pin the failure on its file
        log.debug("batch transform failed; transforming file by file", exc_info=True)
    for result in good:
        try:
            result.x = pre.transform_batch([result.x])[0]
        except Exception as exc:  # noqa: BLE001 - this file's failure
            result.x, result.error_kind = None, ErrorKind.UNREADABLE.value
            result.error = f"{type(exc).__name__}: {exc}"


def failure_result(path: str, kind: ErrorKind, message: str) -> FileResult:
    return FileResult(path=str(path), error_kind=kind.value, error=message)


def _worker_logging(level: int | None) -> None:
    """Workers log like the caller (stderr, same level) unless their host configured it."""
    root = logging.getLogger("xray_score")
    if level is None or root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [worker %(process)d]: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _dask_worker_address() -> str | None:
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None
