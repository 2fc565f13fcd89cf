"""The job store: embedded SQLite, a cache of what sites say, safe against crashes.

- WAL journal with synchronous=NORMAL: a committed submission survives the writer being killed
  (SQLite docs, "Write-Ahead Logging": WAL + NORMAL is durable across application crashes).
- Schema version in `PRAGMA user_version`, upgraded by ordered migrations in one transaction.
- JSON columns (spec, placement, event detail), never pickle.
- Idempotent submission: every job has a unique `key`; submitting the same key again returns the
  existing job, so a client that crashed mid-submit can simply retry.
- Every state change is an event row with its timestamp, written in the same transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchship.errors import TorchshipError, UsageError

SCHEMA_VERSION = 1
STATES = ("submitted", "pending", "running", "succeeded", "failed", "cancelled", "lost")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ALLOWED: dict[str, frozenset[str]] = {
    # the site is the truth: a short job can end before anyone saw it run
    "submitted": frozenset({"pending", "running", "succeeded", "failed", "cancelled", "lost"}),
    "pending": frozenset({"running", "succeeded", "failed", "cancelled", "lost"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "lost", "pending"}),
    "lost": frozenset({"pending", "running", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset({"pending"}),  # a retry
    "cancelled": frozenset(),
}

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            spec TEXT NOT NULL CHECK (json_valid(spec)),
            lock_hash TEXT,
            site TEXT,
            placement TEXT CHECK (placement IS NULL OR json_valid(placement)),
            state TEXT NOT NULL,
            handle TEXT,
            exit_code INTEGER,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX jobs_state ON jobs(state)",
        "CREATE INDEX jobs_site ON jobs(site)",
        """CREATE TABLE job_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            state TEXT NOT NULL,
            at REAL NOT NULL,
            detail TEXT CHECK (detail IS NULL OR json_valid(detail))
        )""",
        "CREATE INDEX job_events_job ON job_events(job_id, id)",
    ),
}


class StoreError(TorchshipError):
    """The job store cannot be opened or is damaged."""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    key: str
    name: str
    spec: dict[str, Any]
    lock_hash: str | None
    site: str | None
    placement: dict[str, Any] | None
    state: str
    handle: str | None
    exit_code: int | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Event:
    job_id: str
    state: str
    at: float
    detail: dict[str, Any] | None


def data_dir() -> Path:
    """$TORCHSHIP_HOME when set, else the user's data dir (platformdirs)."""
    home = os.environ.get("TORCHSHIP_HOME")
    if home:
        return Path(home)
    from platformdirs import user_data_dir

    return Path(user_data_dir("torchship", appauthor=False))


def default_path() -> Path:
    return data_dir() / "jobs.db"


def new_job_id(now: float | None = None) -> str:
    """Time-sortable, unique: 12 hex digits of milliseconds + 8 random hex digits."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{os.urandom(4).hex()}"


def _like_prefix(ref: str) -> str:
    """A LIKE pattern for ids starting with `ref`: its own % and _ are literal, not wildcards
    (`torchship cancel %` must not mean every job)."""
    return ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        key=row["key"],
        name=row["name"],
        spec=json.loads(row["spec"]),
        lock_hash=row["lock_hash"],
        site=row["site"],
        placement=json.loads(row["placement"]) if row["placement"] else None,
        state=row["state"],
        handle=row["handle"],
        exit_code=row["exit_code"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class JobStore:
    """One SQLite file; safe to use from many processes at once (one JobStore per process)."""

    def __init__(self, path: Path | str | None = None, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(
                f"cannot open the job store {self.path}: {e}",
                "check the path and its permissions, or set TORCHSHIP_HOME",
            ) from None
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(
                f"{self.path}: cannot use WAL (journal mode {mode})",
                "put the job store on a local file system",
            )
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front, so writers queue instead of deadlock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this "
                f"torchship's {SCHEMA_VERSION}",
                "upgrade torchship",
            )
        if version == SCHEMA_VERSION:
            return
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[
                0
            ]  # another process may have won
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def submit(
        self,
        key: str,
        name: str,
        spec: dict[str, Any],
        lock_hash: str | None = None,
        site: str | None = None,
        placement: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """(job, created). The same key returns the existing job unchanged."""
        if not key:
            raise UsageError("a submission needs a non-empty key", "pass a unique idempotency key")
        now = time.time()
        job_id = job_id or new_job_id(now)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (id, key, name, spec, lock_hash, site, placement, state,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'submitted', ?, ?)"
                " ON CONFLICT(key) DO NOTHING",
                (
                    job_id,
                    key,
                    name,
                    json.dumps(spec, sort_keys=True),
                    lock_hash,
                    site,
                    None if placement is None else json.dumps(placement, sort_keys=True),
                    now,
                    now,
                ),
            )
            created = cur.rowcount == 1
            if created:
                db.execute(
                    "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
                    (job_id, "submitted", now, None),
                )
            row = db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return _job(row), created

    def transition(
        self,
        job_id: str,
        state: str,
        *,
        exit_code: int | None = None,
        handle: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Job:
        """Move a job to `state`, recording the event; refuses transitions that cannot happen."""
        if state not in STATES:
            raise UsageError(f"unknown job state {state!r}", f"one of {', '.join(STATES)}")
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise UsageError(f"no job {job_id!r}", "see `torchship status`")
            if state != row["state"] and state not in ALLOWED[row["state"]]:
                raise UsageError(
                    f"job {job_id} cannot go from {row['state']} to {state}",
                    "a finished job stays finished; submit it again",
                )
            db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, exit_code = COALESCE(?, exit_code),"
                " handle = COALESCE(?, handle) WHERE id = ?",
                (state, now, exit_code, handle, job_id),
            )
            db.execute(
                "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
                (job_id, state, now, None if detail is None else json.dumps(detail)),
            )
            out = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(out)

    def get(self, ref: str) -> Job | None:
        """By id, id prefix (unique), or key."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE id = ? OR key = ? OR id LIKE ? ESCAPE '\\' LIMIT 2",
            (ref, ref, _like_prefix(ref)),
        ).fetchall()
        exact = [r for r in rows if ref in (r["id"], r["key"])]
        if exact:
            return _job(exact[0])
        return _job(rows[0]) if len(rows) == 1 else None

    def prefix_matches(self, ref: str, limit: int = 5) -> list[str]:
        """The ids starting with `ref` (at most `limit`): to say which when `ref` is ambiguous."""
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
            (_like_prefix(ref), limit),
        ).fetchall()
        return [r["id"] for r in rows]

    def jobs(self, state: str | None = None, site: str | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", list[str]()
        if state:
            sql, args = sql + " AND state = ?", [*args, state]
        if site:
            sql, args = sql + " AND site = ?", [*args, site]
        return [_job(r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def tallies(self, now: float) -> list[tuple[str, str, str, str, int, float]]:
        """(state, site, placed site, decision, jobs, USD accrued) per group, aggregated in
        SQLite (the exporter asks on every scrape): accrued = the placement's usd_per_hour ×
        the hours from submission to its end (or now)."""
        rows = self._db.execute(
            "SELECT state, COALESCE(site, '') AS site,"
            " COALESCE(json_extract(placement, '$.site'), site, '') AS placed,"
            " COALESCE(json_extract(placement, '$.decision'), 'asked') AS decision,"
            " COUNT(*) AS n,"
            " SUM(COALESCE(json_extract(placement, '$.usd_per_hour'), 0) * MAX(0,"
            "  (CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'lost')"
            "   THEN updated_at ELSE ? END) - created_at) / 3600.0) AS usd"
            " FROM jobs GROUP BY 1, 2, 3, 4",
            (now,),
        )
        return [(r[0], r[1], str(r[2]), str(r[3]), r[4], float(r[5] or 0.0)) for r in rows]

    def events(self, job_id: str) -> list[Event]:
        rows = self._db.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [
            Event(
                r["job_id"], r["state"], r["at"], json.loads(r["detail"]) if r["detail"] else None
            )
            for r in rows
        ]

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
