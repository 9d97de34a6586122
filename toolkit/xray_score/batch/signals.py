"""SIGTERM and SIGINT end a run cleanly: they become an :class:`Interrupted` exception in the
main thread, so committed rows stay, the run is recorded as ``interrupted`` and the exit code
is ``128 + signal`` (130 for SIGINT, 143 for SIGTERM)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal (``signum``)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + self.signum
        self.summary: dict[str, Any] = {}
        super().__init__(f"interrupted by {self.name}")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT raise :class:`Interrupted` once; later ones are
    ignored so the clean-up (ledger, log, summary line) can finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
