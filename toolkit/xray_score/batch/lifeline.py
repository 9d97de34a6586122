"""Worker processes that die with the process that started them."""

from __future__ import annotations

import os
import threading
import time

_WATCHING = False
PARENT_POLL_SECONDS = 0.5


def die_with_parent(parent_pid: int) -> None:
    """In a worker process that is a direct child of ``parent_pid``: exit as soon as that
    parent is gone (``kill -9`` included), instead of idling on as an orphan. Elsewhere (the
    calling process itself, a Dask worker on another host) it does nothing."""
    global _WATCHING
    if _WATCHING or os.getpid() == parent_pid or os.getppid() != parent_pid:
        return
    _WATCHING = True

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="xray-score-parent-watch", daemon=True).start()
