"""What can be wrong with the job store's file, in words: SQLite's errors classified into one
line of what is wrong and one line of what to do (`damage`), a whole check (`check`), and a
repair that keeps the damaged file and rebuilds what still reads (`repair`).

The store (torchship.state) raises StoreError with the kind of damage; `torchship status` and
every other command print it with its hint and exit 2, never a traceback. Kinds:

    is-a-directory  not-a-database  truncated  malformed  missing-table  bad-json  bad-wal
    newer-schema  no-permission  locked  cannot-open

Repair reads rows two ways and keeps the better of each: through SQL while the b-trees hold,
and by scanning every page (of the file and of its WAL) for table-leaf cells shaped like a
job or an event (torchship.store_pages), the way SQLite's own `.recover` finds rows that no
b-tree reaches any more.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship.store_errors import (
    Kind,
    StoreError,
    damage,
    error,
    file_problem,
)

TABLES = ("jobs", "job_events")
# in the order the migrations add them: a row of an older schema is a prefix of a newer one
JOB_COLUMNS = (
    "id", "key", "name", "spec", "lock_hash", "site", "placement", "state", "handle",
    "exit_code", "created_at", "updated_at", "claimed_by", "claimed_until", "site_name",
    "recheck_at",
)  # fmt: skip
EVENT_COLUMNS = ("id", "job_id", "state", "at", "detail")


@dataclass(frozen=True, slots=True)
class Problem:
    kind: Kind
    message: str
    hint: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "hint": self.hint}


@dataclass(frozen=True, slots=True)
class Health:
    path: Path
    problems: tuple[Problem, ...]
    exists: bool
    size_bytes: int | None = None
    schema_version: int | None = None
    jobs: int | None = None
    events: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "exists": self.exists,
            "size_bytes": self.size_bytes,
            "schema_version": self.schema_version,
            "jobs": self.jobs,
            "events": self.events,
            "problems": [p.to_json() for p in self.problems],
        }


def _problem(e: StoreError) -> Problem:
    return Problem(e.kind, e.message, e.hint)


def check(path: Path, busy_timeout_s: float = 5.0) -> Health:
    """Everything wrong with the store at `path`, read without writing to it."""
    if not path.exists() and not path.is_symlink():
        return Health(path, (), False)
    size = path.stat().st_size if path.is_file() else None
    found = file_problem(path, deep=True)
    if found is not None and found.kind in (
        "is-a-directory",
        "no-permission",
        "not-a-database",
        "cannot-open",
    ):  # cannot-open: a link to nothing
        return Health(path, (_problem(found),), True, size)
    problems = [] if found is None else [_problem(found)]
    try:
        return _check_rows(path, busy_timeout_s, size, problems)
    except sqlite3.Error as e:
        seen = damage(path, e, busy_timeout_s)
        if seen.kind != "malformed" or not any(p.kind == "truncated" for p in problems):
            problems.append(_problem(seen))
        return Health(path, tuple(problems), True, size)


def _check_rows(path: Path, timeout: float, size: int | None, problems: list[Problem]) -> Health:
    from torchship.state import SCHEMA_VERSION

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            what = f"the job store {path} has schema version {version}, newer than this " \
                   f"torchship's {SCHEMA_VERSION}"  # fmt: skip
            problems.append(_problem(error("newer-schema", path, what)))
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in TABLES:
            if table not in names:
                what = f"the job store {path} has no {table} table"
                problems.append(_problem(error("missing-table", path, what)))
        bad = [r[0] for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        if bad and not any(p.kind == "truncated" for p in problems):
            what = f"the job store {path} is damaged: {'; '.join(bad[:3])}"
            problems.append(_problem(error("malformed", path, what)))
        counts = [_count_json(db, path, t, problems) for t in TABLES if t in names]
    finally:
        db.close()
    jobs, events = (counts[0], counts[1]) if len(counts) == 2 else (None, None)
    return Health(path, tuple(problems), True, size, version, jobs, events)


def _count_json(db: sqlite3.Connection, path: Path, table: str, out: list[Problem]) -> int:
    """The rows of `table`, each JSON column parsed: a row that does not parse is a problem."""
    columns = ("spec", "placement") if table == "jobs" else ("detail",)
    key = "id" if table == "jobs" else "job_id"
    n = 0
    for row in db.execute(f"SELECT {key}, {', '.join(columns)} FROM {table}"):
        n += 1
        for name, text in zip(columns, row[1:], strict=True):
            value = None if text is None else _json(text)
            # a job's spec and placement are objects: anything else breaks the commands
            wrong = value is None or (table == "jobs" and not isinstance(value, dict))
            if text is not None and wrong and len(out) < 20:
                kind = "a JSON object" if value is not None else "valid JSON"
                what = f"the job store {path} is damaged: {table} row of job {row[0]}: " \
                       f"{name} is not {kind}"  # fmt: skip
                out.append(_problem(error("bad-json", path, what)))
    return n


def _json(text: object) -> object | None:
    try:
        return json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        return None


# --- repair ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Repair:
    path: Path
    kept: tuple[Path, ...]  # the damaged files, as they were, under their new names
    jobs: int
    events: int
    by_scan: int  # rows found only by scanning pages
    notes: tuple[str, ...] = ()  # what was replaced or left out

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kept": [str(p) for p in self.kept],
            "jobs": self.jobs,
            "events": self.events,
            "by_scan": self.by_scan,
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class _Rows:
    jobs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    events: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    complete: bool = True  # SQL read every row of both tables
    scanned: int = 0  # rows only the page scan found


REFUSED: tuple[Kind, ...] = ("locked", "no-permission", "newer-schema", "cannot-open")


def repair(path: Path, busy_timeout_s: float = 5.0) -> Repair | None:
    """Keep the damaged store under a timestamped name and rebuild `path` from what reads;
    None when there is nothing to repair. Refused (StoreError) when the damage is not the
    file's (locked, no permission, a newer torchship's)."""
    health = check(path, busy_timeout_s)
    if health.ok:
        return None
    refused = next((p for p in health.problems if p.kind in REFUSED), None)
    if refused is not None:
        raise StoreError(f"{refused.message}: not repaired", refused.hint, refused.kind)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    moved = []
    bad_wal = any(p.kind == "bad-wal" for p in health.problems)
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, kept.with_name(kept.name + suffix))
            moved.append(kept.with_name(kept.name + suffix))
    rows = _Rows() if kept.is_dir() else salvage(kept, use_wal=not bad_wal)
    jobs, events, notes = _rebuild(path, rows)
    return Repair(path, tuple(moved), jobs, events, rows.scanned, tuple(notes))


def salvage(db_file: Path, use_wal: bool = True) -> _Rows:
    """Every job and event that reads from a copy of `db_file` (and its WAL)."""
    wal = db_file.with_name(db_file.name + "-wal")
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="torchship-repair-") as tmp:
        work = Path(tmp) / "jobs.db"
        shutil.copyfile(db_file, work)
        if use_wal and wal.is_file():
            shutil.copyfile(wal, Path(tmp) / "jobs.db-wal")
        rows = _by_sql(work)
        if not rows.complete:
            _by_scan(db_file, wal if use_wal else None, rows)
    return rows


def _by_sql(work: Path) -> _Rows:
    rows = _Rows()
    try:
        db = sqlite3.connect(work, timeout=1)
    except sqlite3.Error:
        rows.complete = False
        return rows
    try:
        for table, into in (("jobs", rows.jobs), ("job_events", rows.events)):
            try:
                for r in db.execute(f"SELECT * FROM {table}"):
                    values = tuple(r)
                    key = values[0]
                    shaped = _job_shaped(values) if table == "jobs" else _event_shaped(values[1:])
                    if shaped:
                        into[key] = values
            except sqlite3.Error:
                rows.complete = False
    finally:
        db.close()
    return rows


def _rebuild(path: Path, rows: _Rows) -> tuple[int, int, list[str]]:
    """A new store at `path` holding `rows`: written beside it, then renamed into place."""
    from torchship.state import JobStore

    notes: list[str] = []
    tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)
    JobStore(tmp).close()
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("BEGIN")
        for values in rows.jobs.values():
            db.execute(
                f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(JOB_COLUMNS))})",
                _clean_job(values, notes),
            )
        dropped = 0
        for values in sorted(rows.events.values(), key=lambda v: int(v[0])):
            if values[1] not in rows.jobs:
                dropped += 1
                continue
            db.execute(
                f"INSERT INTO job_events ({', '.join(EVENT_COLUMNS)}) VALUES (?, ?, ?, ?, ?)",
                _clean_event(values, notes),
            )
        db.execute("COMMIT")
        if dropped:
            notes.append(f"{dropped} event(s) of jobs that did not read were left out")
        notes += _archived_again(db, path)
    finally:
        db.close()
    os.replace(tmp, path)
    return len(rows.jobs), len(rows.events) - dropped, notes


def _archived_again(db: sqlite3.Connection, path: Path) -> list[str]:
    """What the rebuilt store knows of its archive (jobs-archive.db beside it), from the
    archive itself: the archived jobs' keys (a retry of one is that job, not a new one) and
    their part of the exporter's counts (which count every job ever)."""
    from torchship.state import archive_path
    from torchship.store_schema import closed_usd, group_columns

    archive = archive_path(path)
    if not archive.is_file():
        return []
    try:
        db.execute("ATTACH DATABASE ? AS archive", (str(archive),))
    except sqlite3.Error as e:
        return [f"the archive {archive} did not open ({e}): its jobs' keys and counts are not "
                "restored"]  # fmt: skip
    try:
        db.execute("BEGIN")
        fresh = "FROM archive.jobs WHERE id NOT IN (SELECT id FROM main.jobs)"
        keys = db.execute(f"INSERT OR REPLACE INTO archived_keys SELECT key, id {fresh}").rowcount
        db.execute(
            f"INSERT INTO job_tallies SELECT {group_columns('')}, COUNT(*),"
            f" SUM({closed_usd('')}) {fresh} GROUP BY 1, 2, 3, 4"
            " ON CONFLICT DO UPDATE SET jobs = jobs + excluded.jobs,"
            " usd_closed = usd_closed + excluded.usd_closed"
        )
        db.execute("COMMIT")
    except sqlite3.Error as e:
        db.execute("ROLLBACK")
        return [f"the archive {archive} did not read ({e}): its jobs' keys and counts are not "
                "restored"]  # fmt: skip
    finally:
        db.execute("DETACH DATABASE archive")
    return [f"{keys} archived job(s) in {archive}: their keys and counts kept"] if keys else []


def _clean_job(values: tuple[Any, ...], notes: list[str]) -> tuple[Any, ...]:
    n = len(JOB_COLUMNS)
    v = list(values) + [None] * (n - len(values))
    if not isinstance(_json(v[3]), dict):
        notes.append(f"job {v[0]}: its spec did not read; replaced by {{}}")
        v[3] = "{}"
    placement = _json(v[6]) if v[6] is not None else None
    if v[6] is not None and not isinstance(placement, dict):
        notes.append(f"job {v[0]}: its placement did not read; left out")
        v[6] = placement = None
    if v[14] is None:  # a row of before schema 3: its site's name, as that migration finds it
        placed = placement.get("site") if isinstance(placement, dict) else None
        v[14] = placed if isinstance(placed, str) else v[5]
    return tuple(v[:n])


def _clean_event(values: tuple[Any, ...], notes: list[str]) -> tuple[Any, ...]:
    v = list(values)
    if v[4] is not None and not isinstance(_json(v[4]), dict):
        notes.append(f"an event of job {v[1]}: its detail did not read; left out")
        v[4] = None
    return tuple(v)


# --- rows no b-tree reaches -----------------------------------------------------------------


def _by_scan(db_file: Path, wal: Path | None, rows: _Rows) -> None:
    """Rows found in table-leaf pages of the file and of its WAL's frames, added to `rows`
    where SQL did not read them (a job's newest copy wins: finished, then latest)."""
    from torchship.store_pages import cells

    log = wal.read_bytes() if wal is not None and wal.is_file() else None
    sql_jobs, sql_events = set(rows.jobs), set(rows.events)
    for rowid, values in cells(db_file.read_bytes(), log):
        if _job_shaped(values) and values[0] not in sql_jobs:
            old = rows.jobs.get(values[0])
            rows.scanned += old is None
            if old is None or _newer(values, old):
                rows.jobs[values[0]] = values
        elif _event_shaped(values[1:]) and rowid not in sql_events and values[0] is None:
            rows.scanned += rowid not in rows.events
            rows.events[rowid] = (rowid, *values[1:])


def _newer(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    from torchship.state import TERMINAL

    return (a[7] in TERMINAL, a[11]) > (b[7] in TERMINAL, b[11])


def _job_shaped(v: tuple[Any, ...]) -> bool:
    from torchship.state import STATES

    return (
        12 <= len(v) <= len(JOB_COLUMNS)
        and isinstance(v[0], str)
        and isinstance(v[1], str)
        and v[7] in STATES
        and isinstance(v[10], int | float)
        and isinstance(v[11], int | float)
    )


def _event_shaped(v: tuple[Any, ...]) -> bool:
    """(job_id, state, at, detail): an event row without its id."""
    from torchship.state import STATES

    return (
        len(v) == 4
        and isinstance(v[0], str)
        and v[1] in STATES
        and isinstance(v[2], int | float)
        and (v[3] is None or isinstance(v[3], str))
    )
