"""The local site's supervisor with real processes: exit codes, max runtime, cancel, and the
sweep of processes that left its process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from torchship.backends.supervise import job_pids, supervise
from torchship.monitor.gpus import FakeGpus


def start(run: Path, job_id: str, *cmd: str, max_s: float | None = None) -> subprocess.Popen[bytes]:
    run.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "torchship.backends.supervise", "--run-dir", str(run)]
    argv += ["--job-id", job_id, *([f"--max-runtime-s={max_s}"] if max_s else []), "--", *cmd]
    env = {**os.environ, "TORCHSHIP_JOB_ID": job_id}
    return subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


def ended(run: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((run / "exit.json").read_text())
    return data


def test_exit_code_is_recorded(tmp_path: Path) -> None:
    p = start(tmp_path, "j-exit", sys.executable, "-c", "raise SystemExit(3)")
    assert p.wait(30) == 3
    e = ended(tmp_path)
    assert (e["state"], e["exit_code"], e["reason"]) == ("failed", 3, "exit code 3")


def test_success(tmp_path: Path) -> None:
    assert start(tmp_path, "j-ok", sys.executable, "-c", "pass").wait(30) == 0
    assert ended(tmp_path)["state"] == "succeeded"


def test_max_runtime_stops_the_job(tmp_path: Path) -> None:
    t0 = time.time()
    p = start(tmp_path, "j-slow", "sleep", "60", max_s=1)
    p.wait(40)
    e = ended(tmp_path)
    assert e["state"] == "failed" and "max runtime" in str(e["reason"])
    assert time.time() - t0 < 30


def test_sigterm_cancels_and_sweeps_processes_in_other_sessions(tmp_path: Path) -> None:
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    # the child starts a grandchild in a session of its own, as torchrun does with workers
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "time.sleep(300)\n"
    )
    p = start(tmp_path, job_id, sys.executable, "-c", script)
    deadline = time.time() + 30
    while len(job_pids(job_id)) < 3:  # supervisor, child, grandchild
        assert time.time() < deadline, job_pids(job_id)
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    assert ended(tmp_path)["state"] == "cancelled"
    time.sleep(0.2)
    assert job_pids(job_id) == []


def test_gpu_samples_and_json_log_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process, with the NVML seam's fake: the supervisor samples every GPU while the job
    runs, stops when it ends, and logs JSON lines when asked to."""
    monkeypatch.setenv("TORCHSHIP_LOG_FORMAT", "json")
    monkeypatch.setenv("TORCHSHIP_JOB_ID", "j-gpu")
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        sleep = [sys.executable, "-c", "import time; time.sleep(0.8)"]
        code = supervise(tmp_path, "j-gpu", None, sleep, FakeGpus(2), 0.1)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert code == 0
    rows = [json.loads(x) for x in (tmp_path / "gpus.jsonl").read_text().splitlines()]
    assert len(rows) >= 6 and {r["gpu"] for r in rows} == {0, 1}
    size = len(rows)
    time.sleep(0.3)
    assert len((tmp_path / "gpus.jsonl").read_text().splitlines()) == size  # stopped with it
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in out] == ["start", "end"]
    assert out[1]["state"] == "succeeded" and out[1]["exit_code"] == 0
    assert all(r["job"] == "j-gpu" and r["logger"] == "torchship.supervisor" for r in out)


def test_the_reaper_is_forked_with_the_log_writer_loaded(tmp_path: Path) -> None:
    """The reaper writes the job's last line after its supervisor dies, maybe hours later: the
    module that writes it is loaded before the fork, not imported then from an install that may
    have changed (`run` itself never loads it)."""
    code = (
        "import sys\n"
        "import torchship.backends.supervise as s\n"
        "assert 'torchship.monitor.logs' not in sys.modules\n"
        "def fork(*a):\n"
        "    print('logs loaded at the fork:', 'torchship.monitor.logs' in sys.modules)\n"
        "    raise SystemExit(0)\n"
        "s.start_reaper = fork\n"
        f"s.supervise(__import__('pathlib').Path({str(tmp_path)!r}), 'j', None, ['true'],"
        " reaper=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "logs loaded at the fork: True"
