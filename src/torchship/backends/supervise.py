"""The local site's supervisor: the session leader of one job on this machine.

    python -m torchship.backends.supervise --run-dir D --job-id ID [--max-runtime-s S] -- CMD...

It starts CMD (torchrun), records its own pid in D/supervisor.json, and when CMD ends —
or is cancelled (SIGTERM/SIGINT/SIGHUP to the supervisor) or runs past its time — writes
D/exit.json atomically: the site's record of how the job ended (with the time it ended), which
the job store is reconciled from. torchrun puts each worker in a session of its own, so
stopping a job also sweeps every process that carries TORCHSHIP_JOB_ID=ID in its environment.

The exit code recorded is the program's: when torchrun fails (it exits 1 whatever its workers
did) the supervisor reads the exit code of the first rank that failed from torchrun's
ChildFailedError report in the job's log ("Root Cause (first observed failure)").

No orphan training: before anything else the supervisor forks a *reaper*, in a session of its
own, holding the read end of a pipe only the supervisor writes to. When the supervisor dies
without recording an exit (SIGKILL, the OOM killer, a crash), the pipe closes; the reaper
SIGTERMs every process of the job, SIGKILLs what is left after REAP_GRACE_S, and records the
job failed with the reason. (A parent-death signal would reach torchrun only: its workers are
in sessions of their own, and prctl's signal is not inherited.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from torchship._atomic import PRIVATE, append_private, private_dir, write_text_atomic
from torchship.conventions import (
    EXIT_FILE,
    GPU_FILE,
    JOB_ID_ENV,
    LOG,
    REQUEST_FILE,
    SUPERVISOR_FILE,
    read_json,
)

if TYPE_CHECKING:  # the monitor (NVML, the exporter's socketserver) loads in the supervisor
    # alone: `run` imports this module to start one, ~15 ms it never used (issue 20)
    from torchship.backends.base import Request
    from torchship.monitor.gpus import GpuReader
    from torchship.monitor.sampler import Sampler

GRACE_S = 20.0  # torchrun forwards SIGTERM to workers and waits for them (its default is 30 s)
# Nobody waits for a job whose supervisor died: its processes get a few seconds after SIGTERM
# (torchrun stops its workers in that time when they end on SIGTERM), then SIGKILL.
REAP_GRACE_S = 5.0
POLL_S = 0.2
STARTING_S = 30.0  # a run folder without supervisor.json younger than this is still starting
# torchrun's report of a failed worker group, as torch.distributed.elastic's ChildFailedError
# prints it (torch 1.9 to 2.13: https://docs.pytorch.org/docs/stable/elastic/errors.html)
ROOT_CAUSE = "Root Cause (first observed failure):"
_FIELD = re.compile(r"^\s*(rank|exitcode)\s*:\s*(-?\d+)", re.MULTILINE)
TAIL_BYTES = 64 * 1024


def job_pids(job_id: str, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose environment carries TORCHSHIP_JOB_ID=job_id (Linux; [] elsewhere)."""
    marker = f"{JOB_ID_ENV}={job_id}".encode()
    out = []
    for entry in proc.glob("[0-9]*"):
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if marker in env.split(b"\0") and int(entry.name) != os.getpid():
            out.append(int(entry.name))
    return out


def kill_all(job_id: str, sig: int, spare: frozenset[int] = frozenset()) -> list[int]:
    """Send `sig` to every process of the job but those in `spare`; the pids it was sent to."""
    pids = [p for p in job_pids(job_id) if p not in spare]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    return pids


def program_exit(log: Path, offset: int = 0) -> tuple[int, int | None] | None:
    """(exit code, rank) of the first rank that failed, from torchrun's report in the log
    written after `offset`; None when there is none (torchrun itself failed, or no log)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    at = tail.rfind(ROOT_CAUSE)
    if at < 0:
        return None
    fields = {m.group(1): m.group(2) for m in _FIELD.finditer(tail, at)}
    if "exitcode" not in fields:
        return None
    rank = fields.get("rank")
    return exit_code(int(fields["exitcode"])), None if rank is None else int(rank)


def start_reaper(run_dir: Path, job_id: str) -> tuple[int, int]:
    """Fork the reaper (see the module's docstring): (its pid, the pipe's write end, which the
    supervisor keeps open for as long as it lives)."""
    read_end, write_end = os.pipe()  # not inheritable: torchrun and its workers never hold it
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return pid, write_end
    code = 0
    try:  # the reaper: only os-level work until it exits, never back into the caller
        os.close(write_end)
        os.setsid()  # a kill of the supervisor's process group does not reach it
        while os.read(read_end, 1):
            pass
        reap(run_dir, job_id, os.getppid())
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def reap(run_dir: Path, job_id: str, parent: int) -> None:
    """The supervisor is gone: when it recorded no exit, stop the job's processes and say so."""
    if (run_dir / EXIT_FILE).exists():
        return  # it ended the job itself
    sup = _read_pid(run_dir / SUPERVISOR_FILE)
    stopped = kill_all(job_id, signal.SIGTERM)
    deadline = time.monotonic() + REAP_GRACE_S
    while job_pids(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill_all(job_id, signal.SIGKILL)
    reason = (
        f"its supervisor (pid {sup or parent}) died without recording an exit (killed, or "
        f"crashed); its {len(stopped)} process(es) were stopped"
    )
    if not (run_dir / EXIT_FILE).exists():
        record = {"state": "failed", "exit_code": None, "reason": reason, "ended_at": time.time()}
        write_text_atomic(run_dir / EXIT_FILE, json.dumps(record) + "\n", PRIVATE)
    say(f"job {job_id} failed: {reason}", "end", state="failed", reason=reason)


def _read_pid(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text("utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def exit_code(returncode: int) -> int:
    """A shell's convention: killed by signal N → 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def stop(child: subprocess.Popen[bytes], job_id: str, spare: frozenset[int]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    kill_all(job_id, signal.SIGKILL, spare)


def say(msg: str, event: str, **fields: object) -> None:
    """A line of the job's log: text, or JSON with TORCHSHIP_LOG_FORMAT=json."""
    from torchship.monitor import logs

    level = "error" if fields.get("state") == "failed" else "info"
    logs.emit("torchship.supervisor", "[torchship]", msg, event, level, fields=fields)


def _sampler(gpus: GpuReader, out: Path, job_id: str, sample_s: float | None) -> Sampler:
    """GPU samples written to `out` every `sample_s` (the sampler's default when None)."""
    from torchship.monitor.sampler import DEFAULT_INTERVAL_S, Sampler

    return Sampler(gpus, out, job_id, DEFAULT_INTERVAL_S if sample_s is None else sample_s).start()


def supervise(
    run_dir: Path,
    job_id: str,
    max_runtime_s: float | None,
    cmd: list[str],
    gpus: GpuReader | None = None,
    sample_s: float | None = None,
    reaper: bool = False,
    remote: bool = False,
) -> int:
    """Run `cmd` to its end; with `gpus`, sample them into run_dir/gpus.jsonl meanwhile; with
    `reaper`, fork the reaper first (the command line does; a test in-process does not). A
    failing torchrun's code is replaced by the failed program's, unless `remote`: the command
    is a launcher of a job that runs elsewhere, whose own codes mean something (`sky launch`:
    100 failed, 103 cancelled)."""
    # loaded before the reaper forks, so that it still writes the job's last line should the
    # install change while the job runs (say() imports it where it is first needed)
    from torchship.monitor import logs  # noqa: F401

    cancelled: list[str] = []
    reaper_pid, _keep_open = start_reaper(run_dir, job_id) if reaper else (None, None)
    spare = frozenset() if reaper_pid is None else frozenset({reaper_pid})

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        cancelled.append(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    started = time.time()
    info = {"pid": os.getpid(), "started_at": started, "argv": cmd, "reaper": reaper_pid}
    write_text_atomic(run_dir / SUPERVISOR_FILE, json.dumps(info) + "\n", PRIVATE)
    say(f"job {job_id} started: {' '.join(cmd[:4])} …", "start")
    log_at = _size(run_dir / LOG)  # torchrun's report is looked for in what it writes
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    sampler = _sampler(gpus, run_dir / GPU_FILE, job_id, sample_s) if gpus else None
    reason = ""
    while child.poll() is None:
        if cancelled:
            reason = f"cancelled ({cancelled[0]})"
        elif max_runtime_s is not None and time.time() - started > max_runtime_s:
            reason = f"ran past its max runtime ({max_runtime_s / 60:g} min)"
        if reason:
            say(f"stopping job {job_id}: {reason}", "stopping", reason=reason)
            stop(child, job_id, spare)
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(POLL_S)
    ended_at = time.time()
    kill_all(job_id, signal.SIGKILL, spare)  # orphaned workers, if torchrun itself was killed
    if sampler is not None:
        sampler.stop()
    code = exit_code(child.returncode)
    state = "cancelled" if cancelled else ("succeeded" if code == 0 and not reason else "failed")
    if code and not reason and not remote:
        code, reason = _program_code(code, run_dir / LOG, log_at)
    record = {"state": state, "exit_code": code, "reason": reason, "ended_at": ended_at}
    write_text_atomic(run_dir / EXIT_FILE, json.dumps(record) + "\n", PRIVATE)
    say(f"job {job_id} {state}" + (f": {reason}" if reason else ""), "end", state=state,
        exit_code=code, reason=reason)  # fmt: skip
    return code


def _program_code(code: int, log: Path, offset: int) -> tuple[int, str]:
    """The program's exit code and the reason, when torchrun says which rank failed how."""
    found = program_exit(log, offset)
    if found is None or found[0] == 0:
        return code, f"exit code {code}"
    program, rank = found
    where = "" if rank is None else f" (rank {rank}; torchrun exited {code})"
    return program, f"exit code {program}{where}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- the client's side: starting a supervised run, and reading it --------------------------


def started(run: Path, job_id: str) -> bool:
    """The job was started here before: its supervisor wrote its files, or its processes run."""
    done = (run / SUPERVISOR_FILE).exists() or (run / EXIT_FILE).exists()
    return done or bool(job_pids(job_id))


def starting(run: Path) -> bool:
    """Applied a moment ago: the supervisor has not written supervisor.json yet."""
    return (
        not (run / SUPERVISOR_FILE).exists()
        and run.is_dir()
        and time.time() - run.stat().st_mtime < STARTING_S
    )


def start_supervised(
    request: Request, run: Path, unset: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start request.argv (the supervisor and its command) in a session of its own, its output
    going to RUN/log, with the request recorded beside it; `unset` names variables of this
    process it does not inherit."""
    private_dir(run)  # the plan holds the job's environment: 0700 folder, 0600 files
    record = {"site": request.site, "job_id": request.job_id, "text": request.text,
              "argv": list(request.argv)}  # fmt: skip
    write_text_atomic(run / REQUEST_FILE, json.dumps(record, indent=2), PRIVATE)
    with append_private(run / LOG) as log:
        return subprocess.Popen(
            request.argv,
            cwd=request.cwd,
            env={**{k: v for k, v in os.environ.items() if k not in unset}, **request.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the supervisor leads the job's process group
        )


def read_log(path: Path, follow: bool, state: Callable[[], str]) -> Iterator[str]:
    """The lines of a run's log; with follow, until state() is no longer pending or running.
    A log that does not exist yet is waited for while the job is pending or running (a loaded
    machine starts the job's client after the caller starts following)."""
    while not path.exists():
        if not follow or state() not in ("pending", "running"):
            if not path.exists():
                return
            break
        time.sleep(0.1)
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                yield line
                continue
            if not follow or state() not in ("pending", "running"):
                yield from f  # whatever was written after the last read
                return
            time.sleep(0.1)


def supervisor_alive(pid: int, job_id: str) -> bool:
    """The pid is running and is this job's supervisor (not a reused pid, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: our supervisor runs as us
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True  # no /proc (macOS): trust the signal check
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and job_id.encode() in cmdline


def supervisor_of(run: Path, job_id: str) -> int | None:
    """The pid of the job's supervisor, while it lives."""
    sup = read_json(run / SUPERVISOR_FILE)
    return int(sup["pid"]) if sup and supervisor_alive(int(sup["pid"]), job_id) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torchship.backends.supervise")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--job-id", required=True)
    p.add_argument("--max-runtime-s", type=float)
    p.add_argument("--no-gpu-samples", action="store_true", help="no GPU samples here")
    p.add_argument("--remote", action="store_true",
                   help="the command launches the job elsewhere (sky launch): no GPU samples, no "
                   "reaper (the job outlives this client), the launcher's exit code")  # fmt: skip
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no command after --")
    from torchship.monitor.gpus import open_reader
    from torchship.monitor.sampler import interval_s

    # no NVML: no samples (the report says why)
    gpus = None if a.no_gpu_samples or a.remote else open_reader()[0]
    return supervise(a.run_dir, a.job_id, a.max_runtime_s, cmd, gpus, interval_s(),
                     reaper=not a.remote, remote=a.remote)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
