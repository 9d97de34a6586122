"""The ``xray-score`` command line: thin Click commands over the library.

Exit codes (for cron): 0 all scored, 10 some files failed (results still written),
2 usage or configuration error, 3 another run holds the lock, 70 internal error.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import BundleError, ExitCode, LockHeldError, UsageError

log = logging.getLogger("xray_score")

DEFAULT_RESULTS_DIR = "xray-score-results"


def _quiet_tensorflow(verbose: int) -> None:
    """Silence TensorFlow's C++ start-up chatter; Python warnings are left alone.

    oneDNN stays on (turning it off to hide its banner costs a third of CNN throughput);
    instead :mod:`xray_score.quiet` mutes file descriptor 2 while TensorFlow is imported
    and while a TFLite interpreter starts.
    """
    from .quiet import QUIET_ENV

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if verbose < 2:
        os.environ.setdefault(QUIET_ENV, "1")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%H:%M:%S"))
    root = logging.getLogger("xray_score")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbose < 2:
        logging.getLogger("absl").setLevel(logging.ERROR)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def handle_errors(func: Callable[..., int | None]) -> Callable[..., None]:
    """Map failures to the documented exit codes; never a bare traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = func(*args, **kwargs) or ExitCode.OK
        except (UsageError, BundleError, FileNotFoundError, NotADirectoryError) as exc:
            log.error("%s", exc)
            code = ExitCode.USAGE
        except LockHeldError as exc:
            log.error("%s", exc)
            code = ExitCode.LOCKED
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            log.error("interrupted; rows already written are kept")
            code = 130
        except Exception:  # noqa: BLE001 - the documented internal-error path
            log.exception("internal error (please report it with the log above)")
            code = ExitCode.INTERNAL
        sys.exit(code)

    return wrapper


class XrayGroup(click.Group):
    """Click group whose usage errors exit with 2 and whose crashes exit with 70."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("standalone_mode", True)
        try:
            return super().main(*args, **kwargs)
        except SystemExit:
            raise
        except Exception:  # noqa: BLE001
            logging.getLogger("xray_score").exception("internal error")
            sys.exit(ExitCode.INTERNAL)


@click.group(cls=XrayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xray-score")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """Score pediatric chest X-rays (pneumonia vs normal) in batches.

    Exit codes: 0 all scored; 10 some files failed (their rows say why); 2 usage or
    configuration error; 3 another run holds the lock; 70 internal error.
    """
    _quiet_tensorflow(verbose)
    _setup_logging(verbose, quiet)


def _resolve_model(model: str | None, kind: str = "default"):
    from .bundle import Bundle
    from .resources import default_model

    return Bundle.load(model if model else default_model(kind))


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    from .spec import parse_override

    return dict(parse_override(p) for p in pairs)


# ----------------------------------------------------------------------------- train
@main.group()
def train() -> None:
    """Train a model bundle from a labeled folder (NORMAL/ and PNEUMONIA/ sub-folders)."""


def _train_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Labeled training folder."),
        click.option("--val", type=click.Path(exists=True, file_okay=False),
                     help="Explicit labeled validation folder; its patients leave training."),
        click.option("--out", required=True, type=click.Path(), help="Bundle directory."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a pipeline value, e.g. --set training.epochs=2."),
        click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@train.command("baseline")
@_train_options
@click.option("--pipeline", default="baseline", show_default=True,
              help="Pipeline YAML (path or shipped name).")
@handle_errors
def train_baseline(data: str, val: str | None, out: str, overrides: tuple[str, ...],
                   jobs: int, pipeline: str) -> int:
    """HOG/LBP features + LightGBM."""
    from .spec import load_pipeline
    from .training import train_bundle

    spec = load_pipeline(pipeline, _overrides(overrides))
    bundle = train_bundle("baseline", data, out, spec, val=val, n_jobs=jobs)
    click.echo(json.dumps({"bundle": str(out), "model_id": bundle.model_id,
                           "validation": bundle.meta["validation_metrics"]}))
    return ExitCode.OK


@train.command("cnn")
@_train_options
@click.option("--pipeline", default="cnn", show_default=True,
              help="Pipeline YAML (path or shipped name).")
@click.option("--weights", help="Backbone weights: a file, a folder, 'imagenet' or 'none' "
              "(default: the pipeline's, or $XRAY_SCORE_WEIGHTS).")
@handle_errors
def train_cnn(data: str, val: str | None, out: str, overrides: tuple[str, ...], jobs: int,
              pipeline: str, weights: str | None) -> int:
    """A Keras CNN (embedding backbone + head, optionally fine-tuned)."""
    from .spec import load_pipeline
    from .training import train_bundle

    spec = load_pipeline(pipeline, _overrides(overrides))
    bundle = train_bundle("cnn", data, out, spec, val=val, n_jobs=jobs, weights=weights)
    click.echo(json.dumps({"bundle": str(out), "model_id": bundle.model_id,
                           "validation": bundle.meta["validation_metrics"]}))
    return ExitCode.OK


# ----------------------------------------------------------------------------- batch
def default_out(folder: Path, model_id: str, prefix: str = "") -> Path:
    """``./xray-score-results/<folder>-<model_id>-<timestamp>.csv``, never an existing file."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{prefix}{folder.resolve().name or 'root'}-{model_id}-{stamp}"
    base = Path(DEFAULT_RESULTS_DIR) / name
    candidate, n = Path(f"{base}.csv"), 1
    while candidate.exists() or candidate.with_suffix(".html").exists():
        candidate, n = Path(f"{base}-{n}.csv"), n + 1
    return candidate


_BATCH_CONFIG_KEYS = ("folder", "model", "out", "fmt", "ledger", "jobs", "batch_size",
                      "timeout", "weights", "engine", "report", "backend", "scheduler",
                      "num_parts", "part_id")
ENGINES = ("auto", "keras", "tflite")  # xray_score.lite.ENGINES, without importing it here


def cnn_runtime_options(command: Any) -> Any:
    """``--weights`` and ``--engine``: how a CNN bundle's network is loaded and run."""
    command = click.option(
        "--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
        help="CNN runtime: auto (the bundle's TFLite network when it has one, else Keras), "
        "keras, or tflite (converts at start when the bundle has none).")(command)
    return click.option(
        "--weights", help="CNN bundles with a referenced backbone: its weights file/folder."
    )(command)


def _cnn_kwargs(weights: str | None, engine: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"weights": weights} if weights else {}
    if engine and engine != "auto":
        if engine not in ENGINES:
            raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        kwargs["engine"] = engine
    return kwargs


@main.command()
@click.argument("folder", required=False, type=click.Path())
@click.option("--model", "-m",
              help="Model bundle directory (default: the shipped CNN, else the shipped baseline).")
@click.option("--out", "-o", type=click.Path(dir_okay=False),
              help=f"Results file, rewritten at the end of every run (default: ./"
              f"{DEFAULT_RESULTS_DIR}/<folder>-<model_id>-<time>.csv).")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True, help="Format of --out.")
@click.option("--ledger", type=click.Path(dir_okay=False),
              help="Results ledger (SQLite). Default: <out>.ledger.sqlite with --out, else "
              f"./{DEFAULT_RESULTS_DIR}/ledger.sqlite.")
@click.option("--jobs", "-j", default=2, show_default=True,
              help="Worker processes (Dask: tasks in flight; default all cluster threads).")
@click.option("--batch-size", default=64, show_default=True, help="Images per model call.")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds one file may take to decode before it is an error row.")
@click.option("--continue", "resume", is_flag=True, hidden=True,
              help="Kept for old scripts: every run continues from the ledger.")
@cnn_runtime_options
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write an HTML run summary beside the results (same name, .html).")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky",
              show_default=True, help="Where decoding runs: local processes or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address (--backend dask).")
@click.option("--num-parts", default=1, show_default=True, type=click.IntRange(min=1),
              help="Split the job into this many shards (needs --ledger shared by all).")
@click.option("--part-id", default=0, show_default=True, type=click.IntRange(min=0),
              help="Which shard this run scores (0 .. num-parts - 1).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="Job YAML (e.g. pipelines/nightly.yaml); command-line options override it.")
@click.pass_context
@handle_errors
def batch(ctx: click.Context, folder: str | None, model: str | None, out: str | None, fmt: str,
          ledger: str | None, jobs: int, batch_size: int, timeout: float, resume: bool,
          weights: str | None, engine: str, report: bool, backend: str,
          scheduler: str | None, num_parts: int, part_id: int, config: str | None) -> int:
    """Score every image under FOLDER into a per-image results file, incrementally.

    Scores are kept in a ledger keyed by image content and model: a re-run scores only new
    or changed images (and retries transient errors), then rewrites --out for the whole
    folder (or this shard). A second run on the same ledger and shard exits with 3.
    """
    opts = {"folder": folder, "model": model, "out": out, "fmt": fmt, "ledger": ledger,
            "jobs": jobs, "batch_size": batch_size, "timeout": timeout, "weights": weights,
            "engine": engine, "report": report, "backend": backend, "scheduler": scheduler,
            "num_parts": num_parts, "part_id": part_id}
    from_config = _batch_config(ctx, Path(config)) if config else {}
    opts.update(from_config)
    jobs_given = ("jobs" in from_config
                  or ctx.get_parameter_source("jobs") is not click.core.ParameterSource.DEFAULT)
    job, bundle = _batch_job(opts, resume, jobs_given)
    log.info("scoring %s with %s (%s, model_id %s) into %s", job.folder, bundle.name,
             bundle.kind, bundle.model_id, job.out)
    from .incremental import run_job

    started = time.time()
    summary, code = run_job(bundle, job)
    if opts["report"]:
        from .workflows import write_batch_summary

        try:
            summary["report"] = str(write_batch_summary(job.out, bundle, _command(), started))
        except Exception:  # noqa: BLE001 - the results are written; the summary is a courtesy
            log.exception("could not write the HTML run summary (results are in %s)", job.out)
    click.echo(json.dumps(summary))
    return code


def _batch_config(ctx: click.Context, path: Path) -> dict[str, Any]:
    """The job YAML's values for the options not given on the command line."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of batch options")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    values = {("fmt" if k == "format" else k): v for k, v in values.items()}
    unknown = set(values) - set(_BATCH_CONFIG_KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown option(s) {', '.join(sorted(unknown))}")
    cli_given = {name for name in _BATCH_CONFIG_KEYS
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    return {k: v for k, v in values.items() if k not in cli_given}


def _batch_job(opts: dict[str, Any], resume: bool, jobs_given: bool) -> tuple[Any, Any]:
    """Check the options and build the :class:`xray_score.incremental.Job`."""
    from .incremental import Job

    if not opts["folder"]:
        raise UsageError("no FOLDER given (as an argument or in --config)")
    root = Path(opts["folder"])
    if not root.exists():
        raise UsageError(f"no such folder: {root}")
    if resume and not (opts["out"] or opts["ledger"]):
        raise UsageError("--continue needs --out (the results file to continue)")
    if opts["fmt"] not in ("csv", "parquet"):
        raise UsageError(f"--format must be csv or parquet, not {opts['fmt']!r}")
    num_parts, part_id = int(opts["num_parts"]), int(opts["part_id"])
    if not 0 <= part_id < num_parts:
        raise UsageError(f"--part-id must be in 0..{num_parts - 1}")
    if num_parts > 1 and not opts["ledger"]:
        raise UsageError("--num-parts needs --ledger: one ledger shared by every shard")
    if (opts["backend"] == "dask") != bool(opts["scheduler"]):
        raise UsageError("--backend dask and --scheduler ADDRESS go together")
    bundle = _resolve_model(opts["model"])
    suffix = ".parquet" if opts["fmt"] == "parquet" else ".csv"
    out = Path(opts["out"]) if opts["out"] else default_out(root, bundle.model_id).with_suffix(
        suffix)
    if opts["ledger"]:
        ledger = Path(opts["ledger"])
    elif opts["out"]:
        ledger = out.with_name(out.name + ".ledger.sqlite")
    else:
        ledger = Path(DEFAULT_RESULTS_DIR) / "ledger.sqlite"
    n_jobs = int(opts["jobs"]) if jobs_given or opts["backend"] != "dask" else -1
    job = Job(folder=root, out=out, ledger=ledger, fmt=opts["fmt"], n_jobs=n_jobs,
              timeout=float(opts["timeout"]) if opts["timeout"] else None,
              batch_size=int(opts["batch_size"]), num_parts=num_parts, part_id=part_id,
              backend=opts["backend"], scheduler=opts["scheduler"],
              predictor_kwargs=_cnn_kwargs(opts["weights"], opts.get("engine")),
              argv=sys.argv[1:])
    return job, bundle


def _command() -> str:
    return "xray-score " + " ".join(sys.argv[1:])


# ----------------------------------------------------------------------------- evaluate
@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", help="Model bundle (default: the shipped CNN, else baseline).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Report HTML "
              f"(default: ./{DEFAULT_RESULTS_DIR}/evaluate-<folder>-<model_id>-<time>.html).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False),
              help="Per-image results CSV (default: beside the report).")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@click.option("--no-thumbnails", is_flag=True, help="Leave the image gallery out of the report.")
@cnn_runtime_options
@handle_errors
def evaluate(folder: str, model: str | None, out: str | None, csv_out: str | None, jobs: int,
             no_thumbnails: bool, weights: str | None, engine: str) -> int:
    """Score a labeled FOLDER and write an HTML evaluation report with CIs."""
    from .workflows import evaluate_folder

    bundle = _resolve_model(model)
    out_path = Path(out) if out else default_out(Path(folder), bundle.model_id,
                                                 "evaluate-").with_suffix(".html")
    csv_path = Path(csv_out) if csv_out else out_path.with_suffix(".csv")
    kwargs = _cnn_kwargs(weights, engine)
    report, stats = evaluate_folder(bundle, Path(folder), out_path, csv_path, jobs,
                                    thumbnails=not no_thumbnails, command=_command(), **kwargs)
    click.echo(json.dumps({"report": str(report), "results": str(csv_path),
                           "model_id": bundle.model_id, **stats.as_dict()}))
    return ExitCode.SOME_FAILED if stats.n_error else ExitCode.OK


# ----------------------------------------------------------------------------- compare
@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--baseline", help="Baseline bundle (default: the shipped one).")
@click.option("--cnn", help="CNN bundle (default: the shipped one).")
@click.option("--model", "-m", "extra", multiple=True,
              help="More bundles to compare (repeatable), e.g. pipelines/seeds models.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Report HTML.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False),
              help="Per-image CSV with every model's score (default: beside the report).")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@click.option("--timeout", default=60.0, show_default=True, help="Per-file decode limit (s).")
@cnn_runtime_options
@handle_errors
def compare(folder: str, baseline: str | None, cnn: str | None, extra: tuple[str, ...],
            out: str | None, csv_out: str | None, jobs: int, timeout: float,
            weights: str | None, engine: str) -> int:
    """Score FOLDER with several bundles (one decode per image) and test the differences."""
    from .bundle import Bundle
    from .workflows import compare_folder

    bundles = [_resolve_model(baseline, "baseline"), _resolve_model(cnn, "cnn")]
    bundles += [Bundle.load(p) for p in extra]
    ids = [b.model_id for b in bundles]
    if len(set(ids)) != len(ids):
        raise UsageError("the same bundle was given twice")
    out_path = Path(out) if out else default_out(Path(folder), "-".join(ids),
                                                 "compare-").with_suffix(".html")
    csv_path = Path(csv_out) if csv_out else out_path.with_suffix(".csv")
    kwargs = _cnn_kwargs(weights, engine)
    report, wide = compare_folder(bundles, Path(folder), out_path, csv_path, jobs, timeout,
                                  command=_command(), **kwargs)
    failed = int((wide[[f"status_{i}" for i in ids]] != "ok").any(axis=1).sum())
    click.echo(json.dumps({"report": str(report), "results": str(csv_path), "models": ids,
                           "images": len(wide), "images_with_errors": failed}))
    return ExitCode.SOME_FAILED if failed else ExitCode.OK


# ----------------------------------------------------------------------------- embed
@main.command()
@click.argument("folder", type=click.Path(exists=True))
@click.option("--model", "-m", help="CNN bundle (default: the shipped CNN).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Embeddings file: .parquet (default) or .csv.")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@cnn_runtime_options
@handle_errors
def embed(folder: str, model: str | None, out: str, jobs: int, weights: str | None,
          engine: str) -> int:
    """Export the CNN embedding of every image under FOLDER."""
    from .workflows import embed_folder

    bundle = _resolve_model(model, "cnn")
    kwargs = _cnn_kwargs(weights, engine)
    stats = embed_folder(bundle, Path(folder), Path(out), jobs, **kwargs)
    click.echo(json.dumps({"out": out, "model_id": bundle.model_id, **stats.as_dict()}))
    return ExitCode.SOME_FAILED if stats.n_error else ExitCode.OK


if __name__ == "__main__":  # pragma: no cover
    main()
