"""The job store's archive: finished jobs older than the retention period move out of jobs.db
into jobs-archive.db beside it (a store of the same schema), so the file every command opens
holds what is active and recent, whatever the history. Commands still find an archived job by
its id, key or id prefix, and `status --archived` lists the archive.

A batch of jobs moves under jobs.db's write lock, held from reading them to deleting them, so
no other mover, claim or retry comes between (two `prune`s at once move each job once):
1. the jobs and their events are copied into the archive and committed there (a copy already
   there is replaced);
2. in jobs.db their keys go to `archived_keys` (a retry of an archived job's key is that job,
   not a new one), the rows are deleted, and that is committed.
A crash between the two leaves a job in both files; jobs.db's copy is the one every command
reads first, and the next move finishes the job. A failed job being retried (a live claim)
is not moved; one archived is not started again by its key: submit it under a new key. The
exporter's counts are kept apart (job_tallies) and still count archived jobs.

Retention: TORCHSHIP_RETENTION_DAYS (default 30; 0 or "never" keeps every job in jobs.db).
`torchship run` moves what is due at most once an hour, a bounded batch at a time;
`torchship state prune` moves everything due now; `torchship state vacuum` gives the freed
pages back to the file system.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchship.errors import UsageError
from torchship.state import (
    Event,
    Job,
    JobStore,
    StoreError,
    _guarded,
    archive_path,
    archived_store,
)
from torchship.store_errors import naming

__all__ = [
    "Moved",
    "archive_path",
    "archived_events",
    "archived_job",
    "move_due",
    "naming_archive",
    "retention_s",
    "vacuum",
]

RETENTION_ENV = "TORCHSHIP_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30.0
AUTO_EVERY_S = 3600.0  # how often `run` moves what is due
AUTO_BATCH = 1_000  # at most this many jobs per automatic move: ~0.25 s after a submission
# Jobs per batch, moved under jobs.db's write lock: 5,000 took 1.2 s on a 100,000-job store
# (2 cores), so a batch of 200 holds other writers back ~50 ms at most.
BATCH = 200
# Only jobs nothing will change: finished, or lost and no longer checked (see
# JobStore.stop_checking); the finished-jobs index (jobs_finished) holds exactly these states.
DUE_SQL = (
    "state IN ('succeeded', 'failed', 'cancelled', 'lost')"
    " AND (state != 'lost' OR recheck_at = ?) AND updated_at < ?"
)


def retention_s(text: str | None = None) -> float | None:
    """The retention period in seconds, from TORCHSHIP_RETENTION_DAYS; None: keep every job."""
    raw = (os.environ.get(RETENTION_ENV) if text is None else text) or ""
    raw = raw.strip().lower()
    if not raw:
        return DEFAULT_RETENTION_DAYS * 86400
    if raw in ("never", "off"):
        return None
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if days == 0:
        return None
    if not 0 < days * 86400 < float("inf"):  # 1e308 days is no number of seconds
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
    """Move the jobs due (finished, last changed more than `older_than_s` ago, and nobody
    retrying them) to the archive, `batch` at a time, at most `limit` of them (None: all)."""
    owner = archived_store(store.path)
    if owner is not None:  # its jobs would go to an archive of the archive, where none looks
        raise UsageError(
            f"{store.path} is the archive of {owner}: its jobs are archived already",
            f"prune the store itself: `torchship state prune --db {owner}`",
        )
    now = time.time() if now is None else now
    path = archive_path(store.path)
    jobs = events = 0
    if not _any_due(store, now - older_than_s, now):  # no archive made for nothing
        return Moved(0, 0, path, False)
    with naming_archive(path), _opened_archive(store) as archive:
        while limit is None or jobs < limit:
            size = batch if limit is None else min(batch, limit - jobs)
            moved = _move_batch(store, archive, now - older_than_s, size, now)
            if moved is None:
                return Moved(jobs, events, path, False)
            jobs, events = jobs + moved[0], events + moved[1]
    return Moved(jobs, events, path, _any_due(store, now - older_than_s, now))


@contextmanager
def _opened_archive(store: JobStore) -> Iterator[JobStore]:
    """The archive, made (or migrated) by one mover at a time: under jobs.db's write lock, as
    every batch, so no mover holds the archive while it waits for jobs.db (two moves that
    started together made it at once, and one waited out its busy timeout)."""
    archive = _made_archive(store)
    try:
        yield archive
    finally:
        archive.close()


@_guarded
def _made_archive(store: JobStore) -> JobStore:
    with store._tx():
        return JobStore(archive_path(store.path), store.busy_timeout_s)


@contextmanager
def naming_archive(path: Path) -> Iterator[None]:
    """A StoreError about the archive at `path` with hints that name it: `state check` and
    `state repair` look at jobs.db unless given `--db`."""
    try:
        yield
    except StoreError as e:
        if str(path) not in e.message:
            raise
        raise StoreError(e.message, naming(e.hint, path), e.kind) from None


@_guarded
def _move_batch(
    store: JobStore, archive: JobStore, cutoff: float, size: int, now: float
) -> tuple[int, int] | None:
    """One batch, under jobs.db's write lock from the read of the rows to their deletion, so
    no other mover, claim or retry comes between: the jobs and their events are copied into
    the archive and committed there, then deleted here with their keys kept, then committed.
    (jobs, events) moved; None when nothing was due."""
    with store._tx() as db:
        rows = _due(store, cutoff, size, now)
        if not rows:
            return None
        ids = [r["id"] for r in rows]
        marks = ", ".join("?" * len(ids))
        events = list(db.execute(f"SELECT * FROM job_events WHERE job_id IN ({marks}) ORDER BY id",
                                 ids))  # fmt: skip
        _copy(archive, rows, events)
        db.executemany("INSERT OR REPLACE INTO archived_keys VALUES (?, ?)",
                       [(r["key"], r["id"]) for r in rows])  # fmt: skip
        db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)  # events cascade
    return len(rows), len(events)


@_guarded
def _any_due(store: JobStore, cutoff: float, now: float) -> bool:
    return bool(_due(store, cutoff, 1, now))


def _due(store: JobStore, cutoff: float, n: int, now: float) -> list[Any]:
    """The `n` jobs due longest, through the finished jobs' own index (by last change)."""
    from torchship.state import NEVER, claim_lives

    sql = (f"SELECT * FROM jobs INDEXED BY jobs_finished WHERE {DUE_SQL}"
           " ORDER BY updated_at LIMIT ?")  # fmt: skip
    rows = list(store.db.execute(sql, (NEVER, cutoff, n)))
    # a failed job being retried by its key right now (a live claim) stays until it is done
    return [r for r in rows if not claim_lives(r["claimed_by"], r["claimed_until"], now)]


@_guarded  # the archive's errors are the archive's, not jobs.db's (whose write lock is held)
def _copy(archive: JobStore, rows: Sequence[Any], events: Sequence[Any]) -> None:
    """The jobs and their events into the archive, committed there (a copy already there,
    left by a move cut short, is replaced with its events)."""
    ids = [r["id"] for r in rows]
    columns = rows[0].keys()
    with archive._tx() as db:
        db.execute(f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(ids))})", ids)
        db.executemany(
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(r) for r in rows],
        )
        db.executemany(
            "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
            [(e["job_id"], e["state"], e["at"], e["detail"]) for e in events],
        )


@_guarded
def _read(store: JobStore, sql: str, args: Sequence[Any]) -> list[Any]:
    return list(store.db.execute(sql, args))


def move_if_due(store: JobStore, now: float | None = None) -> Moved | None:
    """What `run` does after a submission: when retention is on and nobody moved jobs within
    the last hour, move up to AUTO_BATCH due ones. Taken in a write transaction, so of many
    clients at once one moves. None when nothing was to do."""
    keep = retention_s()
    if keep is None:
        return None
    now = time.time() if now is None else now
    if not _my_turn(store, now):
        return None
    moved = move_due(store, keep, now, limit=AUTO_BATCH)
    if moved.left:  # the rest at the next submission
        _forget_turn(store)
    return moved


@_guarded
def _my_turn(store: JobStore, now: float) -> bool:
    """Whether nobody moved jobs within the last hour; if so, this client's move is noted."""
    with store._tx() as db:
        row = db.execute("SELECT value FROM store_meta WHERE name = 'archived_at'").fetchone()
        if row is not None and row[0] is not None and now - row[0] < AUTO_EVERY_S:
            return False
        db.execute("INSERT OR REPLACE INTO store_meta VALUES ('archived_at', ?)", (now,))
    return True


@_guarded
def _forget_turn(store: JobStore) -> None:
    with store._tx() as db:
        db.execute("DELETE FROM store_meta WHERE name = 'archived_at'")


def archived_job(store: JobStore, ref: str) -> Job | None:
    """The archived job of id, key or unique id prefix `ref`; None when the archive has none
    (or there is no archive)."""
    with _archive(store) as archive:
        if archive is None:
            return None
        job = archive.get(ref)
        if job is None:
            row = _read(store, "SELECT id FROM archived_keys WHERE key = ?", (ref,))
            job = archive.get(row[0]["id"]) if row else None
    return None if job is None else _as_archived(job)


def archived_events(store: JobStore, job_id: str) -> list[Event]:
    with _archive(store) as archive:
        return [] if archive is None else archive.events(job_id)


def archived_prefix_matches(store: JobStore, ref: str, limit: int = 5) -> list[str]:
    with _archive(store) as archive:
        return [] if archive is None else archive.prefix_matches(ref, limit)


@contextmanager
def _archive(store: JobStore) -> Iterator[JobStore | None]:
    """The archive beside `store`, open for a read (None when there is none); a damaged one
    is named with the commands that check and repair *it*."""
    path = archive_path(store.path)
    if not path.is_file():
        yield None
        return
    with naming_archive(path), JobStore(path, store.busy_timeout_s) as archive:
        yield archive


def _as_archived(job: Job) -> Job:
    return job._replace(archived=True)


@dataclass(frozen=True, slots=True)
class Vacuumed:
    path: Path
    before_bytes: int
    after_bytes: int


def vacuum(store: JobStore, done: list[Vacuumed] | None = None) -> list[Vacuumed]:
    """Rewrite jobs.db (and its archive) without free pages, and truncate the WAL: the space
    moved or deleted jobs held goes back to the file system. A file another process is reading
    is not rewritten (its WAL would only grow): StoreError, with `done` holding what was."""
    out = [] if done is None else done
    for path in (store.path, archive_path(store.path)):
        if not path.is_file():
            continue
        with naming_archive(path), JobStore(path, store.busy_timeout_s) as s:
            before = _size(path)
            if not _vacuum(s):
                raise StoreError(
                    f"{path} is being read by another process, so its space cannot be given "
                    f"back now ({_size(path):,} bytes)",
                    f"run `torchship state vacuum` again when no command reads {path.name} "
                    f"(`fuser {path}` names them)",
                    "locked",
                )
            out.append(Vacuumed(path, before, _size(path)))
    return out


@_guarded
def _vacuum(store: JobStore) -> bool:
    """The WAL checkpointed first (a reader holding it would keep every page VACUUM writes
    there), then VACUUM and the WAL truncated; False, with nothing rewritten, when a reader
    holds the WAL, or when one came in between."""
    if store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
        return False
    store.db.execute("VACUUM")
    busy = store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    return not busy


def _size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
