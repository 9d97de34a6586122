"""``xray-score batch``: incremental scoring of a folder into a results file and a run summary."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..io.atomic import FORMATS
from . import common
from .common import DEFAULT_RESULTS_DIR, cnn_runtime_options, handle_errors

log = logging.getLogger("xray_score")

CONFIG_KEYS = ("folder", "model", "out", "fmt", "ledger", "jobs", "batch_size", "timeout",
               "weights", "engine", "report", "backend", "scheduler", "num_parts", "part_id")
BACKENDS = ("auto", "fork", "loky", "dask")


@click.command()
@click.argument("folder", required=False, type=click.Path())
@click.option("--model", "-m",
              help="Model bundle directory (default: the shipped CNN, else the shipped baseline).")
@click.option("--out", "-o", type=click.Path(dir_okay=False),
              help=f"Results file, rewritten at the end of every run (default: ./"
              f"{DEFAULT_RESULTS_DIR}/<folder>-<model_id>-<time>.csv).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv",
              show_default=True, help="Format of --out.")
@click.option("--ledger", type=click.Path(dir_okay=False),
              help="Results ledger (SQLite). Default: <out>.ledger.sqlite with --out, else "
              f"./{DEFAULT_RESULTS_DIR}/ledger.sqlite.")
@click.option("--jobs", "-j", default=2, show_default=True,
              help="Worker processes (Dask: chunks in flight; default 2 per worker thread).")
@click.option("--batch-size", default=64, show_default=True, help="Images per model call.")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds one file may take to decode before it is an error row.")
@click.option("--continue", "resume", is_flag=True, hidden=True,
              help="Kept for old scripts: every run continues from the ledger.")
@cnn_runtime_options
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write an HTML run summary beside the results (same name, .html).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto",
              show_default=True, help="Where files are scored: local processes (fork: forked "
              "from this one, quick to start, Linux; loky: fresh interpreters; auto: fork where "
              "available) or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address (--backend dask).")
@click.option("--num-parts", default=1, show_default=True, type=click.IntRange(min=1),
              help="Split the job into this many shards (needs --ledger shared by all).")
@click.option("--part-id", default=0, show_default=True, type=click.IntRange(min=0),
              help="Which shard this run scores (0 .. num-parts - 1).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="Job YAML (e.g. pipelines/nightly.yaml); command-line options override it.")
@click.pass_context
@handle_errors
def batch(ctx: click.Context, config: str | None, resume: bool, **options: Any) -> int:
    """Score every image under FOLDER into a per-image results file, incrementally.

    Scores are kept in a ledger keyed by image content and model: a re-run scores only new
    or changed images (and retries transient errors), then rewrites --out for the whole
    folder (or this shard). A second run on the same ledger and shard exits with 3.
    """
    common.single_threaded_blas()
    from ..batch.job import run_job
    from ..batch.signals import stop_on_signals

    from_config = _config_values(ctx, Path(config)) if config else {}
    options.update(from_config)
    jobs_given = ("jobs" in from_config
                  or ctx.get_parameter_source("jobs") is not click.core.ParameterSource.DEFAULT)
    job, bundle = build_job(options, resume, jobs_given)
    log.info("scoring %s with %s (%s, model_id %s) into %s", job.folder, bundle.name,
             bundle.kind, bundle.model_id, job.out)
    started = time.time()
    with stop_on_signals():
        result = run_job(bundle, job)
    summary = result.summary
    if options["report"] and result.rows is not None:
        try:
            summary["report"] = str(write_summary_report(result, bundle, job.out, started))
        except Exception:  # noqa: BLE001 - the results are written; the summary is a courtesy
            log.exception("could not write the HTML run summary (results are in %s)", job.out)
    common.echo_summary(summary)
    return result.code


def write_summary_report(result: Any, bundle: Any, out: Path, started: float) -> Path:
    """The HTML run summary beside the results (evaluates too when labels are present); kept
    as it is when its inputs (the rows, the bundle, the recent runs) have not changed."""
    html = out.with_suffix(".html")
    digest = inputs_digest(result, bundle)
    if recorded_digest(html) == digest:
        log.info("run summary %s is up to date (same rows, bundle and recent runs)", html)
        return html
    from ..evaluation.results import results_frame  # pandas, scikit-learn: only to rebuild
    from ..report import write_run_summary
    from ..report.gallery import out_of_domain_thumbnails
    df = results_frame(result.rows, result.columns)
    meta = common.run_meta(common.command_line(), started, [bundle], results=str(out))
    return write_run_summary(df, out.with_suffix(".html"), bundle_meta=common.report_meta(bundle),
                             run_meta=meta, out_of_domain=out_of_domain_thumbnails(df, bundle),
                             trend=result.trend, drift=result.summary.get("drift"),
                             inputs_digest=digest)


def inputs_digest(result: Any, bundle: Any) -> str:
    """What a run summary shows, as one sha256: the exported rows, the model, the trend."""
    import json

    from ..hashing import sha256_bytes

    text = json.dumps([bundle.model_id, result.columns, result.rows, result.trend,
                       result.summary.get("drift")], sort_keys=True, default=str)
    return sha256_bytes(text.encode())


def recorded_digest(html: Path) -> str | None:
    """The inputs digest an existing run summary was written from (read from its head)."""
    import re

    try:
        with open(html, encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    found = re.search(r'name="xray-score-inputs" content="([0-9a-f]{64})"', head)
    return found.group(1) if found else None


def _config_values(ctx: click.Context, path: Path) -> dict[str, Any]:
    """The job YAML's values for the options not given on the command line."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of batch options")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    values = {("fmt" if k == "format" else k): v for k, v in values.items()}
    unknown = set(values) - set(CONFIG_KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown option(s) {', '.join(sorted(unknown))}")
    cli_given = {name for name in CONFIG_KEYS
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    return {k: v for k, v in values.items() if k not in cli_given}


def build_job(opts: dict[str, Any], resume: bool, jobs_given: bool) -> tuple[Any, Any]:
    """Check the options and build the :class:`xray_score.batch.job.Job`."""
    from ..batch.job import Job

    if not opts["folder"]:
        raise UsageError("no FOLDER given (as an argument or in --config)")
    root = Path(opts["folder"])
    if not root.exists():
        raise UsageError(f"no such folder: {root}")
    if resume and not (opts["out"] or opts["ledger"]):
        raise UsageError("--continue needs --out (the results file to continue)")
    if opts["fmt"] not in FORMATS:
        raise UsageError(f"--format must be csv or parquet, not {opts['fmt']!r}")
    num_parts, part_id = int(opts["num_parts"]), int(opts["part_id"])
    if not 0 <= part_id < num_parts:
        raise UsageError(f"--part-id must be in 0..{num_parts - 1}")
    if num_parts > 1 and not opts["ledger"]:
        raise UsageError("--num-parts needs --ledger: one ledger shared by every shard")
    if opts["backend"] not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, not "
                         f"{opts['backend']!r}")
    if (opts["backend"] == "dask") != bool(opts["scheduler"]):
        raise UsageError("--backend dask and --scheduler ADDRESS go together")
    bundle = common.resolve_model(opts["model"])
    suffix = ".parquet" if opts["fmt"] == "parquet" else ".csv"
    out = (Path(opts["out"]) if opts["out"]
           else common.default_out(root, bundle.model_id).with_suffix(suffix))
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
              predictor_kwargs=common.runtime_options(opts["weights"], opts.get("engine")),
              argv=sys.argv[1:], keep_rows=bool(opts["report"]))
    return job, bundle
