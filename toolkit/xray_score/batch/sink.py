"""The caller's side of the ledger: commit the rows workers send back, export the folder's rows.

:class:`LedgerSink` keys each row by the sha256 its worker read (a file the stat cache did not
know), keeps the existing row of content the ledger already has, fills the stat cache, and
commits one transaction per chunk. :func:`export_rows` streams one row per file of the folder
back out of the ledger, in folder order.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..io.text import display_path
from .drift import ScoredSummary
from .ledger import Ledger, needs_scoring
from .plan import Plan
from .scorer import EXTRA_COLUMNS, LABEL_COLUMN

log = logging.getLogger(__name__)

RUN_COLUMN = "scored_in_run"
_CHUNK = 1000


class LedgerSink:
    """Commits each batch of result rows to the ledger, under each file's content key.

    A file the plan could not key (not in the stat cache) is keyed by the sha256 its worker
    read; if the ledger already has a usable row for that content (a copy, a renamed or touched
    file), that row is kept and the new one dropped, as if the file had been hashed before
    scoring. The learned sha256s go into the stat cache, so the next run reads nothing.
    """

    def __init__(self, ledger: Ledger, run_id: int, plan: Plan, bar: Any = None) -> None:
        self.ledger, self.run_id, self.plan, self.bar = ledger, run_id, plan, bar
        self.scored = ScoredSummary()  # what this run scored, for the drift check
        self.written: set[str] = set()  # keys this run wrote
        self.learned = 0  # files whose sha256 a worker learned (read and hashed)
        self.known = 0  # of those, contents the ledger already had a usable row for
        self.done = 0  # rows received

    def write(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Commit ``rows``; returns the rows written (not those of already-known content)."""
        keys, learned, stat_entries, n_in = [], set(), [], len(rows)
        self.done += n_in
        for row in rows:
            name, sha = row["path"], row["sha256"]
            planned = self.plan.keys.get(name)
            if planned is None:  # the worker read it: now its key is known
                key = sha or f"path:{name}"
                learned.add(key)
                self.learned += bool(sha)
                entry = self.plan.stat_entry(name, sha) if sha else None
                if entry is not None:
                    stat_entries.append(entry)
            elif sha and sha != planned:  # the file changed since planning
                key = sha
            elif not sha and not planned.startswith("path:"):
                row["sha256"] = key = planned  # a timeout/crash row: the worker never said
            else:
                key = planned
            self.plan.keys[name] = key
            keys.append(key)
        stored = self.ledger.get_rows(learned, rows[0]["model_id"]) if learned else {}
        keep, seen = [], set()
        for i, key in enumerate(keys):
            if key in learned and (key in self.written or key in seen or (
                    key in stored and not needs_scoring(stored[key]))):
                continue  # this content already has its row: it stands
            seen.add(key)
            keep.append(i)
        self.known += len(rows) - len(keep)
        rows, keys = [rows[i] for i in keep], [keys[i] for i in keep]
        if rows or stat_entries:
            self.ledger.put_rows(rows, keys, self.run_id, EXTRA_COLUMNS, stat_entries)
            self.written.update(keys)
        self.scored.add(rows)
        if self.bar is not None:
            self.bar.update(n_in)
        return rows


@dataclass
class ExportTally:
    rows: int = 0
    failed_by_kind: Counter = field(default_factory=Counter)
    missing: int = 0
    out_of_domain: int = 0


def export_rows(ledger: Ledger, paths: list[str], plan: Plan, model_id: str,
                labels: dict[str, str] | None, tally: ExportTally) -> Iterator[dict[str, Any]]:
    """One result row per file, from the ledger, in folder order (streamed in chunks)."""
    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start:start + _CHUNK]
        shown = [display_path(p) for p in chunk]
        stored = ledger.get_rows([plan.keys[s] for s in shown], model_id)
        for path, name in zip(chunk, shown, strict=True):
            row = stored.get(plan.keys[name])
            if row is None:
                tally.missing += 1
                log.warning("no ledger row for %s", name)
                continue
            out = {**row, **json.loads(row["extra"] or "{}"), "path": name,
                   "model_id": model_id, RUN_COLUMN: row["run_id"]}
            if labels is not None:
                out[LABEL_COLUMN] = labels.get(path, "")
            if out["status"] != "ok":
                tally.failed_by_kind[out["error_kind"]] += 1
            tally.out_of_domain += out.get("in_domain") == "false"
            tally.rows += 1
            yield out
