"""Planning a ``batch`` run: this shard's files, each file's ledger key, what needs scoring.

A file's sha256 comes from the ledger's stat cache when its (device, inode, size, mtime_ns) is
unchanged: the file is not read at all. Other files are not read here either: the worker that
scores a file hashes the bytes it read (:mod:`xray_score.batch.chunks`). Shards: ``--num-parts K
--part-id I`` keeps the files whose path relative to the folder hashes (BLAKE2b, stable across
machines and Python versions) to ``I`` modulo ``K``.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io.text import display_path
from .ledger import Ledger, needs_scoring

RACY_NS = 2_000_000_000  # files modified this recently are hashed again next time (racy stat)
_CHUNK = 1000


def shard_of(path: str, root: Path, num_parts: int) -> int:
    """The shard (0..num_parts-1) of a file, from its path relative to the folder."""
    try:
        rel = os.path.relpath(path, root) if root.is_dir() else os.path.basename(path)
    except ValueError:
        rel = path
    digest = hashlib.blake2b(os.fsencode(rel), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_parts


def select_part(paths: list[str], root: Path, num_parts: int, part_id: int) -> list[str]:
    if num_parts == 1:
        return paths
    return [p for p in paths if shard_of(p, root, num_parts) == part_id]


@dataclass
class Plan:
    """Every file's ledger key where it is known, and the files to score.

    A file whose (device, inode, size, mtime_ns) is in the stat cache has a known key (its
    sha256); it is scored only when the ledger has no usable row for it (one per distinct
    content). Any other file is scored without being read here: the worker that reads it
    hashes it, and the ledger sink then keeps an existing row for that content instead of the
    new one (so the results are those of a run that had hashed it first).
    """

    keys: dict[str, str] = field(default_factory=dict)  # display path -> ledger key
    todo: list[str] = field(default_factory=list)
    unknown: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # to learn
    stat_hits: int = 0
    planned_ns: int = 0

    def stat_entry(self, name: str, sha: str) -> tuple[tuple[int, int, int, int], str] | None:
        """A stat-cache entry for a file whose sha256 a worker just learned (None when the
        file was modified too recently to trust its stat)."""
        stat = self.unknown.get(name)
        if stat is None or self.planned_ns - stat[3] <= RACY_NS:
            return None
        return stat, sha


def make_plan(ledger: Ledger, paths: list[str], model_id: str) -> Plan:
    """Look every file up in the stat cache and the ledger; decide what needs scoring."""
    plan, queued = Plan(planned_ns=time.time_ns()), set()
    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start:start + _CHUNK]
        stats = [_stat(p) for p in chunk]
        cached = iter(ledger.cached_hashes([st for st in stats if st is not None]))
        shas = [next(cached) if st is not None else None for st in stats]
        plan.stat_hits += sum(s is not None for s in shas)
        stored = ledger.get_rows([s for s in shas if s], model_id)
        for path, st, sha in zip(chunk, stats, shas, strict=True):
            name = display_path(path)
            if sha is None:  # unknown content: the worker reads and hashes it
                plan.todo.append(path)
                if st is not None:
                    plan.unknown[name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                continue
            plan.keys[name] = sha
            if sha not in queued and needs_scoring(stored.get(sha)):
                queued.add(sha)
                plan.todo.append(path)
    return plan


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None
