"""The job store's archive: finished jobs older than the retention period move out of jobs.db
into jobs-archive.db beside it (a store of the same schema), so the file every command opens
holds what is active and recent, whatever the history. Commands still find an archived job by
its id, key or id prefix, and `status --archived` lists the archive.

Moving is two steps, each one transaction, so a crash loses nothing:
1. the jobs and their events are copied into the archive (a copy already there is replaced);
2. in jobs.db, in one transaction, their keys go to `archived_keys` (a retry of an archived
   job's key is that job, not a new one) and the rows are deleted, each only if it is still
   as it was copied (a failed job retried meanwhile stays, and its stale copy leaves the
   archive).
A crash between the two leaves a job in both files; jobs.db's copy is the one every command
reads first, and the next move finishes the job. The exporter's counts are kept apart
(job_tallies) and still count archived jobs.

Retention: TORCHSHIP_RETENTION_DAYS (default 30; 0 or "never" keeps every job in jobs.db).
`torchship run` moves what is due at most once an hour, a bounded batch at a time;
`torchship state prune` moves everything due now; `torchship state vacuum` gives the freed
pages back to the file system.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchship.errors import UsageError
from torchship.state import Event, Job, JobStore, _guarded, archive_path

__all__ = [
    "Moved",
    "archive_path",
    "archived_events",
    "archived_job",
    "move_due",
    "retention_s",
    "vacuum",
]

RETENTION_ENV = "TORCHSHIP_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30.0
AUTO_EVERY_S = 3600.0  # how often `run` moves what is due
AUTO_BATCH = 5_000  # at most this many jobs per automatic move (~0.1 s of a submission's time)
BATCH = 1_000  # jobs per pair of transactions: short enough that writers barely wait
# Only jobs nothing will change: finished, or lost and no longer checked (see
# JobStore.stop_checking). A failed job can still be retried by its key; the move copes.
DUE_SQL = (
    "(state IN ('succeeded', 'failed', 'cancelled') OR (state = 'lost' AND recheck_at = ?))"
    " AND updated_at < ?"
)


def retention_s(text: str | None = None) -> float | None:
    """The retention period in seconds, from TORCHSHIP_RETENTION_DAYS; None: keep every job."""
    raw = (os.environ.get(RETENTION_ENV) if text is None else text) or ""
    raw = raw.strip().lower()
    if not raw:
        return DEFAULT_RETENTION_DAYS * 86400
    if raw in ("never", "0", "off"):
        return None
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0 or days == float("inf"):
        raise UsageError(
            f"{RETENTION_ENV}={raw!r} is not a number of days",
            f"set {RETENTION_ENV} to a number of days (e.g. 30), or to never",
        )
    return days * 86400


@dataclass(frozen=True, slots=True)
class Moved:
    jobs: int
    events: int
    archive: Path
    left: bool  # more jobs were due than this call moved


def move_due(
    store: JobStore,
    older_than_s: float,
    now: float | None = None,
    limit: int | None = None,
    batch: int = BATCH,
) -> Moved:
    """Move the jobs due (finished, last changed more than `older_than_s` ago) to the
    archive, `batch` at a time, at most `limit` of them (None: all)."""
    from torchship.state import NEVER

    now = time.time() if now is None else now
    cutoff = now - older_than_s
    path = archive_path(store.path)
    jobs = events = 0
    with JobStore(path, store.busy_timeout_s) as archive:
        while limit is None or jobs < limit:
            size = batch if limit is None else min(batch, limit - jobs)
            rows = _due(store, NEVER, cutoff, size)
            if not rows:
                return Moved(jobs, events, path, False)
            copied = _copy(store, archive, rows)
            jobs += _forget(store, archive, rows)
            events += copied
    return Moved(jobs, events, path, bool(_due(store, NEVER, cutoff, 1)))


@_guarded
def _due(store: JobStore, never: float, cutoff: float, n: int) -> list[Any]:
    sql = f"SELECT * FROM jobs WHERE {DUE_SQL} ORDER BY id LIMIT ?"
    return list(store.db.execute(sql, (never, cutoff, n)))


def _copy(store: JobStore, archive: JobStore, rows: Sequence[Any]) -> int:
    """Step 1: the jobs and their events into the archive, committed there."""
    ids = [r["id"] for r in rows]
    marks = ", ".join("?" * len(ids))
    events = _read(store, f"SELECT * FROM job_events WHERE job_id IN ({marks}) ORDER BY id", ids)
    columns = rows[0].keys()
    with archive._tx() as db:
        db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)  # a stale copy, events too
        db.executemany(
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(r) for r in rows],
        )
        db.executemany(
            "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
            [(e["job_id"], e["state"], e["at"], e["detail"]) for e in events],
        )
    return len(events)


@_guarded
def _read(store: JobStore, sql: str, args: Sequence[Any]) -> list[Any]:
    return list(store.db.execute(sql, args))


def _forget(store: JobStore, archive: JobStore, rows: Sequence[Any]) -> int:
    """Step 2: in jobs.db, the keys kept and the rows deleted (each only if unchanged since
    the copy); a row that changed meanwhile leaves the archive again."""
    gone, changed = 0, []
    with store._tx() as db:
        for r in rows:
            cur = db.execute(
                "DELETE FROM jobs WHERE id = ? AND state = ? AND updated_at = ?",
                (r["id"], r["state"], r["updated_at"]),
            )
            if cur.rowcount:
                db.execute("INSERT OR REPLACE INTO archived_keys VALUES (?, ?)",
                           (r["key"], r["id"]))  # fmt: skip
                gone += 1
            else:
                changed.append(r["id"])
    if changed:
        with archive._tx() as db:
            db.execute(f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(changed))})", changed)
    return gone


def move_if_due(store: JobStore, now: float | None = None) -> Moved | None:
    """What `run` does after a submission: when retention is on and nobody moved jobs within
    the last hour, move up to AUTO_BATCH due ones. Taken in a write transaction, so of many
    clients at once one moves. None when nothing was to do."""
    keep = retention_s()
    if keep is None:
        return None
    now = time.time() if now is None else now
    with store._tx() as db:
        row = db.execute("SELECT value FROM store_meta WHERE name = 'archived_at'").fetchone()
        if row is not None and row[0] is not None and now - row[0] < AUTO_EVERY_S:
            return None
        db.execute("INSERT OR REPLACE INTO store_meta VALUES ('archived_at', ?)", (now,))
    moved = move_due(store, keep, now, limit=AUTO_BATCH)
    if moved.left:  # the rest at the next submission
        with store._tx() as db:
            db.execute("DELETE FROM store_meta WHERE name = 'archived_at'")
    return moved


def archived_job(store: JobStore, ref: str) -> Job | None:
    """The archived job of id, key or unique id prefix `ref`; None when the archive has none
    (or there is no archive)."""
    path = archive_path(store.path)
    if not path.is_file():
        return None
    with JobStore(path, store.busy_timeout_s) as archive:
        job = archive.get(ref)
        if job is None:
            row = _read(store, "SELECT id FROM archived_keys WHERE key = ?", (ref,))
            job = archive.get(row[0]["id"]) if row else None
    return None if job is None else _as_archived(job)


def archived_events(store: JobStore, job_id: str) -> list[Event]:
    path = archive_path(store.path)
    if not path.is_file():
        return []
    with JobStore(path, store.busy_timeout_s) as archive:
        return archive.events(job_id)


def _as_archived(job: Job) -> Job:
    return job._replace(archived=True)


def archived_prefix_matches(store: JobStore, ref: str, limit: int = 5) -> list[str]:
    path = archive_path(store.path)
    if not path.is_file():
        return []
    with JobStore(path, store.busy_timeout_s) as archive:
        return archive.prefix_matches(ref, limit)


@dataclass(frozen=True, slots=True)
class Vacuumed:
    path: Path
    before_bytes: int
    after_bytes: int


def vacuum(store: JobStore) -> list[Vacuumed]:
    """Rewrite jobs.db (and its archive) without free pages, and truncate the WAL: the space
    moved or deleted jobs held goes back to the file system."""
    out = []
    for path in (store.path, archive_path(store.path)):
        if not path.is_file():
            continue
        with JobStore(path, store.busy_timeout_s) as s:
            before = _size(path)
            _vacuum(s)
            out.append(Vacuumed(path, before, _size(path)))
    return out


@_guarded
def _vacuum(store: JobStore) -> None:
    store.db.execute("VACUUM")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
