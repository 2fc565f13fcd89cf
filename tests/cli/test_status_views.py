"""`torchship status` views and `torchship state prune|vacuum`, as a user runs them (issue 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import run_cli
from torchship.state import JobStore


def _store(home: Path, finished: int, running: int, prefix: str = "k") -> list[str]:
    ids = []
    with JobStore(home / "jobs.db") as store:
        for i in range(finished + running):
            job, _ = store.submit(f"{prefix}{i}", f"job{i}", {}, site=("onprem", "cloud")[i % 2])
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
                      (["--limit", "0"], "--limit 0: must be 1 to 1,000,000,000")):  # fmt: skip
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


# --- what an adversarial review broke (2026-12-01): each promise, kept -------------------------


def _usage(r: subprocess.CompletedProcess[str], says: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stdout + r.stderr
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert lines[1].startswith("hint: ") and "Traceback" not in r.stderr


def test_an_empty_job_is_refused_not_taken_for_the_only_one(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path)}
    [only] = _store(tmp_path, 0, 1)
    for command in (("cancel", ""), ("logs", " "), ("status", "")):
        _usage(run_cli(*command, env=env), "the job is empty")
    with JobStore(tmp_path / "jobs.db") as store:
        assert store.get(only) is not None and store.get(only).state == "lost"  # type: ignore[union-attr]
    _usage(run_cli("status", only.upper(), env=env), f"no job {only.upper()!r}")
    assert "lower-case" in run_cli("status", only.upper(), env=env).stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["status", "--since=\u00b2d"], "not an age or a date"),
        (["status", "--since", "\u0661d"], "not an age or a date"),  # Arabic-Indic 1
        (["status", "--since", "0001-01-01"], ""),  # a date: counted from, or said it cannot be
        (["status", "--limit", "99999999999999999999999"], "--limit 99999999999999999999999"),
        (["status", "--all", "--limit", "5"], "--all and --limit"),
        (["status", "--since="], "--since is empty"),
        (["status", "--site", ""], "--site is empty"),
        (["status", "k1", "--state", "running"], "--state select jobs for the listing"),
        (["status", "k1", "--archived"], "--archived select jobs for the listing"),
        (["state", "check", "--db", ""], "--db is empty"),
        (["state", "prune", "--older-than=-1"], "--older-than -1"),
        (["state", "prune", "--older-than=nan"], "--older-than nan"),
        (["state", "prune", "--older-than=inf"], "--older-than inf"),
        (["state", "prune", "--older-than=1e308"], "--older-than 1e+308"),
        (["run", "--detach", "--key", " ", "job.toml"], "--key is empty"),
    ],
)
def test_bad_flags_are_usage_errors_never_internal_ones(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path / "home")}  # no store yet: refused all the same
    r = run_cli(*argv, env=env)
    if argv[-1] == "0001-01-01":  # where the machine can count back to year 1 it is a date
        assert r.returncode in (0, 2) and "internal error" not in r.stderr, r.stderr
        return
    _usage(r, says)


def test_the_more_note_only_when_there_are_more(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path)}
    _store(tmp_path, 0, 2, prefix="old")  # active, older than the 50: listed all the same
    _store(tmp_path, 50, 0)
    assert "--all" not in run_cli("status", env=env).stderr  # exactly 50: nothing more
    _store(tmp_path, 1, 0, prefix="more")
    assert "--all" in run_cli("status", env=env).stderr


def test_an_event_that_does_not_read_is_damage_named_not_a_crash(tmp_path: Path) -> None:
    import sqlite3

    env = {"TORCHSHIP_HOME": str(tmp_path)}
    [job] = _store(tmp_path, 1, 0)
    db = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    db.execute("PRAGMA ignore_check_constraints = 1")
    db.execute("UPDATE job_events SET detail = '{not json' WHERE job_id = ?", (job,))
    db.close()
    r = run_cli("status", job, env=env)
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "internal" not in r.stderr


def test_an_endless_busy_timeout_is_a_long_one(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path), "TORCHSHIP_BUSY_TIMEOUT_S": "inf"}
    _store(tmp_path, 1, 0)
    assert run_cli("status", env=env).returncode == 0


@contextmanager
def _another_process(db: Path, statements: str) -> Iterator[None]:
    """A Python process holding `db` open in a transaction (`statements`) until the block ends."""
    code = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
            f"{statements}; print('in', flush=True); time.sleep(30)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"in\n"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_prune_under_another_writer_says_locked(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path), "TORCHSHIP_BUSY_TIMEOUT_S": "0.5"}
    _store(tmp_path, 5, 0)
    writing = "c.execute('BEGIN IMMEDIATE'); c.execute('UPDATE jobs SET name = name')"
    with _another_process(tmp_path / "jobs.db", writing):
        _usage(run_cli("state", "prune", "--older-than", "0", env=env), "is locked")


def test_vacuum_with_a_reader_open_says_so(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path), "TORCHSHIP_BUSY_TIMEOUT_S": "0.5"}
    _store(tmp_path, 200, 0)
    assert run_cli("state", "prune", "--older-than", "0", env=env).returncode == 0
    reading = "c.execute('BEGIN'); c.execute('SELECT count(*) FROM jobs').fetchone()"
    with _another_process(tmp_path / "jobs.db", reading):
        r = run_cli("state", "vacuum", env=env)
    _usage(r, "is being read by another process")
    assert run_cli("state", "vacuum", env=env).returncode == 0  # the reader gone: done


def test_a_damaged_archive_is_named_as_the_archive(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path)}
    _store(tmp_path, 300, 0)
    assert run_cli("state", "prune", "--older-than", "0", env=env).returncode == 0
    archive = tmp_path / "jobs-archive.db"
    with open(archive, "r+b") as f:  # garbage over its pages after the first
        f.seek(4096)
        f.write(bytes(range(256)) * 16 * 8)
    _store(tmp_path, 5, 0, prefix="new")
    for argv in (("state", "prune", "--older-than", "0"), ("status", "--archived", "--all")):
        r = run_cli(*argv, env=env)
        assert r.returncode == 2 and "jobs-archive.db" in r.stderr.splitlines()[0], r.stderr
        assert f"--db {archive}" in r.stderr, r.stderr
    checked = run_cli("state", "check", env=env)
    assert checked.returncode == 1 and "archive" in checked.stdout and "✗" in checked.stdout


def test_where_the_store_cannot_be_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _usage(
        run_cli("status", env={"TORCHSHIP_HOME": str(tmp_path / "file")}), "is a file, not a folder"
    )
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "jobs.db").symlink_to(tmp_path / "nowhere" / "jobs.db")
    _usage(run_cli("status", env={"TORCHSHIP_HOME": str(tmp_path / "h")}), "which does not exist")
    (tmp_path / "d" / "jobs.db").mkdir(parents=True)
    _usage(run_cli("state", "prune", env={"TORCHSHIP_HOME": str(tmp_path / "d")}), "is a directory")


def test_a_full_disk_under_stdout_is_said_not_a_bug(tmp_path: Path) -> None:
    """Said once, exit 1, buffered (a file) or not; a buffered stdout used to fail only at the
    interpreter's last flush: exit 0 or 120 with Python's own message."""
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full on this system")
    _store(tmp_path, 3, 0)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["TORCHSHIP_HOME"] = str(tmp_path)
    for unbuffered in ({}, {"PYTHONUNBUFFERED": "1"}):
        # argparse drops an error writing its help (_print_message); written unbuffered, the
        # help's full disk is argparse's to say, and it says nothing: not checked there
        helps = [] if unbuffered else [["--help"], ["status", "--help"]]
        for argv in (["status"], ["--version"], *helps):
            with open(full, "w") as out:
                r = subprocess.run([sys.executable, "-m", "torchship", *argv], stdout=out,
                                   stderr=subprocess.PIPE, text=True, check=False,
                                   env={**env, **unbuffered})  # fmt: skip
            said = r.stderr.count("no space left")
            assert r.returncode == 1 and said == 1 and "Exception" not in r.stderr, (argv, r.stderr)


def test_the_archive_where_it_cannot_be_and_checks_that_say_so(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path)}
    _store(tmp_path, 3, 0)
    archive = tmp_path / "jobs-archive.db"
    archive.symlink_to(tmp_path / "nowhere.db")
    for argv in (("status", "--archived"), ("state", "prune", "--older-than", "0")):
        _usage(run_cli(*argv, env=env), "which does not exist")
    checked = run_cli("state", "check", "--json", env=env)
    doc = json.loads(checked.stdout)
    assert checked.returncode == 1 and doc["ok"] is False and doc["store_ok"] is True
    assert doc["archive"]["ok"] is False
    archive.unlink()
    assert run_cli("state", "prune", "--older-than", "0", env=env).returncode == 0
    _usage(run_cli("state", "prune", "--db", str(archive), env=env), "its jobs are archived")
    assert run_cli("status", "--archived", "--state", "failed", env=env).stdout.strip() == (
        "no archived jobs match"
    )


def test_state_commands_where_home_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    env = {"TORCHSHIP_HOME": str(tmp_path / "file")}
    for verb in ("check", "repair", "prune", "vacuum"):
        _usage(run_cli("state", verb, env=env), "is a file, not a folder")


def test_a_key_in_capitals_is_not_told_to_be_lower_case(tmp_path: Path) -> None:
    env = {"TORCHSHIP_HOME": str(tmp_path)}
    _store(tmp_path, 1, 0)
    r = run_cli("status", "K0", env=env)
    assert r.returncode == 2 and "lower-case" not in r.stderr
