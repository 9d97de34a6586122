"""What every command shares: error handling and exit codes, model resolution, output names,
the CNN runtime options, and the metadata a report shows about its run."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import ExitCode, LockHeldError, UsageError

log = logging.getLogger("xray_score")

DEFAULT_RESULTS_DIR = "xray-score-results"
ENGINES = ("auto", "keras", "tflite")  # xray_score.deep.lite.ENGINES, without importing it


def single_threaded_blas() -> None:
    """Before ``batch`` imports NumPy: OpenBLAS gets one thread unless the user chose
    otherwise. Scoring processes run BLAS single-threaded anyway (the parallelism is the
    workers'); OpenBLAS starting its threads at import cost ~0.2 s of CPU a run here, in the
    calling process and in every loky worker (which inherit the setting)."""
    import os

    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def handle_errors(func: Callable[..., int | None]) -> Callable[..., None]:
    """Map failures to the documented exit codes; never a bare traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = func(*args, **kwargs) or ExitCode.OK
        except UsageError as exc:
            log.error("%s", exc)
            code = _failed(ExitCode.USAGE, str(exc))
        except LockHeldError as exc:
            log.error("%s", exc)
            code = _failed(ExitCode.LOCKED, str(exc))
        except (click.exceptions.Exit, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            code = getattr(exc, "exit_code", 130)
            if not getattr(exc, "summary", None):
                log.warning("interrupted; files already written are kept")
            _failed(code, "interrupted", getattr(exc, "summary", None))
        except Exception as exc:  # noqa: BLE001 - the documented internal-error path
            log.exception("internal error (please report it with the log above)")
            code = _failed(ExitCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        sys.exit(code)

    return wrapper


def _failed(code: int, message: str, summary: dict[str, Any] | None = None) -> int:
    """The JSON line of a command that did not finish (cron logs read one line per run)."""
    echo_summary({**(summary or {}), "exit_code": int(code), "error": message})
    return code


def require_images(folder: Path) -> list[str]:
    """The images under ``folder``; a UsageError when there are none (evaluate, compare,
    embed: a report or table of nothing is an error, unlike a nightly batch with no news)."""
    from ..io.discover import discover_files

    paths = discover_files(folder)
    if not paths:
        raise UsageError(f"no images found in {folder}")
    return paths


def resolve_model(model: str | None, kind: str = "default") -> Any:
    """The bundle at ``model``, or the shipped one of ``kind``."""
    from ..model.bundle import Bundle
    from ..resources import default_model

    return Bundle.load(model if model else default_model(kind))


def default_out(folder: Path, model_id: str, prefix: str = "") -> Path:
    """``./xray-score-results/<folder>-<model_id>-<timestamp>.csv``, never an existing file."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{prefix}{folder.resolve().name or 'root'}-{model_id}-{stamp}"
    base = Path(DEFAULT_RESULTS_DIR) / name
    candidate, n = Path(f"{base}.csv"), 1
    while candidate.exists() or candidate.with_suffix(".html").exists():
        candidate, n = Path(f"{base}-{n}.csv"), n + 1
    return candidate


def cnn_runtime_options(command: Any) -> Any:
    """``--weights`` and ``--engine``: how a CNN bundle's network is loaded and run."""
    command = click.option(
        "--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
        help="CNN runtime: auto (the bundle's TFLite network when it has one, else Keras), "
        "keras, or tflite (converts at start when the bundle has none).")(command)
    return click.option(
        "--weights", help="CNN bundles with a referenced backbone: its weights file/folder."
    )(command)


def runtime_options(weights: str | None, engine: str | None) -> dict[str, Any]:
    """Keyword arguments for ``Bundle.predictor`` (every kind accepts them)."""
    if engine and engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return {"weights": weights or None, "engine": engine or "auto"}


def command_line() -> str:
    return "xray-score " + " ".join(sys.argv[1:])


def run_meta(command: str, started: float, bundles: list[Any], **extra: Any) -> dict:
    """What a report says about the run that made it."""
    return {"command": command or command_line(), "xray_score_version": __version__,
            "model_ids": ", ".join(b.model_id for b in bundles),
            "seconds": round(time.time() - started, 1), **extra}


def report_meta(bundle: Any) -> dict[str, Any]:
    """bundle.json as the reports read it (training curves under ``history``)."""
    return {**bundle.meta, "history": bundle.history, "model_id": bundle.model_id}


def echo_summary(summary: dict[str, Any]) -> None:
    """The one JSON line a command prints on stdout (for cron logs)."""
    click.echo(json.dumps(summary))
