"""The job store: idempotent submission, transitions with events, schema migrations."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from torchship._atomic import PRIVATE, write_text_atomic
from torchship.backends.base import Capabilities, Request, SiteStatus
from torchship.doctor.facts import Facts
from torchship.errors import TorchshipError, UsageError
from torchship.jobs import Submission, reconcile, submit
from torchship.spec.job import JobSpec, load_job
from torchship.state import (
    LEASE_S,
    SCHEMA_VERSION,
    Job,
    JobStore,
    StoreError,
    abandoned,
    claim_lives,
    owner_id,
)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with JobStore(tmp_path / "jobs.db") as s:
        yield s


def test_submit_is_idempotent(store: JobStore) -> None:
    job, created = store.submit("k1", "train", {"nodes": 1}, lock_hash="sha256:1", site="local")
    again, created_again = store.submit("k1", "other", {"nodes": 9})
    assert created and not created_again
    assert again == job and again.spec == {"nodes": 1} and again.state == "submitted"
    assert [e.state for e in store.events(job.id)] == ["submitted"]


def test_transitions_record_events(store: JobStore) -> None:
    job, _ = store.submit("k", "train", {})
    store.transition(job.id, "running", handle="local://host/" + job.id, detail={"pid": 42})
    done = store.transition(job.id, "succeeded", exit_code=0)
    assert (done.state, done.exit_code, done.handle) == ("succeeded", 0, "local://host/" + job.id)
    events = store.events(job.id)
    assert [e.state for e in events] == ["submitted", "running", "succeeded"]
    assert events[1].detail == {"pid": 42} and events[0].at <= events[2].at
    with pytest.raises(UsageError, match="cannot go from succeeded to running"):
        store.transition(job.id, "running")
    with pytest.raises(UsageError, match="unknown job state"):
        store.transition(job.id, "exploded")


def test_lookup_by_id_prefix_and_key(store: JobStore) -> None:
    job, _ = store.submit("my-key", "train", {})
    assert store.get(job.id) == job and store.get("my-key") == job and store.get(job.id[:14]) == job
    assert store.get("nope") is None
    assert store.jobs(state="submitted") == [job] and store.jobs(site="elsewhere") == []


def test_wal_and_schema_version(store: JobStore) -> None:
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal" and store.integrity_check() == "ok"


def test_migrates_an_empty_file_and_refuses_a_newer_one(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    sqlite3.connect(db).close()  # version 0: an empty database
    with JobStore(db) as s:
        assert s.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this torchship"):
        JobStore(db)


def test_a_new_store_opens_while_another_opener_holds_its_write_lock(tmp_path: Path) -> None:
    """Switching a new file to WAL while another connection writes it: SQLite answers BUSY at
    once, without its busy handler (8 processes opening a new store together lost one about
    every 40 tries). The open waits for the lock like any other write instead."""
    import threading

    path = tmp_path / "jobs.db"
    path.touch()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE elsewhere (x)")  # another opener, mid-write, in rollback mode
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    start = time.monotonic()
    try:
        with JobStore(path, busy_timeout_s=5) as s:
            assert s.submit("k", "n", {})[1]
    finally:
        release.join()
        other.close()
    assert 0.25 < time.monotonic() - start < 5


def test_a_lock_error_says_how_long_the_call_waited(tmp_path: Path) -> None:
    """The error says how long the call waited, not the busy timeout it might have."""
    path = tmp_path / "jobs.db"
    JobStore(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match=r"locked by another process \(waited 0\.[0-9] s\)"):
            JobStore(path, busy_timeout_s=0.2).submit("k", "n", {})
    finally:
        other.close()


def test_json_columns_are_checked(store: JobStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute(
            "INSERT INTO jobs (id, key, name, spec, state, created_at, updated_at)"
            " VALUES ('x', 'x', 'x', 'not json', 'submitted', 0, 0)"
        )


def test_a_reference_is_a_prefix_not_a_pattern_and_ambiguity_is_said(store: JobStore) -> None:
    """`torchship cancel %` matched the only job there was; an ambiguous prefix said "no job"."""
    from torchship.jobs import get_job

    a, _ = store.submit("ka", "train", {}, job_id="01aaaa0000000000000a")
    assert store.get("%") is None and store.get("_") is None and store.get("01aaaa%") is None
    b, _ = store.submit("kb", "train", {}, job_id="01aaaa0000000000000b")
    with pytest.raises(UsageError, match="is the start of 2 job ids") as e:
        get_job(store, "01aaaa")
    assert a.id in str(e.value) and b.id in str(e.value) and "more of the id" in e.value.hint
    assert get_job(store, a.id[:-1] + "a") == a


def test_looking_up_one_job_reads_an_index_never_the_whole_table(store: JobStore) -> None:
    """`status JOB`, `logs`, `cancel`: by id, key or id prefix, each an index lookup, so the
    time does not grow with the history (the old `id = ? OR key = ? OR id LIKE ?` scanned every
    row). The plans are SQLite's own."""
    store.submit("k1", "train", {}, job_id="01aaaa0000000000000a")
    db = store.db
    ran: list[str] = []
    db.set_trace_callback(ran.append)  # the statements as run, their values bound
    for ref in ("01aaaa0000000000000a", "k1", "01aaaa", "01aaab"):
        store.get(ref)
        store.prefix_matches(ref)
    db.set_trace_callback(None)
    selects = [q for q in ran if q.lstrip().upper().startswith("SELECT") and "jobs" in q]
    assert len(selects) >= 8
    for sql in selects:
        plan = " ".join(str(r[-1]) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "USING" in plan and "SCAN" not in plan, (sql, plan)
    assert store.get("01aaaa").id == "01aaaa0000000000000a"  # type: ignore[union-attr]
    assert store.get("01aaab") is None and store.get("k1") is not None
    assert store.get("\U0010ffff") is None and store.get("01aaaa\ud7ff") is None  # edges


# --- idempotent submission that survives a failed or abandoned start (issue 17 item 10) ------


class Site:
    """A site of this test: apply fails while `down` says why; it counts what it started."""

    kind = "fake"

    def __init__(self, down: str | None = None) -> None:
        self.down = down
        self.started: list[str] = []

    def capabilities(self) -> Capabilities:
        return Capabilities(kind="fake", multi_node=False, max_nodes=1, gpus=False, remote=True)

    def plan(self, job: JobSpec, lock: object, job_id: str) -> Request:
        return Request(site="fake", kind="fake", job_id=job_id, text=f"start {job_id}")

    def apply(self, request: Request) -> str:
        if self.down:
            raise TorchshipError(self.down, "try again later")
        self.started.append(request.job_id)
        return f"fake://here/{request.job_id}"

    def status(self, handle: str) -> SiteStatus:
        return SiteStatus("running")

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        return iter(())

    def cancel(self, handle: str) -> None:
        pass


def _job_file(tmp_path: Path) -> Path:
    path = tmp_path / "proj" / "job.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text('[job]\ncommand = ["python", "train.py"]\n')
    return path


def _submit(tmp_path: Path, store: JobStore, site: Site, key: str) -> Submission:
    path = _job_file(tmp_path)
    return submit(path, "fake", store=store, key=key, backend=site, facts=Facts("probe"))


def _recorded(tmp_path: Path, store: JobStore, key: str, owner: str | None = None) -> Job:
    """The job file of `_submit`, recorded by a client that then stopped before its apply."""
    spec = asdict(load_job(_job_file(tmp_path)))
    return store.submit(key, "train", spec, site="fake", owner=owner)[0]


def test_a_failed_apply_is_recorded_and_the_same_key_applies_again(
    tmp_path: Path, store: JobStore
) -> None:
    """A failed apply left the job `submitted` with no handle forever, and a retry with the same
    key exited 0 without starting anything."""
    site = Site(down="the site is down")
    with pytest.raises(TorchshipError, match="the site is down"):
        _submit(tmp_path, store, site, "nightly")
    (job,) = store.jobs()
    assert (job.state, job.handle) == ("failed", None)
    assert store.events(job.id)[-1].detail == {"reason": "apply failed: the site is down"}
    site.down = None
    sub = _submit(tmp_path, store, site, "nightly")
    assert sub.created and sub.job is not None and sub.job.id == job.id
    assert (sub.job.state, sub.job.handle) == ("pending", f"fake://here/{job.id}")
    assert site.started == [job.id]
    again = _submit(tmp_path, store, site, "nightly")  # started now: the key starts nothing more
    assert not again.created and site.started == [job.id] and len(store.jobs()) == 1


def test_a_submission_whose_process_died_before_apply_is_applied_by_the_retry(
    tmp_path: Path, store: JobStore
) -> None:
    """Recorded, then the CLI died before apply: the same key must start it, once."""
    job = _recorded(tmp_path, store, "k-dead")  # no claim: a store of before
    site = Site()
    sub = _submit(tmp_path, store, site, "k-dead")
    assert sub.created and site.started == [job.id] and sub.job is not None
    assert sub.job.handle == f"fake://here/{job.id}"
    # a claim whose process has ended is abandoned too; reconcile says so instead of waiting
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    owner = f"{socket.gethostname()}:{ended.stdout.strip()}"
    gone = _recorded(tmp_path, store, "k-gone", owner)
    seen = reconcile(store, gone)
    assert seen.state == "failed" and "ended before it started" in str(
        store.events(gone.id)[-1].detail
    )
    assert _submit(tmp_path, store, site, "k-gone").created and site.started[-1] == gone.id


def test_a_submission_being_applied_now_is_not_applied_twice(
    tmp_path: Path, store: JobStore
) -> None:
    job = _recorded(tmp_path, store, "k-live", owner_id())  # this process
    site = Site()
    sub = _submit(tmp_path, store, site, "k-live")
    assert not sub.created and site.started == [] and sub.job is not None
    assert sub.job.state == "submitted" and reconcile(store, sub.job).state == "submitted"
    assert store.claim(job.id, "elsewhere:1") is None  # its owner lives: not claimable


@pytest.mark.parametrize("mask", [0o077, 0o022])
def test_the_store_is_private_and_plain_files_respect_the_umask(tmp_path: Path, mask: int) -> None:
    """jobs.db (specs with their [job.env]) was 0644, and atomic writes forced 0644."""
    old = os.umask(mask)
    try:
        with JobStore(tmp_path / "home" / "jobs.db") as s:
            s.submit("k", "train", {"env": {"API_TOKEN": "s3cret"}})
            files = [s.path, *(s.path.with_name(s.path.name + x) for x in ("-wal", "-shm"))]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        write_text_atomic(tmp_path / "plain.txt", "x")
        write_text_atomic(tmp_path / "secret.txt", "x", PRIVATE)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    assert modes == {"jobs.db": 0o600, "jobs.db-wal": 0o600, "jobs.db-shm": 0o600}
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "secret.txt").stat().st_mode) == 0o600


def test_a_claim_on_this_host_lives_exactly_as_long_as_its_process(store: JobStore) -> None:
    """A live client's claim expired with its 600 s lease, so a retry could take a slow apply
    (a docker pull of ten minutes) and start the job twice. On this host the process decides,
    however long it takes; the lease is for claims from other hosts, which cannot be asked."""
    job, _ = store.submit("k-slow", "train", {}, site="fake", owner=owner_id())  # this process
    later = time.time() + 10 * LEASE_S  # long past the lease
    assert claim_lives(job.claimed_by, job.claimed_until, later)
    assert not abandoned(job, now=later)
    assert store.claim(job.id, "elsewhere:1", now=later) is None
    host, pid = socket.gethostname(), os.getpid()
    assert claim_lives(f"{host}:{pid}", 0.0, later)  # a claim written before start times were
    if Path(f"/proc/{pid}/stat").exists():  # Linux: the start time tells a reused pid apart
        assert owner_id().startswith(f"{host}:{pid}:")
        assert not claim_lives(f"{host}:{pid}:1", later + 1, later)  # same pid, another process
    now = time.time()
    assert claim_lives("elsewhere:1", now + 5, now)  # another host: its lease holds
    assert not claim_lives("elsewhere:1", now - 5, now)  # and only its lease
    assert not claim_lives(None, now + 5, now)


# --- schema 3: the site's name, not its kind (issue 19 item 4) -----------------------------

# The store as torchship wrote it before schema 3 (migrations 1 and 2, frozen here as they
# were): `site` held the kind, the name was only in the placement of a job placed by --site auto.
SCHEMA_2 = (
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        spec TEXT NOT NULL CHECK (json_valid(spec)), lock_hash TEXT, site TEXT,
        placement TEXT CHECK (placement IS NULL OR json_valid(placement)), state TEXT NOT NULL,
        handle TEXT, exit_code INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    "CREATE INDEX jobs_state ON jobs(state)",
    "CREATE INDEX jobs_site ON jobs(site)",
    """CREATE TABLE job_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, state TEXT NOT NULL,
        at REAL NOT NULL, detail TEXT CHECK (detail IS NULL OR json_valid(detail)))""",
    "CREATE INDEX job_events_job ON job_events(job_id, id)",
    "ALTER TABLE jobs ADD COLUMN claimed_by TEXT",
    "ALTER TABLE jobs ADD COLUMN claimed_until REAL",
    "PRAGMA user_version = 2",
)


def test_a_store_of_schema_2_is_migrated_and_its_jobs_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jobs.db files of schema 2 exist on users' machines: opening one adds site_name from
    what it holds (the placement's site, else the kind, which names the kind's implicit site),
    keeps `site` as it was, and a job whose site is in no sites file any more is still asked
    about through its handle."""
    import json as _json

    db = tmp_path / "jobs.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in SCHEMA_2:
        conn.execute(statement)
    here = socket.gethostname()
    rows = [  # (id, site as schema 2 wrote it, placement, handle)
        ("01old00000000000000a", "local", {"site": "workstation", "decision": "run"},
         f"local://{here}/01old00000000000000a"),
        ("01old00000000000000b", "docker", {"site": "docker", "reason": "asked for"}, None),
        ("01old00000000000000c", "kubernetes", None, None),
        ("01old00000000000000d", "local", {"site": 7}, None),  # not a name: the kind stays
    ]  # fmt: skip
    for job_id, site, placement, handle in rows:
        conn.execute(
            "INSERT INTO jobs (id, key, name, spec, site, placement, state, handle, created_at,"
            " updated_at) VALUES (?, ?, 'train', '{}', ?, ?, ?, ?, 1, 1)",
            (job_id, job_id, site, None if placement is None else _json.dumps(placement),
             "pending" if handle else "submitted", handle),
        )  # fmt: skip
    conn.close()
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCHSHIP_SITES", str(tmp_path / "no-sites.toml"))  # workstation: gone
    with JobStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        assert [j.site for j in store.jobs()] == ["workstation", "docker", "kubernetes", "local"]
        assert [j.id for j in store.jobs(site="workstation")] == ["01old00000000000000a"]
        kinds = [r[0] for r in store.db.execute("SELECT site FROM jobs ORDER BY id")]
        assert kinds == ["local", "docker", "kubernetes", "local"]  # kept, as written
        old = store.jobs(site="workstation")[0]
        seen = reconcile(store, old)  # no sites file: the handle's scheme finds its kind
        assert seen.state == "lost" and "supervisor" in store.events(old.id)[-1].detail["reason"]
        new, _ = store.submit("k-new", "train", {}, site="onprem")
        assert store.get(new.id).site == "onprem"
        assert store.db.execute("SELECT site, site_name FROM jobs WHERE id = ?",
                                (new.id,)).fetchone()[:] == (None, "onprem")  # fmt: skip
