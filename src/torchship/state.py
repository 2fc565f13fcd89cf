"""The job store: embedded SQLite, a cache of what sites say, safe against crashes.

- WAL journal with synchronous=NORMAL: a committed submission survives the writer being killed
  (SQLite docs, "Write-Ahead Logging": WAL + NORMAL is durable across application crashes).
- Schema version in `PRAGMA user_version`, upgraded by ordered migrations in one transaction.
- JSON columns (spec, placement, event detail), never pickle.
- Idempotent submission: every job has a unique `key`; submitting the same key again returns the
  existing job, so a client that crashed mid-submit can simply retry. A job that never reached
  its site (no handle: its apply failed, or its client died first) is started by the retry; the
  client that records or retries a job holds a *claim* on it while it applies (its host, pid and
  process start time, and a lease), so two clients never apply one job at once (see `claim`).
- Every state change is an event row with its timestamp, written in the same transaction.
- Private: the file (0600) and a folder torchship creates for it (0700), less the umask; the
  WAL and shared-memory files take the file's mode (SQLite's unix VFS does that).
- A damaged store is named, never a traceback: every SQLite error and every row that does not
  read becomes a StoreError saying what is wrong, with a hint (torchship.store_health, which
  also checks and repairs the file: `torchship state check|repair`).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from torchship._atomic import PRIVATE, private_dir
from torchship._host import hostname
from torchship.conventions import data_dir
from torchship.errors import UsageError
from torchship.store_errors import StoreError, damage, error, file_problem, not_opened
from torchship.store_schema import MIGRATIONS, group_columns

__all__ = ["Event", "Job", "JobStore", "StoreError", "data_dir"]
P = ParamSpec("P")
R = TypeVar("R")
BUSY_ENV = "TORCHSHIP_BUSY_TIMEOUT_S"
MAX_BUSY_S = 86400.0  # a day; SQLite takes no infinite wait (its timeout is an int of ms)

SCHEMA_VERSION = 4
# How long a claim holds when its owner's liveness cannot be checked (another host sharing the
# store): longer than a remote apply takes (a Kubernetes apply or a SkyPilot launch's start is
# seconds). On this host the lease does not count: a claim lives exactly as long as its
# process, so a docker pull of an hour is never taken over by a retry.
LEASE_S = 600.0
STATES = ("submitted", "pending", "running", "succeeded", "failed", "cancelled", "lost")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# Not finished: what `status` shows whatever its age, and reconciles (a lost job until its site
# has been asked about it long enough: see `stop_checking`)
ACTIVE = ("submitted", "pending", "running", "lost")
NEVER = float("inf")  # a lost job's next check when its checks have stopped
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


class Job(NamedTuple):
    """A job as the store holds it. The store's records are NamedTuples (frozen, typed), not
    dataclasses: every command that opens the store imports them, and `dataclasses` alone
    costs ~15 ms of a command's start here (a third of `python -c pass`)."""

    id: str
    key: str
    name: str
    spec: dict[str, Any]
    lock_hash: str | None
    site: str | None  # the site's name (its kind: that site's in the sites file, or the handle's)
    placement: dict[str, Any] | None
    state: str
    handle: str | None
    exit_code: int | None
    created_at: float
    updated_at: float
    claimed_by: str | None = None  # "host:pid" of the client applying it (no handle yet)
    claimed_until: float | None = None
    recheck_at: float | None = None  # a lost job: when it is next asked about (NEVER: not)
    archived: bool = False  # read from the archive (torchship.store_archive)


class Line(NamedTuple):
    """A job as a listing shows it: no spec, and the placement as stored (parsed when shown)."""

    id: str
    name: str
    site: str | None
    state: str
    exit_code: int | None
    handle: str | None
    lock_hash: str | None
    created_at: float
    updated_at: float
    placement_text: str | None = None

    def placement(self) -> Any:
        """The placement record as stored (None when there is none or it does not read)."""
        if not self.placement_text:
            return None
        try:
            return json.loads(self.placement_text)
        except ValueError:
            return None


class Query(NamedTuple):
    """Which jobs a listing shows. `limit`: the newest N of those that match, and every active
    one that matches besides; None: every job that matches."""

    states: tuple[str, ...] = ()
    site: str | None = None
    since: float | None = None  # submitted at or after (seconds since the epoch)
    limit: int | None = 50
    placement: bool = False  # read each job's placement too (`--json`)


class Event(NamedTuple):
    job_id: str
    state: str
    at: float
    detail: dict[str, Any] | None


def default_path() -> Path:
    return data_dir() / "jobs.db"


def archive_path(store_path: Path) -> Path:
    """Where the jobs past their retention go (torchship.store_archive): beside the store."""
    return store_path.with_name(f"{store_path.stem}-archive{store_path.suffix or '.db'}")


def archived_store(path: Path) -> Path | None:
    """The store whose archive `path` is (jobs-archive.db -> jobs.db), or None."""
    if not path.stem.endswith("-archive"):
        return None
    store = path.with_name(path.stem.removesuffix("-archive") + path.suffix)
    return store if archive_path(store) == path else None


def new_job_id(now: float | None = None) -> str:
    """Time-sortable, unique: 12 hex digits of milliseconds + 8 random hex digits."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{os.urandom(4).hex()}"


def _id_range(ref: str) -> tuple[str, str]:
    """[low, high): the ids that start with `ref`, as a range of the primary key (text compares
    by code point, so every id with that prefix sorts from `ref` up to, not including, `ref`
    with its last character increased). No wildcard: `torchship cancel %` means no job."""
    if not ref:
        return "", "\U0010ffff"
    last = ord(ref[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # no surrogate: SQLite stores UTF-8
        last = 0xE000
    high = ref[:-1] + chr(last) if last <= 0x10FFFF else ref + "\U0010ffff"
    return ref, high


_LINE_COLUMNS = ("id, name, COALESCE(site_name, site), state, exit_code, handle, lock_hash,"
                 " created_at, updated_at")  # fmt: skip
# The active jobs are read through (state, id) whatever SQLite's statistics say: after ANALYZE
# it takes a few distinct states for unselective and would scan (see _active_where).
_ACTIVE_FROM = "jobs INDEXED BY jobs_state"


def _where(query: Query, sieve: tuple[str, ...] = ()) -> tuple[str, list[Any]]:
    """The query's filters as SQL over indexed columns, with their arguments. `sieve`: the
    filters ("state", "site", "since") that only sieve rows another index finds (a unary +
    keeps SQLite from walking a site's or a state's whole history through them instead)."""
    clauses, args = ["1=1"], list[Any]()
    if query.states:
        plus = "+" if "state" in sieve else ""
        clauses.append(f"{plus}state IN ({', '.join('?' * len(query.states))})")
        args += query.states
    if query.site is not None:
        clauses.append(f"{'+' if 'site' in sieve else ''}site_name = ?")
        args.append(query.site)
    if query.since is not None:
        clauses.append(f"{'+' if 'since' in sieve else ''}created_at >= ?")
        args.append(query.since)
    return " AND ".join(clauses), args


def _active_where(query: Query) -> tuple[str, list[Any]] | None:
    """The active jobs the query selects, as SQL read through (state, id); None when its
    states leave none (`--state succeeded`)."""
    states = [s for s in ACTIVE if not query.states or s in query.states]
    if not states:
        return None
    rest, args = _where(query._replace(states=()), sieve=("site", "since"))
    marks = ", ".join("?" * len(states))
    sql = (f"{rest} AND state IN ({marks})"
           " AND (state != 'lost' OR recheck_at IS NULL OR recheck_at < ?)")  # fmt: skip
    return sql, [*args, *states, NEVER]


class _BadRow(Exception):
    """A row's JSON column does not read: the store turns it into a StoreError."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _loads(text: str, job_id: str, column: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        raise _BadRow(f"job {job_id}'s {column} is not valid JSON") from None


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        key=row["key"],
        name=row["name"],
        spec=_loads(row["spec"], row["id"], "spec"),
        lock_hash=row["lock_hash"],
        site=row["site_name"] if row["site_name"] is not None else row["site"],
        placement=_loads(row["placement"], row["id"], "placement") if row["placement"] else None,
        state=row["state"],
        handle=row["handle"],
        exit_code=row["exit_code"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        claimed_by=row["claimed_by"],
        claimed_until=row["claimed_until"],
        recheck_at=row["recheck_at"],
    )


# A claim's owner: "host:pid", then ":start" where the process's start time is known (Linux).
_OWNER = re.compile(r"(?P<host>[^:]+):(?P<pid>\d{1,10})(?::(?P<start>\d+))?")


def process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (proc(5): /proc/PID/stat field 22,
    counted after the command name, which may hold spaces and parentheses). With the pid it
    names one process: a later process given the same pid started later. None without /proc
    (not Linux) or once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # from field 3 (state) on
    return fields[19] if len(fields) > 19 and fields[19].isdigit() else None


def owner_id() -> str:
    """This process, as the owner of a claim: "host:pid:start" ("host:pid" without /proc)."""
    pid = os.getpid()
    start = process_start(pid)
    return f"{hostname()}:{pid}" + (f":{start}" if start else "")


def claim_lives(claimed_by: str | None, claimed_until: float | None, now: float) -> bool:
    """On this host a claim lives exactly as long as its process: the pid is alive and, where
    the claim recorded it, that process started when the claimant did (a reused pid is another
    process). A claim from another host, whose process cannot be asked, holds while its lease
    (`claimed_until`) runs."""
    if not claimed_by:
        return False
    owner = _OWNER.fullmatch(claimed_by)
    if owner is None or owner["host"] != hostname():
        return claimed_until is not None and claimed_until > now
    pid = int(owner["pid"])
    if pid <= 0:
        return False  # kill(0) would ask this process group, not a claimant
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass  # alive, someone else's
    start = process_start(pid)
    return owner["start"] is None or start is None or start == owner["start"]


def abandoned(job: Job, now: float | None = None) -> bool:
    """Recorded but never started, and nobody is starting it: its client died before apply."""
    now = time.time() if now is None else now
    return (
        job.state == "submitted"
        and not job.handle
        and not claim_lives(job.claimed_by, job.claimed_until, now)
    )


def _guarded(
    method: Callable[Concatenate[JobStore, P], R],
) -> Callable[Concatenate[JobStore, P], R]:
    """SQLite's errors and rows that do not read, as a StoreError that says what is wrong
    (a constraint or API misuse stays what it is: a bug, not damage)."""

    def wrapper(self: JobStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        start = time.monotonic()
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.Error as e:
            raise damage(self.path, e, time.monotonic() - start) from None
        except _BadRow as e:
            raise error("bad-json", self.path, f"the job store {self.path} is damaged: "
                                               f"{e.what}") from None  # fmt: skip

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


def busy_timeout() -> float:
    """How long a command waits for another one's write: TORCHSHIP_BUSY_TIMEOUT_S, or 30 s."""
    try:
        value = float(os.environ.get(BUSY_ENV, "30"))
    except ValueError:
        return 30.0
    return min(max(0.0, value), MAX_BUSY_S) if not math.isnan(value) else 30.0


class JobStore:
    """One SQLite file; safe to use from many processes at once (one JobStore per process)."""

    def __init__(
        self,
        path: Path | str | None = None,
        busy_timeout_s: float | None = None,
        readonly: bool = False,
    ) -> None:
        """`readonly`: a connection that cannot write, usable from any one thread at a time
        (the exporter keeps one open; its snapshots are taken one at a time). A store that
        does not exist yet, or is of an older schema, is made or migrated first."""
        self.path = Path(path) if path is not None else default_path()
        self.busy_timeout_s = busy_timeout() if busy_timeout_s is None else busy_timeout_s
        self._db: sqlite3.Connection | None = None
        try:
            self._open_readonly() if readonly else self._open()
        except OSError as e:
            raise not_opened(self.path, e) from None
        except BaseException:
            self.close()
            raise

    @_guarded
    def _open(self) -> None:
        private_dir(self.path.parent)
        if not self.path.exists() and not self.path.is_symlink():
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE))
        problem = file_problem(self.path)
        if problem is not None:
            raise problem
        ms = int(self.busy_timeout_s * 1000)
        # usable from another thread (the exporter's snapshots); one at a time, as ever
        self._db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {ms}")
        mode = self._wal()
        if mode != "wal":
            raise StoreError(
                f"{self.path}: cannot use WAL (journal mode {mode})",
                "put the job store on a local file system",
            )
        self._db.execute("PRAGMA synchronous = NORMAL")
        # A checkpoint (two fsyncs) lands on the write that fills the WAL. A submission writes
        # ~11 pages (schema 4; ~9.4 before), so SQLite's default of 1,000 pages put one in ~1%
        # of a lone writer's submissions (its p99 17 ms against 0.9 ms); 2,000 pages (8 MiB of
        # WAL at most) halves how often, and the fsyncs in all.
        self._db.execute("PRAGMA wal_autocheckpoint = 2000")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()
        have = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in ("jobs", "job_events"):
            if table not in have:
                raise error("missing-table", self.path,
                            f"the job store {self.path} has no {table} table")  # fmt: skip

    def _wal(self) -> str:
        """PRAGMA journal_mode = WAL. A new file's first switch needs it alone, and while another
        opener holds its write lock SQLite answers SQLITE_BUSY at once, without waiting (its
        deadlock rule): 8 processes opening a new store together lost one about every 40
        tries. So the switch is retried here, up to the busy timeout."""
        assert self._db is not None
        deadline, pause = time.monotonic() + self.busy_timeout_s, 0.001
        while True:
            try:
                return str(self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @_guarded
    def _open_readonly(self) -> None:
        from urllib.parse import quote

        for attempt in (1, 2):
            if attempt == 2 or not self.path.exists():
                JobStore(self.path, self.busy_timeout_s).close()  # made, or migrated
            problem = file_problem(self.path)
            if problem is not None:
                raise problem
            self._db = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True,
                                       timeout=self.busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)  # fmt: skip
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if self.schema_version >= SCHEMA_VERSION or attempt == 2:
                return
            self.close()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the store is closed"
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front, so writers queue instead of deadlock."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            with suppress(sqlite3.Error):  # a damaged file may not roll back: the error is news
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise error(
                "newer-schema",
                self.path,
                f"the job store {self.path} has schema version {version}, newer than this "
                f"torchship's {SCHEMA_VERSION}",
            )
        if version == SCHEMA_VERSION:
            return
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another may have won
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    @property
    @_guarded
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @_guarded
    def submit(
        self,
        key: str,
        name: str,
        spec: dict[str, Any],
        lock_hash: str | None = None,
        site: str | None = None,
        placement: dict[str, Any] | None = None,
        job_id: str | None = None,
        owner: str | None = None,
    ) -> tuple[Job, bool]:
        """(job, created). The same key returns the existing job unchanged. `owner` ("host:pid",
        see owner_id) claims a new job for LEASE_S while it applies it."""
        if not key:
            raise UsageError("a submission needs a non-empty key", "pass a unique idempotency key")
        now = time.time()
        job_id = job_id or new_job_id(now)
        with self._tx() as db:
            gone = db.execute("SELECT id FROM archived_keys WHERE key = ?", (key,)).fetchone()
            if gone is not None:  # the job of this key was archived: it is that job
                return self._archived_key(key, gone["id"]), False
            cur = db.execute(
                "INSERT INTO jobs (id, key, name, spec, lock_hash, site_name, placement, state,"
                " created_at, updated_at, claimed_by, claimed_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'submitted', ?, ?, ?, ?)"
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
                    owner,
                    None if owner is None else now + LEASE_S,
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

    def _archived_key(self, key: str, job_id: str) -> Job:
        from torchship.store_archive import archived_job  # the same unit: the store's archive

        job = archived_job(self, job_id)
        if job is None:
            raise UsageError(
                f"key {key!r} belongs to job {job_id}, archived, and the archive "
                f"{archive_path(self.path)} no longer has it",
                "use a new --key for a new job",
            )
        return job

    @_guarded
    def transition(
        self,
        job_id: str,
        state: str,
        *,
        exit_code: int | None = None,
        handle: str | None = None,
        detail: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> Job:
        """Move a job to `state`, recording the event; refuses transitions that cannot happen.
        `at`: when it happened, as the site says (a job's end is when it ended, not when someone
        asked); default now. Any claim on the job ends with it."""
        if state not in STATES:
            raise UsageError(f"unknown job state {state!r}", f"one of {', '.join(STATES)}")
        now = time.time() if at is None else at
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
                " handle = COALESCE(?, handle), claimed_by = NULL, claimed_until = NULL,"
                " recheck_at = NULL WHERE id = ?",
                (state, now, exit_code, handle, job_id),
            )
            db.execute(
                "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
                (job_id, state, now, None if detail is None else json.dumps(detail)),
            )
            out = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(out)

    @_guarded
    def claim(
        self, job_id: str, owner: str, now: float | None = None, lease_s: float = LEASE_S
    ) -> Job | None:
        """Take the job for `owner` to apply it, when it never reached its site (no handle;
        `submitted` or `failed`) and nobody else holds a live claim on it; None otherwise.
        Checked and taken in one write transaction: of two retries at once, one gets it."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["handle"] or row["state"] not in ("submitted", "failed"):
                return None
            if claim_lives(row["claimed_by"], row["claimed_until"], now):
                return None
            db.execute(
                "UPDATE jobs SET claimed_by = ?, claimed_until = ? WHERE id = ?",
                (owner, now + lease_s, job_id),
            )
            out = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(out)

    @_guarded
    def get(self, ref: str) -> Job | None:
        """By id, key, or id prefix (unique). Each is one lookup in an index (the primary key,
        the key's unique index, a range of the primary key), whatever the history's size."""
        for sql in ("SELECT * FROM jobs WHERE id = ?", "SELECT * FROM jobs WHERE key = ?"):
            row = self.db.execute(sql, (ref,)).fetchone()
            if row is not None:
                return _job(row)
        rows = self.db.execute(
            "SELECT * FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2", _id_range(ref)
        ).fetchall()
        return _job(rows[0]) if len(rows) == 1 else None

    @_guarded
    def prefix_matches(self, ref: str, limit: int = 5) -> list[str]:
        """The ids starting with `ref` (at most `limit`): to say which when `ref` is ambiguous."""
        rows = self.db.execute(
            "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (*_id_range(ref), limit),
        ).fetchall()
        return [r["id"] for r in rows]

    @_guarded
    def jobs(self, state: str | None = None, site: str | None = None) -> list[Job]:
        """Every job (of a state, of a site), oldest first: for tests and tools, not for
        listings, which read `lines` of the jobs they show."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", list[str]()
        if state:
            sql, args = sql + " AND state = ?", [*args, state]
        if site:
            sql, args = sql + " AND site_name = ?", [*args, site]
        return [_job(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    @_guarded
    def active(self, site: str | None = None, since: float | None = None) -> list[Job]:
        """The jobs not finished (ACTIVE; a lost one only while it is still checked), oldest
        first: what a reconcile asks the sites about. An index range of (state, id)."""
        active = _active_where(Query(site=site, since=since))
        assert active is not None
        sql = f"SELECT * FROM {_ACTIVE_FROM} WHERE {active[0]} ORDER BY id"
        return [_job(r) for r in self.db.execute(sql, active[1])]

    @_guarded
    def has_active(self) -> bool:
        active = _active_where(Query())
        assert active is not None
        sql = f"SELECT 1 FROM {_ACTIVE_FROM} WHERE {active[0]} LIMIT 1"
        return self.db.execute(sql, active[1]).fetchone() is not None

    def lines(self, query: Query) -> Iterator[Line]:
        """The jobs `query` selects, oldest first, read as they are iterated (a listing of a
        million jobs holds one at a time). Each part of the query is an index range."""
        rows = self._lines(query)
        while True:
            try:
                row = self._next(rows)
            except StopIteration:
                return
            yield Line(*row)

    @_guarded
    def _next(self, rows: Iterator[Any]) -> Any:  # a damaged page met mid-listing is named
        return next(rows)

    @_guarded
    def _lines(self, query: Query) -> Iterator[Any]:
        where, args = _where(query)
        columns = _LINE_COLUMNS + (", placement" if query.placement else "")
        if query.since is not None:  # a range of created_at, newest first: not a walk of ids
            where, args = _where(query, sieve=("state", "site"))
            order = "created_at"  # in one millisecond, ids need not sort by submission time
        else:
            order = "id"
        if query.limit is None:
            sql = f"SELECT {columns} FROM jobs WHERE {where} ORDER BY {order}"
            return iter(self.db.execute(sql, args))
        newest = (
            f"SELECT id FROM ({f'SELECT id FROM jobs WHERE {where} ORDER BY {order} DESC'} LIMIT ?)"
        )
        args = [*args, max(0, query.limit)]
        active = _active_where(query)
        if active is not None:
            newest += f" UNION SELECT id FROM {_ACTIVE_FROM} WHERE {active[0]}"
            args += active[1]
        sql = f"SELECT {columns} FROM jobs WHERE id IN ({newest}) ORDER BY id"
        return iter(self.db.execute(sql, args))

    @_guarded
    def more_than(self, query: Query) -> bool:
        """Whether more jobs match `query` than the `query.limit` newest its listing shows
        (the active ones aside): one step down the same index range."""
        if query.limit is None:
            return False
        where, args = _where(query)
        order = "id"
        if query.since is not None:
            where, args = _where(query, sieve=("state", "site"))
            order = "created_at"
        marks = ", ".join("?" * len(ACTIVE))  # an active job past the newest N is shown too
        shown = f"state IN ({marks}) AND (state != 'lost' OR recheck_at IS NULL OR recheck_at < ?)"
        sql = (f"SELECT 1 FROM (SELECT state, recheck_at FROM jobs WHERE {where} ORDER BY {order}"
               f" DESC LIMIT -1 OFFSET ?) WHERE NOT ({shown}) LIMIT 1")  # fmt: skip
        return self.db.execute(sql, [*args, query.limit, *ACTIVE, NEVER]).fetchone() is not None

    @_guarded
    def recheck_at(self, job_id: str, when: float) -> Job:
        """A lost job with nothing new: ask its site again at `when`, not before."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET recheck_at = ? WHERE id = ? AND state = 'lost'",
                       (when, job_id))  # fmt: skip
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    @_guarded
    def stop_checking(self, job_id: str, reason: str, now: float | None = None) -> Job:
        """A lost job's site has not known it for long enough: it is not asked about again
        (until someone asks for this job by name), and why is recorded as an event. The job
        keeps its state and the time it was lost."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE jobs SET recheck_at = ? WHERE id = ? AND state = 'lost'",
                       (NEVER, job_id))  # fmt: skip
            db.execute(
                "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, 'lost', ?, ?)",
                (job_id, now, json.dumps({"reason": reason, "checks": "stopped"})),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    @_guarded
    def tallies(self, now: float) -> list[tuple[str, str, str, str, int, float]]:
        """(state, site, placed site, decision, jobs, USD accrued) per group (the exporter asks
        on every scrape): accrued = the placement's usd_per_hour × the hours from submission to
        its end (or now). Finished jobs' counts and costs are kept in job_tallies by triggers,
        so only the jobs still running are read: the cost does not grow with the history."""
        groups = {
            (r[0], r[1], str(r[2]), str(r[3])): [r[4], float(r[5] or 0.0)]
            for r in self.db.execute("SELECT * FROM job_tallies WHERE jobs > 0")
        }
        open_usd = self.db.execute(
            f"SELECT {group_columns('')},"
            " SUM(COALESCE(json_extract(placement, '$.usd_per_hour'), 0)"
            " * MAX(0, ? - created_at) / 3600.0) FROM jobs"
            " INDEXED BY jobs_state WHERE state IN ('submitted', 'pending', 'running')"
            " GROUP BY 1, 2, 3, 4",
            (now,),
        )
        for r in open_usd:
            group = groups.get((r[0], r[1], str(r[2]), str(r[3])))
            if group is not None:
                group[1] += float(r[4] or 0.0)
        return [(*k, int(v[0]), max(0.0, v[1])) for k, v in groups.items()]

    @_guarded
    def tallies_by_scan(self, now: float) -> list[tuple[str, str, str, str, int, float]]:
        """`tallies` aggregated from every row (what job_tallies must agree with, for the
        rows still in this file and none archived): the tests compare the two."""
        rows = self.db.execute(
            f"SELECT {group_columns('')}, COUNT(*), SUM(CASE WHEN state IN"
            " ('succeeded', 'failed', 'cancelled', 'lost') THEN"
            " COALESCE(json_extract(placement, '$.usd_per_hour'), 0)"
            " * MAX(0, updated_at - created_at) / 3600.0 ELSE"
            " COALESCE(json_extract(placement, '$.usd_per_hour'), 0)"
            " * MAX(0, ? - created_at) / 3600.0 END) FROM jobs GROUP BY 1, 2, 3, 4",
            (now,),
        )
        return [(r[0], r[1], str(r[2]), str(r[3]), r[4], float(r[5] or 0.0)) for r in rows]

    @_guarded
    def events(self, job_id: str) -> list[Event]:
        rows = self.db.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [
            Event(r["job_id"], r["state"], r["at"],
                  _loads(r["detail"], job_id, "event detail") if r["detail"] else None)
            for r in rows
        ]  # fmt: skip

    @_guarded
    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])
