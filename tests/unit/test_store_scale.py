"""The job store at scale (issue 20): listings, the exporter's tallies and lookups answer in a
number of steps that does not grow with the history; finished jobs move to an archive that
commands still read; lost jobs are asked about with backoff, then not at all; a store of
today's schema (3) migrates, rows intact, on a real 100,000-job file.

The jobs here are made by the store's own submit/transition, except the 100,000-job file,
which is written as schema 3 wrote it (its migrations, its columns), in one transaction."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from torchship.backends.base import SiteStatus
from torchship.errors import TorchshipError, UsageError
from torchship.jobs import LOST_CHECK_FOR_S, get_job, reconcile, reconcile_all
from torchship.spec.job import load_job
from torchship.state import MIGRATIONS, NEVER, JobStore, Query
from torchship.store_archive import (
    _any_due,
    archive_path,
    archived_events,
    move_due,
    retention_s,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "quickstart" / "job.toml"
# the old tallies query, as schema 3's JobStore.tallies ran it over every row (git a1e0077)
OLD_TALLIES = (
    "SELECT state, COALESCE(site_name, site, '') AS site,"
    " COALESCE(json_extract(placement, '$.site'), site_name, site, '') AS placed,"
    " COALESCE(json_extract(placement, '$.decision'), 'asked') AS decision,"
    " COUNT(*) AS n,"
    " SUM(COALESCE(json_extract(placement, '$.usd_per_hour'), 0) * MAX(0,"
    "  (CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'lost')"
    "   THEN updated_at ELSE ? END) - created_at) / 3600.0) AS usd"
    " FROM jobs GROUP BY 1, 2, 3, 4"
)


def _same_tallies(a: list[tuple], b: list[tuple]) -> None:  # type: ignore[type-arg]
    ka = {r[:5]: r[5] for r in a if r[4]}
    kb = {r[:5]: r[5] for r in b if r[4]}
    assert ka.keys() == kb.keys()
    for k, usd in ka.items():
        assert usd == pytest.approx(kb[k], rel=1e-9, abs=1e-9), k


def _placement(site: str, rate: float) -> dict[str, object]:
    return {"site": site, "decision": random.choice(["local", "burst"]), "usd_per_hour": rate,
            "reason": "placed by the test", "rejected": []}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with JobStore(tmp_path / "jobs.db") as s:
        yield s


def test_tallies_kept_by_triggers_agree_with_a_scan_after_every_change(store: JobStore) -> None:
    rnd = random.Random(7)
    random.seed(7)
    ids: list[str] = []
    nexts = {"submitted": ["pending", "running", "failed", "lost"], "pending": ["running", "lost"],
             "running": ["succeeded", "failed", "cancelled", "lost"],
             "lost": ["running", "succeeded", "pending"], "failed": ["pending"]}  # fmt: skip
    for step in range(400):
        if not ids or rnd.random() < 0.3:
            site = rnd.choice(["onprem", "cloud", "local"])
            job, _ = store.submit(f"k{step}", "train", {"n": step}, site=site,
                                  placement=rnd.choice([None, _placement(site, 2.5)]))  # fmt: skip
            ids.append(job.id)
        else:
            job = store.get(rnd.choice(ids))
            assert job is not None
            if job.state in nexts:
                store.transition(job.id, rnd.choice(nexts[job.state]), exit_code=rnd.choice([0, 1]))
        if step % 25 == 0:
            now = time.time() + rnd.random() * 3600
            _same_tallies(store.tallies(now), store.tallies_by_scan(now))
            old = [tuple(r) for r in store.db.execute(OLD_TALLIES, (now,))]
            _same_tallies(store.tallies(now), old)


def _fill(store: JobStore, finished: int, active: int) -> list[str]:
    """`finished` jobs then `active` ones (lost among them, and one lost no longer checked)."""
    ids = []
    for i in range(finished + active):
        site = ("onprem", "cloud")[i % 2]
        job, _ = store.submit(f"k{i}", f"job{i}", {}, site=site)
        if i < finished:
            store.transition(job.id, ("succeeded", "failed", "cancelled")[i % 3], at=1000.0 + i)
        elif i % 5 == 0:
            store.transition(job.id, "lost")
        else:
            store.transition(job.id, "running", handle=f"toy://x/{job.id}")
        ids.append(job.id)
    return ids


def test_the_default_view_is_the_active_jobs_and_the_newest_n(store: JobStore) -> None:
    ids = _fill(store, 300, 20)
    stopped = ids[300]  # lost: stop checking it
    store.stop_checking(stopped, "gone")
    every = store.jobs()
    active = {j.id for j in every if j.state in ("running", "lost") and j.id != stopped}
    newest = {j.id for j in every[-50:]}
    shown = [x.id for x in store.lines(Query())]
    assert shown == sorted(active | newest) and stopped in newest
    shown = [x.id for x in store.lines(Query(limit=5))]
    assert shown == sorted(active | {j.id for j in every[-5:]})
    assert stopped not in {j.id for j in store.active()} and store.has_active()
    # every filter, against the same filter done in Python over every job
    for q in (Query(states=("failed",), limit=None), Query(site="cloud", limit=10),
              Query(since=every[150].created_at, limit=None), Query(limit=None),
              Query(states=("running", "lost"), site="onprem", limit=3)):  # fmt: skip
        match = [j for j in every if (not q.states or j.state in q.states)
                 and (q.site is None or j.site == q.site)
                 and (q.since is None or j.created_at >= q.since)]  # fmt: skip
        want = {j.id for j in match} if q.limit is None else (
            {j.id for j in match[-q.limit:]} | {j.id for j in match if j.id in active})  # fmt: skip
        got = list(store.lines(q))
        assert {x.id for x in got} == want and len(got) == len(want), q
        by_time = q.since is not None and q.limit is None  # oldest first, by submission time
        assert got == sorted(got, key=lambda x: x.created_at if by_time else x.id), q
    assert [x.placement() for x in store.lines(Query(limit=1, placement=True))][-1] is None


def _steps(store: JobStore, run: object) -> int:
    """SQLite virtual-machine steps a call takes (a progress handler every 100 ops)."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    store.db.set_progress_handler(tick, 100)
    try:
        run()  # type: ignore[operator]
    finally:
        store.db.set_progress_handler(None, 100)
    return count[0]


@pytest.mark.parametrize("statistics", [False, True])
def test_listing_lookup_and_tallies_do_not_grow_with_the_history(
    tmp_path: Path, statistics: bool
) -> None:
    """The same questions of a store of 1,000 and of 20,000 finished jobs (20 active in each):
    the work SQLite does (its VM steps) stays within 1.5× (a scan would be 20×), with and
    without the statistics ANALYZE gives SQLite's planner."""
    steps = []
    for n in (1_000, 20_000):
        with JobStore(tmp_path / f"{n}.db") as s:
            ids = _bulk(s, n)
            if statistics:
                s.db.execute("ANALYZE")
            steps.append(_questions(s, ids, time.time()))
    for small, big in zip(*steps, strict=True):
        assert big <= 1.5 * small + 3, steps


def _questions(s: JobStore, ids: list[str], now: float) -> list[int]:
    n = len(ids)
    calls = (
        lambda: list(s.lines(Query())),
        lambda: list(s.lines(Query(site="cloud"))),
        lambda: list(s.lines(Query(states=("running",)))),
        lambda: list(s.lines(Query(since=now - 60))),
        lambda: list(s.lines(Query(states=("succeeded", "failed")))),
        lambda: list(s.lines(Query(since=now - 60, states=("succeeded",)))),
        s.active,
        lambda: s.tallies(now),
        lambda: s.get(ids[n // 2]),
        lambda: s.get(ids[n // 3][:16]),
        lambda: _any_due(s, now - 2 * 365 * 86400, now),  # the archive's question: none due
    )
    return [_steps(s, c) for c in calls]


def _bulk(store: JobStore, n: int, active: int = 20) -> list[str]:
    """n finished jobs and `active` running ones, written as submit and transition write them
    (same columns, same JSON), in one transaction."""
    spec = json.dumps(asdict(load_job(EXAMPLE)), sort_keys=True)
    rows, ids = [], []
    t0 = time.time() - 86400 * 60
    for i in range(n + active):
        at = t0 + i
        job_id = f"{int(at * 1000):012x}{i:08x}"
        site = ("onprem", "cloud")[i % 2]
        state = "running" if i >= n else ("succeeded", "failed", "cancelled")[i % 3]
        placement = json.dumps(_placement(site, 3.0), sort_keys=True)
        rows.append((job_id, f"key-{i}", f"job{i}", spec, site, placement, state,
                     f"toy://x/{job_id}", at, at + 60))  # fmt: skip
        ids.append(job_id)
    store.db.execute("BEGIN")
    store.db.executemany(
        "INSERT INTO jobs (id, key, name, spec, site_name, placement, state, handle,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    store.db.execute("COMMIT")
    return ids


@pytest.mark.e2e  # 7-8 s; the default suite migrates 10,000 jobs the same way (below)
def test_a_schema_3_store_of_100000_jobs_migrates_with_every_row_intact(tmp_path: Path) -> None:
    _migrates_intact(tmp_path, 100_000)


def test_a_schema_3_store_of_10000_jobs_migrates_with_every_row_intact(tmp_path: Path) -> None:
    _migrates_intact(tmp_path, 10_000)


def _migrates_intact(tmp_path: Path, n: int) -> None:
    path = tmp_path / "jobs.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    for version in (1, 2, 3):
        for statement in MIGRATIONS[version]:
            db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    spec = json.dumps(asdict(load_job(EXAMPLE)), sort_keys=True)
    t0 = time.time() - 86400 * 90
    rows, events = [], []
    placements = {site: json.dumps(_placement(site, 4.0), sort_keys=True)
                  for site in ("onprem", "cloud", "slurm")}  # fmt: skip
    for i in range(n):
        at = t0 + i * 60
        job_id = f"{int(at * 1000):012x}{i:08x}"
        state = ("succeeded", "failed", "cancelled", "running", "lost")[i % 5] if i > n - 100 \
            else ("succeeded", "failed", "cancelled")[i % 3]  # fmt: skip
        site = ("onprem", "cloud", "slurm")[i % 3]
        placement = placements[site]
        rows.append((job_id, f"key-{i}", f"job{i}", spec, None, site, placement, state,
                     f"toy://x/{job_id}", i % 2, at, at + 300, None, None, site))  # fmt: skip
        events += [(job_id, "submitted", at, None), (job_id, state, at + 300, None)]
    db.executemany(f"INSERT INTO jobs VALUES ({', '.join('?' * 15)})", rows)
    db.executemany("INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
                   events)  # fmt: skip
    db.execute("COMMIT")
    now = time.time()
    before = [tuple(r) for r in db.execute(OLD_TALLIES, (now,))]
    every = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    db.close()

    started = time.perf_counter()
    with JobStore(path) as store:
        took = time.perf_counter() - started
        assert store.schema_version == 4
        print(f"migrated {n:,} jobs from schema 3 to 4 in {took:.2f} s")
        after = store.db.execute(
            "SELECT id, key, name, spec, lock_hash, site, placement, state, handle, exit_code,"
            " created_at, updated_at, claimed_by, claimed_until, site_name FROM jobs ORDER BY id"
        ).fetchall()
        assert [tuple(r) for r in after] == [tuple(r) for r in every]
        _same_tallies(store.tallies(now), before)
        shown = list(store.lines(Query()))
        assert len(shown) == 50 + 20  # the 50 newest, and the 20 running or lost before them
        assert store.get("key-4242") is not None and store.get(rows[77][0][:18]) is not None
        assert len(store.events(rows[5][0])) == 2


def test_finished_jobs_move_to_the_archive_and_are_still_found(store: JobStore) -> None:
    ids = _fill(store, 30, 3)  # finished at 1000 s past the epoch: long past any retention
    before = store.tallies(time.time())
    moved = move_due(store, older_than_s=86400, batch=7)
    assert (moved.jobs, moved.left) == (30, False) and moved.events == 60
    assert {j.id for j in store.jobs()} == set(ids[30:])
    _same_tallies(store.tallies(time.time()), before)  # counts of every job ever, unchanged
    old = get_job(store, ids[4])
    assert old.archived and old.state == "failed" and old.key == "k4"
    assert get_job(store, "k4") == old and get_job(store, ids[4][:17]).id == ids[4]
    assert [e.state for e in archived_events(store, ids[4])] == ["submitted", "failed"]
    assert reconcile(store, old) == old  # an archived job is never asked about
    again, created = store.submit("k4", "job4", {}, site="cloud")
    assert not created and again.id == ids[4] and again.archived
    with JobStore(archive_path(store.path)) as archive:
        assert {j.id for j in archive.jobs()} == set(ids[:30])


def test_a_move_cut_short_loses_and_duplicates_nothing(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchship.store_archive as archive_module

    ids = _fill(store, 6, 0)
    copy = archive_module._copy

    def copied_then_crashed(*args, **kwargs):  # type: ignore[no-untyped-def]
        copy(*args, **kwargs)  # step 1 committed in the archive, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(archive_module, "_copy", copied_then_crashed)
    with pytest.raises(KeyboardInterrupt):
        move_due(store, 0.0)
    with JobStore(archive_path(store.path)) as archive:
        assert {j.id for j in archive.jobs()} == set(ids)  # in both files now
    assert len(store.jobs()) == 6 and not get_job(store, ids[0]).archived  # read here first
    monkeypatch.setattr(archive_module, "_copy", copy)
    assert move_due(store, 0.0).jobs == 6 and store.jobs() == []
    with JobStore(archive_path(store.path)) as archive:
        assert {j.id for j in archive.jobs()} == set(ids)
        assert all(len(archive.events(i)) == 2 for i in ids)  # once each, not twice


def test_a_failed_job_being_retried_is_not_moved(store: JobStore) -> None:
    from torchship.state import owner_id

    job, _ = store.submit("k", "train", {}, site="cloud")
    store.transition(job.id, "failed", detail={"reason": "apply failed: no quota"}, at=1000.0)
    assert store.claim(job.id, owner_id()) is not None  # a retry by its key, applying now
    assert move_due(store, 86400).jobs == 0 and store.get(job.id) is not None
    store.transition(job.id, "failed", at=1000.0)  # that retry failed too: its claim ends
    assert move_due(store, 86400).jobs == 1


MOVER = """
import sys
from torchship.state import JobStore
from torchship.store_archive import move_due
with JobStore(sys.argv[1]) as store:
    print(move_due(store, 0.0, batch=97).jobs)
"""


def test_two_moves_at_once_move_each_job_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    with JobStore(tmp_path / "jobs.db") as store:
        ids = _fill(store, 1500, 0)
    movers = [subprocess.Popen([sys.executable, "-c", MOVER, str(tmp_path / "jobs.db")],
                               stdout=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    moved = [int(m.communicate(timeout=120)[0]) for m in movers]
    assert sum(moved) == 1500, moved
    with JobStore(tmp_path / "jobs.db") as store:
        assert store.jobs() == []
        assert store.db.execute("SELECT COUNT(*) FROM archived_keys").fetchone()[0] == 1500
    with JobStore(archive_path(tmp_path / "jobs.db")) as archive:
        assert sorted(j.id for j in archive.jobs()) == sorted(ids)
        assert archive.db.execute("SELECT COUNT(*) FROM job_events").fetchone()[0] == 3000


def test_repair_keeps_what_the_store_knows_of_its_archive(store: JobStore) -> None:
    from torchship.store_health import repair

    _fill(store, 10, 2)
    before = store.tallies(time.time())
    move_due(store, 86400)
    path = store.path
    store.close()
    path.with_name("jobs.db-wal").write_bytes(random.Random(3).randbytes(9000))  # damaged
    assert repair(path, 1.0) is not None
    with JobStore(path) as fixed:
        _same_tallies(fixed.tallies(time.time()), before)  # archived jobs still count
        again, created = fixed.submit("k3", "job3", {}, site="cloud")
        assert not created and again.archived  # an archived job's key is still that job


def test_a_prefix_is_unique_across_the_store_and_its_archive(store: JobStore) -> None:
    old, _ = store.submit("k-old", "a", {}, site="x", job_id="abc0000000000000000a")
    store.transition(old.id, "succeeded", at=1000.0)
    move_due(store, 86400)
    new, _ = store.submit("k-new", "b", {}, site="x", job_id="abc0000000000000000b")
    with pytest.raises(UsageError, match="'abc' is the start of 2 job ids"):
        get_job(store, "abc")
    assert get_job(store, new.id) == new and get_job(store, old.id).archived


def test_retention_comes_from_the_environment() -> None:
    assert retention_s("") == 30 * 86400 and retention_s("7") == 7 * 86400
    assert retention_s("never") is None and retention_s("0") is None
    assert retention_s("0.0") is None and retention_s("-0") is None
    for bad in ("-3", "a week", "inf", "nan"):
        with pytest.raises(UsageError, match="TORCHSHIP_RETENTION_DAYS"):
            retention_s(bad)


class _SaysLost:
    """A backend whose site does not know the jobs (a stand-in: the schedule is under test)."""

    kind = "toy"

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def statuses(self, handles: list[str]) -> dict[str, SiteStatus | TorchshipError]:
        self.asked.append(list(handles))
        return {h: SiteStatus("lost", reason="no such job") for h in handles}

    def status(self, handle: str) -> SiteStatus:
        self.asked.append([handle])
        return SiteStatus("lost", reason="no such job")


def test_a_lost_job_is_asked_with_backoff_then_not_at_all(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchship.jobs as jobs_module

    site = _SaysLost()
    monkeypatch.setattr(jobs_module, "backend_for_job", lambda job: site)
    job, _ = store.submit("k", "train", {}, site="toybox")
    job = store.transition(job.id, "lost", handle="toy://x/1", detail={"reason": "no such job"})
    t0 = job.updated_at
    ((job, why),) = reconcile_all(store, [job], now=t0 + 1)
    assert why is None and len(site.asked) == 1 and job.recheck_at == pytest.approx(t0 + 61)
    reconcile_all(store, [job], now=t0 + 30)  # not due yet: the site is not asked
    assert len(site.asked) == 1
    job = store.get(job.id)
    assert job is not None
    ((job, _),) = reconcile_all(store, [job], now=t0 + 62)
    assert len(site.asked) == 2 and job.recheck_at == pytest.approx(t0 + 62 + 60)
    job = store.get(job.id)
    assert job is not None
    ((job, _),) = reconcile_all(store, [job], now=t0 + 86400)  # a day lost: again in 1 h at most
    assert job.recheck_at == pytest.approx(t0 + 86400 + 3600)
    ((job, _),) = reconcile_all(store, [store.get(job.id)], now=t0 + LOST_CHECK_FOR_S + 1)  # type: ignore[list-item]
    assert job.recheck_at == NEVER and job.state == "lost"
    assert "stopped asking" in (store.events(job.id)[-1].detail or {})["reason"]
    assert job.id not in {j.id for j in store.active()} and not store.has_active()
    asked = len(site.asked)
    again = reconcile(store, job)  # asked for by name: asked whatever the schedule
    assert len(site.asked) == asked + 1
    assert again == job and again.updated_at == t0  # still lost since then, still not checked


def test_reconcile_all_asks_each_site_once_whatever_the_number_of_jobs(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchship.jobs as jobs_module

    sites: dict[str, _SaysLost] = {}
    monkeypatch.setattr(jobs_module, "backend_for_job",
                        lambda job: sites.setdefault(job.site or "", _SaysLost()))  # fmt: skip
    for n in (1, 10, 100):
        sites.clear()
        jobs = []
        for i in range(n):
            for name in ("a", "b"):
                job, _ = store.submit(f"{n}-{i}-{name}", "t", {}, site=name)
                jobs.append(store.transition(job.id, "running", handle=f"toy://{name}/{job.id}"))
        out = reconcile_all(store, jobs)
        assert [j.state for j, _ in out] == ["lost"] * 2 * n
        assert {k: len(v.asked) for k, v in sites.items()} == {"a": 1, "b": 1}


def test_a_damaged_archive_is_named_with_the_commands_that_fix_it(store: JobStore) -> None:
    from torchship.state import StoreError

    _fill(store, 3, 0)
    move_due(store, 86400)
    archive = archive_path(store.path)
    archive.write_bytes(b"not an archive\n" * 300)  # a truncated copy, a careless restore
    with pytest.raises(StoreError) as seen:
        get_job(store, "k1")
    assert str(archive) in seen.value.message
    assert f"`torchship state repair --db {archive}`" in seen.value.hint
