"""The local site's supervisor: the session leader of one job on this machine.

    python -m torchship.backends.supervise --run-dir D --job-id ID [--max-runtime-s S] -- CMD...

It starts CMD (torchrun), records its own pid in D/supervisor.json, and when CMD ends —
or is cancelled (SIGTERM/SIGINT/SIGHUP to the supervisor) or runs past its time — writes
D/exit.json atomically: the site's record of how the job ended, which the job store is
reconciled from. torchrun puts each worker in a session of its own, so stopping a job also
sweeps every process that carries TORCHSHIP_JOB_ID=ID in its environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from torchship._atomic import write_text_atomic
from torchship.monitor import logs
from torchship.monitor.gpus import GpuReader, open_reader
from torchship.monitor.sampler import DEFAULT_INTERVAL_S, Sampler, interval_s
from torchship.monitor.sampler import FILE as GPU_FILE

GRACE_S = 20.0  # torchrun forwards SIGTERM to workers and waits for them (its default is 30 s)
POLL_S = 0.2


def job_pids(job_id: str, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose environment carries TORCHSHIP_JOB_ID=job_id (Linux; [] elsewhere)."""
    marker = f"TORCHSHIP_JOB_ID={job_id}".encode()
    out = []
    for entry in proc.glob("[0-9]*"):
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if marker in env.split(b"\0") and int(entry.name) != os.getpid():
            out.append(int(entry.name))
    return out


def kill_all(job_id: str, sig: int) -> None:
    for pid in job_pids(job_id):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def exit_code(returncode: int) -> int:
    """A shell's convention: killed by signal N → 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def stop(child: subprocess.Popen[bytes], job_id: str) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    kill_all(job_id, signal.SIGKILL)


def say(msg: str, event: str, **fields: object) -> None:
    """A line of the job's log: text, or JSON with TORCHSHIP_LOG_FORMAT=json."""
    level = "error" if fields.get("state") == "failed" else "info"
    logs.emit("torchship.supervisor", "[torchship]", msg, event, level, fields=fields)


def supervise(
    run_dir: Path,
    job_id: str,
    max_runtime_s: float | None,
    cmd: list[str],
    gpus: GpuReader | None = None,
    sample_s: float = DEFAULT_INTERVAL_S,
) -> int:
    """Run `cmd` to its end; with `gpus`, sample them into run_dir/gpus.jsonl meanwhile."""
    cancelled: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        cancelled.append(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    started = time.time()
    info = {"pid": os.getpid(), "started_at": started, "argv": cmd}
    write_text_atomic(run_dir / "supervisor.json", json.dumps(info) + "\n")
    say(f"job {job_id} started: {' '.join(cmd[:4])} …", "start")
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    sampler = Sampler(gpus, run_dir / GPU_FILE, job_id, sample_s).start() if gpus else None
    reason = ""
    while child.poll() is None:
        if cancelled:
            reason = f"cancelled ({cancelled[0]})"
        elif max_runtime_s is not None and time.time() - started > max_runtime_s:
            reason = f"ran past its max runtime ({max_runtime_s / 60:g} min)"
        if reason:
            say(f"stopping job {job_id}: {reason}", "stopping", reason=reason)
            stop(child, job_id)
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(POLL_S)
    kill_all(job_id, signal.SIGKILL)  # orphaned workers, if torchrun itself was killed
    if sampler is not None:
        sampler.stop()
    code = exit_code(child.returncode)
    state = "cancelled" if cancelled else ("succeeded" if code == 0 and not reason else "failed")
    reason = reason or ("" if code == 0 else f"exit code {code}")
    record = {"state": state, "exit_code": code, "reason": reason, "ended_at": time.time()}
    write_text_atomic(run_dir / "exit.json", json.dumps(record) + "\n")
    say(f"job {job_id} {state}" + (f": {reason}" if reason else ""), "end", state=state,
        exit_code=code, reason=reason)  # fmt: skip
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torchship.backends.supervise")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--job-id", required=True)
    p.add_argument("--max-runtime-s", type=float)
    p.add_argument("--no-gpu-samples", action="store_true",
                   help="the job runs elsewhere (SkyPilot): no GPU samples here")  # fmt: skip
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no command after --")
    gpus = None if a.no_gpu_samples else open_reader()[0]  # no NVML: no samples (the report
    return supervise(a.run_dir, a.job_id, a.max_runtime_s, cmd, gpus, interval_s())  # says so)


if __name__ == "__main__":
    sys.exit(main())
