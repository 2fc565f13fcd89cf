"""8 processes x 1,000 submissions while writers are randomly SIGKILLed: nothing lost or
duplicated, and the database passes PRAGMA integrity_check."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from torchship.state import JobStore

WORKERS, PER_WORKER = 8, 1000


def spawn(db: Path, worker: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store_worker", str(db), str(worker), str(PER_WORKER)],
        cwd=REPO,
    )


def written(conn: sqlite3.Connection, worker: int) -> int:
    return int(
        conn.execute("SELECT COUNT(*) FROM jobs WHERE key LIKE ?", (f"{worker}-%",)).fetchone()[0]
    )


@pytest.mark.slow
def test_concurrent_writers_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    JobStore(db).close()
    rng = random.Random(1234)
    # Each writer is killed once, mid-write: after it has stored a random 100-700 of its rows.
    kill_at = {w: rng.randint(100, 700) for w in range(WORKERS)}
    procs = {w: spawn(db, w) for w in range(WORKERS)}
    watch = sqlite3.connect(db, timeout=30)
    kills = 0
    deadline = time.monotonic() + 240
    while procs and time.monotonic() < deadline:
        time.sleep(0.002)
        for w, p in list(procs.items()):
            if p.poll() is not None:
                assert p.returncode == 0, f"worker {w} failed with {p.returncode}"
                del procs[w]
            elif w in kill_at and written(watch, w) >= kill_at[w]:
                p.send_signal(signal.SIGKILL)
                p.wait()
                del kill_at[w]
                kills += 1
                procs[w] = spawn(db, w)  # restart: it resubmits every key, idempotently
    assert not procs, "writers did not finish in time"
    assert kills >= WORKERS - 1  # a writer may finish before its threshold is seen
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT key FROM jobs").fetchall()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)) == WORKERS * PER_WORKER  # nothing lost, nothing twice
    events = conn.execute("SELECT COUNT(*) FROM job_events WHERE state = 'submitted'").fetchone()[0]
    assert events == WORKERS * PER_WORKER
    orphans = conn.execute(
        "SELECT COUNT(*) FROM job_events e LEFT JOIN jobs j ON j.id = e.job_id WHERE j.id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
