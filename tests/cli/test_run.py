"""`torchship run/status/logs/cancel` end to end on the local site: real torchrun processes,
a real SQLite store under a temporary TORCHSHIP_HOME, no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from torchship.backends.supervise import job_pids

pytest.importorskip("torch", reason="local runs start torchrun (pip install -e '.[dev]')")

JOB = """
[job]
name = "tiny"
workload = "reference"
processes_per_node = 2
retries = 0
[job.workload_args]
steps = {steps}
d_model = 32
layers = 1
heads = 2
seq_len = 32
log_every = 10
"""


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    return {"TORCHSHIP_HOME": str(tmp_path / "home")}


def job_file(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / "proj" / "job.toml"  # no torchship.lock up the tree: a warning only
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(JOB.format(steps=steps))
    return path


def status(home: dict[str, str], *args: str) -> object:
    r = run_cli("status", "--json", *args, env=home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_run_follows_the_job_and_ends_with_a_summary(tmp_path: Path, home: dict[str, str]) -> None:
    r = run_cli("run", str(job_file(tmp_path, 20)), env=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "! [lock] no-lock" in r.stdout and "preflight: 0 error(s), 1 warning(s)" in r.stdout
    assert "step 20/20" in r.stdout
    last = r.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("job ") and " succeeded on local://" in last[0]
    assert "tokens/s" in last[1] and "2 rank(s) on cpu (gloo)" in last[1]
    assert "parameters identical on all ranks" in last[1]
    (job,) = status(home)  # type: ignore[misc]
    assert job["state"] == "succeeded" and job["exit_code"] == 0 and job["site"] == "local"
    detail = status(home, job["id"][:10])
    assert [e["state"] for e in detail["events"]] == ["submitted", "pending", "succeeded"] or [  # type: ignore[index]
        e["state"]
        for e in detail["events"]  # type: ignore[index]
    ] == ["submitted", "pending", "running", "succeeded"]
    logs = run_cli("logs", job["id"], env=home)
    assert "done: 20 steps" in logs.stdout and f"job {job['id']} succeeded" in logs.stdout


def test_detach_then_cancel_ends_every_process(tmp_path: Path, home: dict[str, str]) -> None:
    r = run_cli("run", str(job_file(tmp_path, 100_000)), "--detach", env=home)
    assert r.returncode == 0, r.stderr
    (job,) = status(home)  # type: ignore[misc]
    deadline = time.time() + 60
    while not job_pids(job["id"]) or "step 10/" not in run_cli("logs", job["id"], env=home).stdout:
        assert time.time() < deadline, run_cli("logs", job["id"], env=home).stdout
        time.sleep(0.2)
    assert status(home, job["id"])["state"] == "running"  # type: ignore[index]
    c = run_cli("cancel", job["id"], env=home)
    assert c.returncode == 0 and f"job {job['id']} cancelled" in c.stdout
    assert status(home, job["id"])["state"] == "cancelled"  # type: ignore[index]
    assert job_pids(job["id"]) == []  # supervisor, torchrun and both workers are gone
    again = run_cli("cancel", job["id"], env=home)
    assert "had already ended: cancelled" in again.stdout


def test_same_key_starts_one_job(tmp_path: Path, home: dict[str, str]) -> None:
    path = str(job_file(tmp_path, 10))
    first = run_cli("run", path, "--key", "nightly-1", env=home)
    second = run_cli("run", path, "--key", "nightly-1", env=home)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "already submitted with this key" in second.stdout
    assert len(status(home)) == 1  # type: ignore[arg-type]
    other = job_file(tmp_path / "other", 12)  # another job under the same key: refused
    third = run_cli("run", str(other), "--key", "nightly-1", "--detach", env=home)
    assert third.returncode == 2 and "key 'nightly-1' belongs to job" in third.stderr
    assert len(status(home)) == 1  # type: ignore[arg-type]


def test_preflight_refuses_a_gpu_job_here_and_dry_run_shows_the_plan(
    tmp_path: Path, home: dict[str, str]
) -> None:
    path = job_file(tmp_path, 10)
    path.write_text(path.read_text().replace("retries = 0", "retries = 0\ngpus_per_node = 2"))
    r = run_cli("run", str(path), env=home)
    assert r.returncode == 1
    assert "✗ [job] not-enough-gpus" in r.stderr
    assert (
        "error: preflight: " in r.stderr and "hint: fix them as shown, or pass --force" in r.stderr
    )
    assert status(home) == []  # nothing recorded, nothing started
    d = run_cli("run", str(path), "--dry-run", env=home)
    assert d.returncode == 1 and "would refuse" in d.stdout
    assert "-m torch.distributed.run --nnodes=1 --nproc-per-node=2" in d.stdout


def _training(tmp_path: Path, home: dict[str, str]) -> tuple[str, Path, dict[str, object]]:
    """A detached reference job, once both workers train: (job id, run folder, supervisor.json)."""
    r = run_cli("run", str(job_file(tmp_path, 100_000)), "--detach", env=home)
    assert r.returncode == 0, r.stderr
    (job,) = status(home)  # type: ignore[misc]
    run_dir = Path(home["TORCHSHIP_HOME"]) / "runs" / job["id"]
    deadline = time.time() + 60
    while "step 10/" not in run_cli("logs", job["id"], env=home).stdout:
        assert time.time() < deadline, run_cli("logs", job["id"], env=home).stdout
        time.sleep(0.2)
    # supervisor, torchrun and two workers (and the supervisor's reaper)
    assert len(job_pids(job["id"])) >= 4, job_pids(job["id"])
    return job["id"], run_dir, json.loads((run_dir / "supervisor.json").read_text())


def test_killed_supervisor_takes_its_workers_with_it(tmp_path: Path, home: dict[str, str]) -> None:
    """Killing the supervisor left torchrun and the workers training while `status` said
    `lost` forever."""
    job_id, _, sup = _training(tmp_path, home)
    os.kill(int(sup["pid"]), signal.SIGKILL)  # the supervisor dies without writing exit.json
    t0 = time.monotonic()
    while job_pids(job_id):
        assert time.monotonic() - t0 < 10, job_pids(job_id)
        time.sleep(0.05)
    print(f"no process of the job left {time.monotonic() - t0:.2f} s after SIGKILL")
    seen = status(home, job_id)
    assert seen["state"] == "failed"  # type: ignore[index]
    reason = seen["events"][-1]["detail"]["reason"]  # type: ignore[index]
    assert f"its supervisor (pid {sup['pid']}) died" in reason and "were stopped" in reason


def test_status_checks_the_processes_before_it_says_lost(
    tmp_path: Path, home: dict[str, str]
) -> None:
    """With its reaper killed too, the job's workers still train: `status` says so (not
    `lost`), and `cancel` ends them."""
    job_id, _, sup = _training(tmp_path, home)
    for pid in (sup.get("reaper"), sup["pid"]):
        if pid is not None:
            os.kill(int(pid), signal.SIGKILL)  # type: ignore[call-overload]
    time.sleep(0.5)
    seen = status(home, job_id)
    assert seen["state"] == "running", seen  # type: ignore[index]
    assert "its supervisor is gone but 3 of its processes still run" in str(seen)
    c = run_cli("cancel", job_id, env=home)
    assert c.returncode == 0 and f"job {job_id} cancelled" in c.stdout, c.stdout + c.stderr
    assert job_pids(job_id) == []
    assert status(home, job_id)["state"] == "cancelled"  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["status", "nope"], "error: no job 'nope'"),
        (["logs", "nope"], "error: no job 'nope'"),
        (["run", "/nonexistent/job.toml"], "does not exist"),
        (["run", "{job}", "--site", "mars"], "unknown site 'mars'"),
    ],
)
def test_bad_input_is_one_clear_error(
    tmp_path: Path, home: dict[str, str], args: list[str], words: str
) -> None:
    path = str(job_file(tmp_path, 10))
    r = run_cli(*[a.replace("{job}", path) for a in args], env=home)
    assert r.returncode in (1, 2) and words in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr


def test_command_job_runs_under_torchrun(tmp_path: Path, home: dict[str, str]) -> None:
    path = tmp_path / "cmd" / "job.toml"
    path.parent.mkdir()
    (path.parent / "hello.py").write_text(
        # one write per line: the two ranks share the log, and unbuffered prints interleave
        "import os, sys\nsys.stdout.write(f\"hello from rank {os.environ['RANK']} of "
        "{os.environ['WORLD_SIZE']} in {os.path.basename(os.getcwd())}\\n\")\n"
    )
    path.write_text('[job]\ncommand = ["python", "hello.py"]\nprocesses_per_node = 2\n')
    r = run_cli("run", str(path), env=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "hello from rank 0 of 2 in cmd" in r.stdout and "hello from rank 1 of 2 in cmd" in r.stdout
    )
    path.write_text('[job]\ncommand = ["python", "-c", "raise SystemExit(7)"]\n')
    bad = run_cli("run", str(path), env=home)
    assert bad.returncode == 1 and " failed on local://" in bad.stdout


def test_history_is_right_running_recorded_end_when_it_ended_program_exit_code(
    tmp_path: Path, home: dict[str, str]
) -> None:
    """A followed run never recorded `running`; a job's end was when `status` noticed; a
    failing job reported torchrun's exit code (1), not its program's (3 here, on rank 1)."""
    path = tmp_path / "fails" / "job.toml"
    path.parent.mkdir()
    path.write_text(
        '[job]\nprocesses_per_node = 2\ncommand = ["python", "-c", "import os, sys, time; '
        "time.sleep(2); sys.exit(3 if os.environ['RANK'] == '1' else 0)\"]\n"
    )
    r = run_cli("run", str(path), env=home)
    assert r.returncode == 1 and "(exit code 3)" in r.stdout, r.stdout + r.stderr
    (job,) = status(home)  # type: ignore[misc]
    assert (job["state"], job["exit_code"]) == ("failed", 3)
    detail = status(home, job["id"])
    events = detail["events"]  # type: ignore[index]
    assert [e["state"] for e in events] == ["submitted", "pending", "running", "failed"]
    assert "exit code 3 (rank 1" in events[-1]["detail"]["reason"]
    ended = json.loads(
        (Path(home["TORCHSHIP_HOME"]) / "runs" / job["id"] / "exit.json").read_text()
    )
    time.sleep(1.5)  # asked later: the end stays when the job ended
    again = status(home, job["id"])
    assert again["updated_at"] == events[-1]["at"] == ended["ended_at"]  # type: ignore[index]


@pytest.mark.e2e  # 22 s; resuming is also held by test_workload's SIGKILL test and Slurm's requeue
def test_quickstart_killed_then_run_again_resumes(tmp_path: Path, home: dict[str, str]) -> None:
    """The quickstart's relative checkpoint_dir lived in each run's folder, so a re-run after
    SIGKILL restarted at step 0. Its job file as written (without its lock: no sync here)."""
    proj = tmp_path / "quickstart"
    proj.mkdir()
    shutil.copy(REPO / "examples/quickstart/job.toml", proj / "job.toml")
    r = run_cli("run", str(proj), "--detach", env=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (job,) = status(home)  # type: ignore[misc]
    runs = Path(home["TORCHSHIP_HOME"]) / "runs"
    deadline = time.time() + 120
    while not [*proj.glob("checkpoints/step-*.pt"), *runs.glob("*/checkpoints/step-*.pt")]:
        assert time.time() < deadline, run_cli("logs", job["id"], env=home).stdout
        time.sleep(0.02)
    for pid in job_pids(job["id"]):  # everything of the job at once, as a crash would
        os.kill(pid, signal.SIGKILL)
    again = run_cli("run", str(proj / "job.toml"), env=home, cwd=REPO)  # from another folder
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed from step 20" in again.stdout or "resumed from step 40" in again.stdout
    assert "step 60/60" in again.stdout
