"""Planning a ``batch`` run: this shard's files, each file's ledger key, what needs scoring.

Every file's sha256 comes from the ledger's stat cache when its (device, inode, size, mtime_ns)
is unchanged (the file is not read), otherwise by reading it. Shards: ``--num-parts K
--part-id I`` keeps the files whose path relative to the folder hashes (BLAKE2b, stable across
machines and Python versions) to ``I`` modulo ``K``.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..hashing import sha256_file
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


def hash_file(path: str) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read (its worker will say why)."""
    try:
        return sha256_file(path)
    except OSError:
        return None


@dataclass
class Plan:
    """Every file's ledger key, and the files to score (one per distinct content)."""

    keys: dict[str, str] = field(default_factory=dict)  # display path -> ledger key
    todo: list[str] = field(default_factory=list)
    stat_hits: int = 0
    hashed: int = 0


def make_plan(ledger: Ledger, paths: list[str], model_id: str) -> Plan:
    """Look every file up in the stat cache, hash the rest, decide what needs scoring."""
    plan, queued = Plan(), set()
    now = time.time_ns()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start:start + _CHUNK]
            stats = [_stat(p) for p in chunk]
            cached = ledger.cached_hashes([st for st in stats if st is not None])
            hashes = iter(cached)
            shas = [next(hashes) if st is not None else None for st in stats]
            plan.stat_hits += sum(s is not None for s in shas)
            misses = [i for i, s in enumerate(shas) if s is None]
            for i, sha in zip(misses, pool.map(hash_file, [chunk[i] for i in misses]),
                              strict=True):
                shas[i] = sha
            plan.hashed += len(misses)
            ledger.cache_hashes([(stats[i], shas[i]) for i in misses
                                 if shas[i] and stats[i] and now - stats[i].st_mtime_ns > RACY_NS])
            keys = [sha or f"path:{display_path(p)}" for p, sha in zip(chunk, shas, strict=True)]
            stored = ledger.get_rows(keys, model_id)
            for path, key in zip(chunk, keys, strict=True):
                plan.keys[display_path(path)] = key
                if key not in queued and needs_scoring(stored.get(key)):
                    queued.add(key)
                    plan.todo.append(path)
    return plan


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None
