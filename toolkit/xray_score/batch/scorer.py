"""The batch runner: load a model once, stream files through workers, write each row as it lands.

Workers (joblib, see :mod:`xray_score.batch.parallel`) decode and preprocess; the main process owns
the model, predicts in batches and hands rows to a sink batch by batch (a CSV here, the results
ledger for ``batch``, see :mod:`xray_score.batch.job`). The model and the workers' preprocessing
are built on first use, so a run with nothing to score never loads them (nor TensorFlow).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import ErrorKind
from ..io.text import csv_safe, display_path
from ..labels import CLASS_NAMES
from ..model.domain import DOMAIN_COLUMNS
from ..model.kinds import DomainAware

if TYPE_CHECKING:
    from ..io.preprocess import FileResult
    from ..model.bundle import Bundle

log = logging.getLogger(__name__)

COLUMNS = ["path", "sha256", "model_id", "p_pneumonia", "predicted_label", "threshold",
           "status", "error_kind", "error", "width", "height", "ms"]
LABEL_COLUMN = "true_label"
DICOM_COLUMNS = ["patient_id", "study_instance_uid", "sop_instance_uid", "note"]
EXTRA_COLUMNS = [*DOMAIN_COLUMNS, *DICOM_COLUMNS]  # kept in the ledger's extra JSON


def result_columns(bundle: Bundle, labeled: bool, dicom: bool) -> list[str]:
    """The columns of a results file: the row schema, the domain check when the bundle has
    one, the true label on labeled folders, DICOM ids when there are DICOM files."""
    return (COLUMNS + (DOMAIN_COLUMNS if bundle.meta.get("domain") else [])
            + ([LABEL_COLUMN] if labeled else []) + (DICOM_COLUMNS if dicom else []))
_DICOM_KEYS = {"patient_id": "PatientID", "study_instance_uid": "StudyInstanceUID",
               "sop_instance_uid": "SOPInstanceUID", "note": "note"}


def limit_native_threads(threads: int) -> None:
    """BLAS/OpenMP pools of this process get ``threads`` threads: in a scoring process the
    parallelism comes from the workers (joblib limits its own workers the same way; a Dask
    worker or the calling process needs it set here)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=max(1, int(threads)))


def grouped(results: Iterable[FileResult], size: int) -> Iterator[list[FileResult]]:
    """Failed files alone as they come, good ones in batches of ``size`` (the model's)."""
    pending: list[FileResult] = []
    for result in results:
        if not result.ok:
            yield [result]
            continue
        pending.append(result)
        if len(pending) >= max(1, int(size)):
            yield pending
            pending = []
    if pending:
        yield pending


class RowSink(Protocol):
    """Where :meth:`BatchScorer.run` puts each batch of rows (durable when ``write`` returns)."""

    def write(self, rows: list[dict[str, Any]]) -> None: ...


class RowList(list):
    """A sink that keeps the rows in memory (``evaluate`` writes them once, at the end)."""

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.extend(rows)


class CsvSink:
    """Append-only CSV of result rows; each :meth:`write` is flushed and fsynced."""

    def __init__(self, path: str | os.PathLike, columns: list[str], append: bool = False):
        self.path = Path(path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = append and self.path.is_file() and self.path.stat().st_size > 0
        self._fh = open(  # noqa: SIM115 - closed by close()/__exit__
            self.path, "a" if exists else "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=columns, extrasaction="ignore")
        if not exists:
            self._writer.writeheader()
            self._sync()

    def write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._writer.writerows({k: csv_safe(v) for k, v in row.items()} for row in rows)
            self._sync()

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CsvSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class RunStats:
    """What a run did, for logs, summaries and the exit code."""

    n_files: int = 0
    n_ok: int = 0
    n_error: int = 0
    errors_by_kind: Counter = field(default_factory=Counter)
    seconds: float = 0.0  # scoring, from the first file sent to the last row written
    startup_seconds: float | None = None  # until the first batch of rows (workers, model)
    startup_rows: int = 0  # rows in that first batch
    n_out_of_domain: int = 0  # scored, but far from what the model was trained on
    bytes_received: int = 0  # result rows' pickled size, as workers sent them back

    def record(self, rows: list[dict[str, Any]], since_start: float) -> None:
        """Count a batch of rows written ``since_start`` seconds into the run."""
        if self.startup_seconds is None:
            self.startup_seconds, self.startup_rows = since_start, len(rows)
        for row in rows:
            self.n_out_of_domain += row.get("in_domain") == "false"
            if row["status"] == "ok":
                self.n_ok += 1
            else:
                self.n_error += 1
                self.errors_by_kind[row["error_kind"]] += 1

    @property
    def images_per_second_including_startup(self) -> float | None:
        """Files per second over the whole scoring phase (worker start and model load too)."""
        n = self.n_ok + self.n_error
        return round(n / self.seconds, 2) if n and self.seconds else None

    @property
    def images_per_second_after_startup(self) -> float | None:
        """Files per second once the first batch is out (the pipeline's running speed)."""
        n = self.n_ok + self.n_error - self.startup_rows
        left = self.seconds - (self.startup_seconds or 0.0)
        return round(n / left, 2) if n > 0 and left > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.n_files, "scored": self.n_ok, "errors": self.n_error,
                "errors_by_kind": dict(self.errors_by_kind),
                "out_of_domain": self.n_out_of_domain,
                "seconds": round(self.seconds, 3),
                "images_per_second_including_startup": self.images_per_second_including_startup,
                "images_per_second_after_startup": self.images_per_second_after_startup}


class BatchScorer:
    """Scores files with one bundle: preprocessing in workers, batched prediction here."""

    def __init__(self, bundle: Bundle, n_jobs: int = 2, timeout: float | None = 60.0,
                 batch_size: int = 64, predictor: Any = None, **predictor_kwargs: Any):
        self.bundle = bundle
        if predictor is not None:
            self.predictor = predictor
        self._predictor_kwargs = predictor_kwargs
        self.n_jobs = n_jobs
        self.timeout = timeout
        self.batch_size = batch_size

    @cached_property
    def predictor(self) -> Any:
        """The bundle's model, loaded on first use (a CNN bundle without a TFLite twin, or with
        ``engine="keras"``, imports TensorFlow here). BLAS runs single-threaded from then on:
        its small products (the domain check) only spin against the decode workers."""
        limit_native_threads(1)
        return self.bundle.predictor(**self._predictor_kwargs)

    @cached_property
    def preprocessor(self) -> Any:
        """The picklable worker-side preprocessing (built on first use)."""
        return self.bundle.preprocessor()

    def iter_results(self, paths: Iterable[str | os.PathLike], preprocessor: Any = None
                     ) -> Iterator[FileResult]:
        """Preprocessed files in completion order; hangs and crashes become error results.

        ``preprocessor`` replaces the bundle's own (``compare`` passes a MultiPreprocessor).
        """
        from ..io.preprocess import FileResult
        from .parallel import TaskFailure, resilient_map

        for _, path, outcome in resilient_map(preprocessor or self.preprocessor,
                                              [str(p) for p in paths],
                                              n_jobs=self.n_jobs, timeout=self.timeout):
            if isinstance(outcome, TaskFailure):
                outcome = FileResult(path=path, error_kind=outcome.kind.value,
                                     error=outcome.message)
            yield outcome

    def iter_batches(self, paths: Iterable[str | os.PathLike], preprocessor: Any = None
                     ) -> Iterator[list[FileResult]]:
        """Groups of results: failed files alone at once, good ones in model-sized batches."""
        yield from grouped(self.iter_results(paths, preprocessor), self.batch_size)

    def predict(self, batch: list[FileResult], preprocessor: Any = None) -> np.ndarray:
        """Calibrated probabilities for a batch of good results (NaN where the model failed)."""
        return self.predict_with_domain(batch, preprocessor)[0]

    def predict_with_domain(self, batch: list[FileResult], preprocessor: Any = None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and domain scores (NaN: failed, or no domain check)."""
        x = (preprocessor or self.preprocessor).stack([r.x for r in batch])
        try:
            if isinstance(self.predictor, DomainAware):
                raw, domain = self.predictor.predict_with_domain(x)
            else:
                raw, domain = self.predictor.predict_raw(x), None
        except (MemoryError, Exception) as exc:  # noqa: BLE001 - isolate the failing input
            if len(batch) > 1:  # smaller calls need less memory and pin a bad input down
                parts = [self.predict_with_domain([r], preprocessor) for r in batch]
                return (np.concatenate([p for p, _ in parts]),
                        np.concatenate([d for _, d in parts]))
            oom = isinstance(exc, MemoryError)
            kind = ErrorKind.OUT_OF_MEMORY if oom else ErrorKind.MODEL_ERROR
            batch[0].error_kind = kind.value
            batch[0].error = ("out of memory running the model (retried on the next run)"
                              if oom else f"{type(exc).__name__}: {exc}")
            return np.array([np.nan]), np.array([np.nan])
        domain = np.full(len(batch), np.nan) if domain is None else np.asarray(domain, float)
        return self.bundle.operating_point.probability(raw), domain

    def rows(self, batch: list[FileResult], labels: dict[str, str] | None = None
             ) -> list[dict[str, Any]]:
        """Result rows (the CSV/ledger schema, values as text) for one batch."""
        nothing = np.array([np.nan])
        probs, domains = self.predict_with_domain(batch) if batch[0].ok else (nothing, nothing)
        op = self.bundle.operating_point
        threshold = op.threshold
        labels_of = [CLASS_NAMES[int(f)] for f in op.decide(probs)]  # the one decision
        out = []
        values = zip(np.asarray(probs).tolist(), np.asarray(domains).tolist(), strict=True)
        for result, (p, d), label in zip(batch, values, labels_of, strict=True):
            row = {
                "path": display_path(result.path),
                "sha256": result.sha256 or "",
                "model_id": self.bundle.model_id,
                "width": result.width if result.width is not None else "",
                "height": result.height if result.height is not None else "",
                "ms": round(result.ms, 2),
                "domain_score": f"{d:.4f}" if math.isfinite(d) else "",
                "in_domain": ("true" if d <= 1.0 else "false") if math.isfinite(d) else "",
            }
            if result.ok and math.isfinite(p):
                row.update(p_pneumonia=f"{p:.6f}", threshold=f"{threshold:.6f}", status="ok",
                           predicted_label=label, error_kind="", error="")
            else:
                row.update(p_pneumonia="", threshold="", predicted_label="", status="error",
                           error_kind=result.error_kind or ErrorKind.MODEL_ERROR.value,
                           error=result.error or "")
            if labels is not None:
                row[LABEL_COLUMN] = labels.get(result.path, "")
            for column, key in _DICOM_KEYS.items():
                value = result.extra.get(key)
                row[column] = "" if value is None else str(value)
            out.append(row)
        return out

    def run(self, paths: list[str | os.PathLike], sink: RowSink,
            labels: dict[str, str] | None = None, stats: RunStats | None = None) -> RunStats:
        """Score ``paths`` into ``sink``; returns counts. Rows land batch by batch."""
        stats = stats or RunStats()
        stats.n_files += len(paths)
        start = time.perf_counter()
        last_log = start
        for batch in self.iter_batches(paths):
            rows = self.rows(batch, labels)
            sink.write(rows)
            stats.record(rows, time.perf_counter() - start)
            if time.perf_counter() - last_log > 10:
                last_log = time.perf_counter()
                log.info("%d/%d files done", stats.n_ok + stats.n_error, len(paths))
        stats.seconds += time.perf_counter() - start
        return stats

