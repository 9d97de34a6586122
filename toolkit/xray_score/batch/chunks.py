"""A chunk of files scored where the files are: the worker-side half of ``batch``.

A task is a list of paths. The worker (a local joblib/loky process, or a thread of a Dask
worker) reads each file and hashes it, decodes it to canonical pixels, transforms the chunk's
pixels in one batch (HOG/LBP for the baseline), runs the model, applies the bundle's calibration
and threshold, and returns result rows: a few hundred bytes per file, never pixels. A watchdog
(:mod:`xray_score.batch.watchdog`) gives up on a file whose decoding takes longer than
``timeout`` seconds, and on a chunk whose features and model take longer than
:meth:`ChunkTask.finish_limit`. The caller only plans, commits rows to its
ledger and exports (:mod:`xray_score.batch.runners`, :mod:`xray_score.batch.job`).

The bundle is loaded and verified once per process, and must be the caller's (same
``model_id``); each thread gets its own model (a TFLite interpreter is not thread-safe), with
``threads`` threads of its own (1: parallelism comes from the workers).
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import BundleError, ErrorKind
from ..io.preprocess import FileResult
from .hardlimit import deadline
from .memory import reuse_freed_memory
from .scorer import grouped, limit_native_threads
from .watchdog import Watched, run_watched, timed_out

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
    model_timeout: float | None = None  # see finish_limit
    hard_limit: float | None = None  # seconds; past them the process ends (see hardlimit)

    def __call__(self, paths: list[str]) -> ChunkResult:
        with deadline(self.hard_limit):
            return self._score(paths)

    def _score(self, paths: list[str]) -> ChunkResult:
        model = worker_model(self)
        pre = self.preprocessor or model.scorer.preprocessor

        def finish(results: list[FileResult]) -> list[dict[str, Any]]:
            transform(pre, results)
            return [row for batch in grouped(results, self.batch_size)
                    for row in model.scorer.rows(batch)]

        limit = self.finish_limit(len(paths))
        watched = run_watched(pre, paths, self.timeout, finish, limit)
        result = ChunkResult(rows=watched.rows or [], runtime=model.runtime,
                             worker=_dask_worker_address(), hung=watched.stuck is not None)
        if watched.stuck is not None and watched.stuck < len(paths):  # a file's decoding hung
            # its row only: the other files go back (those before it too: scoring them here,
            # unwatched, could hang this thread as well)
            stuck = watched.slots[watched.stuck]
            result.rows = model.scorer.rows([timed_out(stuck, float(self.timeout or 0))])
            result.unfinished = [p for i, p in enumerate(paths) if i != watched.stuck]
        elif watched.stuck is not None:
            self._stalled(watched, float(limit or 0), model.scorer, result)
        result.nbytes = len(pickle.dumps(result.rows, protocol=pickle.HIGHEST_PROTOCOL))
        return result

    def finish_limit(self, n_files: int) -> float | None:
        """Seconds a chunk of ``n_files`` may spend in its features and model once decoded:
        ``model_timeout``, else ``timeout`` per model batch and one more, plus 60 (room for a
        network's first call); none without a timeout."""
        if self.model_timeout is not None:
            return self.model_timeout
        if not self.timeout:
            return None
        return self.timeout * (-(-n_files // max(1, self.batch_size)) + 1) + 60

    def _stalled(self, watched: Watched, limit: float, scorer: Any, result: ChunkResult
                 ) -> None:
        """A chunk whose features or model ran past :meth:`finish_limit`: the files that
        failed to decode get their rows; the others are suspects, each sent again alone (a
        file that stalls on its own gets a ``timeout`` row). The stuck thread keeps this
        thread's model: the next chunk loads another."""
        forget_model(self)
        failed_before = set(watched.failed_before)
        failed = [watched.slots[i] for i in sorted(failed_before)]
        suspects = [s for i, s in enumerate(watched.slots) if i not in failed_before]
        log.warning("a chunk of %d files had no result from its features or model after "
                    "%g s; abandoning it (its thread stays busy)", len(suspects), limit)
        if len(suspects) == 1:
            failed.append(timed_out(suspects[0], limit, "the features or the model"))
        else:
            result.suspects = [s.path for s in suspects]
        result.rows = [row for f in failed for row in scorer.rows([f])]

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
    left (the others of a chunk where a file hung, or suspects of a stalled model:
    :meth:`resend`)."""

    rows: list[dict[str, Any]]
    unfinished: list[str] = field(default_factory=list)
    hung: bool = False  # a file hung: its thread is abandoned (Dask restarts the worker)
    runtime: str | None = None  # what ran the model
    worker: str | None = None  # the Dask worker's address
    nbytes: int = 0  # pickled size of the rows: what travelled back
    failures: list[FileResult] = field(default_factory=list)  # files that killed a worker
    suspects: list[str] = field(default_factory=list)  # in a chunk that stalled its model

    def resend(self) -> list[list[str]]:
        """Chunks to send again: ``unfinished`` as one, and each suspect on its own."""
        return ([self.unfinished] if self.unfinished else []) + [[p] for p in self.suspects]


@dataclass
class WorkerModel:
    """A verified bundle and this thread's model, as a BatchScorer (rows, calibration)."""

    scorer: Any
    runtime: str


_BUNDLES: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()
_LOCAL = threading.local()


def _model_key(task: ChunkTask) -> tuple[Any, ...]:
    return (task.bundle_path, task.model_id, task.weights, task.engine, task.threads)


def forget_model(task: ChunkTask) -> None:
    """Drop this thread's model for ``task`` (a stuck thread still holds it)."""
    getattr(_LOCAL, "models", {}).pop(_model_key(task), None)


def worker_model(task: ChunkTask) -> WorkerModel:
    """This thread's model for ``task`` (bundle verified once per process, model per thread)."""
    from .scorer import BatchScorer

    key = _model_key(task)
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
