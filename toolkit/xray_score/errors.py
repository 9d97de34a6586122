"""Typed per-file errors and the CLI's exit codes (one closed vocabulary for every command)."""

from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    """Why one file could not be scored. Reports count these; users grep them."""

    EMPTY = "empty"  # zero-byte file
    NOT_IMAGE = "not_image"  # content is no format we read
    TRUNCATED = "truncated"  # a known format, cut short or corrupt
    TOO_LARGE = "too_large"  # header announces more pixels than allowed (decompression bomb)
    UNREADABLE = "unreadable"  # OS error: permissions, vanished file, I/O error
    UNSUPPORTED = "unsupported"  # a known format in a variant we do not decode
    TIMEOUT = "timeout"  # decoding took longer than the per-file limit
    WORKER_CRASH = "worker_crash"  # the worker process died on this file
    MODEL_ERROR = "model_error"  # the network/booster failed on this input
    OUT_OF_MEMORY = "out_of_memory"  # the model ran out of memory (transient: retried)


class ImageError(Exception):
    """A per-file failure with a kind from :class:`ErrorKind`; never stops a batch."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = ErrorKind(kind)
        self.message = message


class TaskFailure:
    """A task that broke its worker: it hung past its limit (``TIMEOUT``) or its worker died
    (``WORKER_CRASH``). Runners turn it into that file's row, never into a stopped batch."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"TaskFailure({self.kind.value}, {self.message!r})"


class UsageError(Exception):
    """Bad options or configuration (exit code 2)."""


class MissingPathError(UsageError, FileNotFoundError):
    """A folder or file named on the command line does not exist (exit code 2)."""


class BundleError(UsageError):
    """A model bundle that is missing, tampered with, or of an unknown format."""


class LockHeldError(Exception):
    """Another run holds the lock on this ledger/shard (exit code 3)."""


class ExitCode:
    OK = 0
    SOME_FAILED = 10
    USAGE = 2
    LOCKED = 3
    INTERNAL = 70
