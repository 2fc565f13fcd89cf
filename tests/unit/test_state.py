"""The job store: idempotent submission, transitions with events, schema migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from torchship.errors import UsageError
from torchship.state import SCHEMA_VERSION, JobStore, StoreError


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


def test_json_columns_are_checked(store: JobStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute(
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
