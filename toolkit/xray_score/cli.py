"""The ``xray-score`` command line: a Click group over the commands in :mod:`xray_score.commands`.

Exit codes (for cron): 0 all scored, 10 some files failed (results still written),
2 usage or configuration error, 3 another run holds the lock, 70 internal error.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import sys
import threading
from typing import Any

import click

from . import __version__
from .errors import ExitCode

# command name -> module under xray_score.commands (imported when the command runs, so that
# `xray-score batch` does not import what `evaluate` or `train` need)
COMMANDS = {"train": "train", "batch": "batch", "evaluate": "evaluate", "compare": "compare",
            "embed": "embed", "calibrate": "calibrate"}


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


class XrayGroup(click.Group):
    """Click group whose usage errors exit with 2 and whose crashes exit with 70; its commands
    are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"{__package__}.commands.{COMMANDS[name]}")
        return getattr(module, name)

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


def run() -> None:
    """The ``xray-score`` console command: :func:`main` in a process of its own, which then
    ends without tearing the interpreter down.

    By then the command has closed and synced its files and joined its workers; freeing every
    module and object one by one would add ~50 ms to every run (1-2 % of scoring 2,500 films).
    So when nothing else is running (no other thread, no child process), the exit functions
    run (``atexit``: logging, temporary folders, ...), the standard streams are flushed and the
    process exits with the command's code; otherwise it exits the usual way. Code that calls
    :func:`main` in its own interpreter (tests, notebooks) is not affected.
    """
    try:
        main()
    except SystemExit as exc:
        code = exc.code
        if not isinstance(code, (int, type(None))) or not _alone():
            raise
    else:  # pragma: no cover - standalone click always exits
        code = 0
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_functions is None:  # pragma: no cover - not CPython
        sys.exit(code)
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


def _alone() -> bool:
    """Whether only this thread runs in this process, and no child process is left."""
    processes = sys.modules.get("multiprocessing")  # not imported: it started no process
    return threading.active_count() == 1 and not (processes and processes.active_children())


if __name__ == "__main__":  # pragma: no cover
    run()
