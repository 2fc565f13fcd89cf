"""`torchship status` views and `torchship state prune|vacuum`, as a user runs them (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from torchship.state import JobStore


def _store(home: Path, finished: int, running: int) -> list[str]:
    ids = []
    with JobStore(home / "jobs.db") as store:
        for i in range(finished + running):
            job, _ = store.submit(f"k{i}", f"job{i}", {}, site=("onprem", "cloud")[i % 2])
            if i < finished:  # finished long ago
                store.transition(job.id, "succeeded", exit_code=0, at=1_000_000.0 + i)
            else:  # lost and no longer checked: active, never asked about here
                store.transition(job.id, "lost")
            ids.append(job.id)
    return ids


def test_status_shows_active_and_recent_then_more_on_request(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path)}
    ids = _store(tmp_path, 80, 2)
    listed = run_cli("status", "--limit", "10", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    # the newest by id (time-sortable to the millisecond); the 2 lost ones are among them
    assert {r["id"] for r in rows} == set(sorted(ids)[-10:]) | set(ids[80:])
    everything = run_cli("status", "--all", "--site", "cloud", "--json", env=env)
    assert [r["id"] for r in json.loads(everything.stdout)] == sorted(ids[1::2])
    table = run_cli("status", env=env)
    assert len(table.stdout.splitlines()) == 1 + 50 and "--all" in table.stderr
    for bad, said in ((["--since", "yesterday"], "--since 'yesterday': not an age or a date"),
                      (["--limit", "0"], "--limit 0: must be at least 1")):  # fmt: skip
        r = run_cli("status", *bad, env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and lines[0] == f"error: {said}" and lines[1].startswith("hint:")


def test_prune_moves_old_jobs_to_the_archive_and_status_still_finds_them(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path)}
    ids = _store(tmp_path, 30, 1)
    assert json.loads(run_cli("status", "--archived", "--json", env=env).stdout) == []
    pruned = run_cli("state", "prune", "--json", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["jobs"] == 30
    live = json.loads(run_cli("status", "--all", "--json", env=env).stdout)
    assert [r["id"] for r in live] == [ids[30]]
    archived = json.loads(run_cli("status", "--archived", "--all", "--json", env=env).stdout)
    assert sorted(r["id"] for r in archived) == sorted(ids[:30])
    one = run_cli("status", "k7", "--json", env=env)  # by key, from the archive
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["archived"] is True and json.loads(one.stdout)["id"] == ids[7]
    vacuumed = run_cli("state", "vacuum", "--json", env=env)
    assert vacuumed.returncode == 0, vacuumed.stderr
    sizes = {Path(v["path"]).name: v for v in json.loads(vacuumed.stdout)}
    assert sizes["jobs.db"]["after_bytes"] <= sizes["jobs.db"]["before_bytes"]
    bad = run_cli("state", "prune", env={**env, "TORCHSHIP_RETENTION_DAYS": "a month"})
    assert bad.returncode == 2 and "TORCHSHIP_RETENTION_DAYS" in bad.stderr
