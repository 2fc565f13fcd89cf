"""The `local` site: the job runs as processes on this machine, under torchrun, in the lock's
environment synced for this machine (torchship.env), or with --no-sync in the current one.

plan() is pure: it turns (job, lock, job id) into the exact command, environment and folder.
apply() starts the supervisor (torchship.backends.supervise) in a session of its own, its
output going to <data dir>/runs/<job id>/log. The run folder is the site's truth:
supervisor.json (a live pid) means running, exit.json says how it ended; neither means
running while processes of the job remain (found by TORCHSHIP_JOB_ID), lost when none does.
Files there are 0600 in a 0700 folder (less the umask): the plan holds the job's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship._atomic import PRIVATE, append_private, private_dir, write_text_atomic
from torchship.backends.base import Capabilities, Request, SiteStatus, parse_handle
from torchship.backends.supervise import LOG, job_pids
from torchship.errors import UsageError
from torchship.launch import job_env, torchrun_argv, workload_argv
from torchship.lock.model import Lock
from torchship.spec.job import JobSpec

SCHEME = "local"
STARTING_S = 30.0  # a run folder without supervisor.json younger than this is still starting
PYTHONS = frozenset({"python", "python3"})


@dataclass(frozen=True, slots=True)
class LocalOptions:
    python: str  # the interpreter the job runs with: the synced environment's, or this one
    home: Path  # the data dir: runs/<job id>/ lives here
    host: str
    env: Mapping[str, str] = field(default_factory=dict)  # VIRTUAL_ENV, PATH, the agent's path
    supervisor: str | None = None  # torchship's own interpreter (default: `python`)
    environment: str | None = None  # the lock environment's name, for the plan's text
    unset: tuple[str, ...] = ()  # variables of this process the job must not inherit


def run_dir(home: Path, job_id: str) -> Path:
    return home / "runs" / job_id


class LocalBackend:
    kind = SCHEME

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self._children: list[subprocess.Popen[bytes]] = []

    def capabilities(self) -> Capabilities:
        return Capabilities(
            kind=SCHEME, multi_node=False, max_nodes=1, gpus=True, volumes=("host-path",)
        )

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request:
        if job.nodes > 1:
            raise UsageError(
                f"{job.source}: job.nodes = {job.nodes}, but the local site runs one node",
                "set nodes = 1, or run it on a Kubernetes site",
            )
        o = self.options
        run = run_dir(o.home, job_id)
        argv = torchrun_argv(o.python, job, job_id)
        cwd = run
        if job.command is None:
            argv += workload_argv(job, run, here=True)
        else:
            cmd = [o.python if c in PYTHONS and i == 0 else c for i, c in enumerate(job.command)]
            argv += ["--no-python", *cmd]
            cwd = Path(job.source).resolve().parent
        max_s = job.max_runtime_minutes * 60 if job.max_runtime_minutes else None
        sup = [o.supervisor or o.python, "-m", "torchship.backends.supervise", "--run-dir"]
        sup += [str(run), "--job-id", job_id]
        sup += [*([f"--max-runtime-s={max_s:g}"] if max_s else []), "--"]
        env = {**o.env, **job_env(job, job_id, run, here=True)}
        # assignments keep their name bare (a quoted `'K=v'` is a command, not an assignment)
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        text = f"cd {shlex.quote(str(cwd))} && {assignments} {shlex.join(argv)}".replace(
            "&&  ", "&& "
        )
        return Request(
            site=SCHEME,
            kind=SCHEME,
            job_id=job_id,
            text=text,
            argv=(*sup, *argv),
            env=env,
            cwd=str(cwd),
            run_dir=str(run),
            max_runtime_s=max_s,
        )

    def apply(self, request: Request) -> str:
        run = Path(request.run_dir or run_dir(self.options.home, request.job_id))
        if not started(run, request.job_id):  # else: a retry after a client died between
            # starting the job and recording it: the job runs, once
            self._children.append(start_supervised(request, run, self.options.unset))
        return f"{SCHEME}://{self.options.host}/{request.job_id}"

    def _run(self, handle: str) -> tuple[str, Path]:
        host, job_id = parse_handle(handle, SCHEME)
        if host != self.options.host:
            raise UsageError(
                f"{handle} ran on {host}, not on this machine ({self.options.host})",
                f"run this command on {host}",
            )
        return job_id, run_dir(self.options.home, job_id)

    def status(self, handle: str) -> SiteStatus:
        for c in self._children:
            c.poll()  # reap a finished supervisor we started, so its pid reads as gone
        job_id, run = self._run(handle)
        ended = read_json(run / "exit.json")
        if ended is not None:
            at = ended.get("ended_at")
            return SiteStatus(ended["state"], ended.get("exit_code"), ended.get("reason", ""),
                              at if isinstance(at, int | float) else None)  # fmt: skip
        sup = read_json(run / "supervisor.json")
        if sup is not None and supervisor_alive(int(sup["pid"]), job_id):
            return SiteStatus("running")
        if sup is None and run.is_dir() and time.time() - run.stat().st_mtime < STARTING_S:
            return SiteStatus("pending", reason="starting")
        left = [p for p in job_pids(job_id) if sup is None or p != sup.get("reaper")]
        if left:  # its processes outlived it (its reaper stops them, or was killed too)
            return SiteStatus(
                "running",
                reason=f"its supervisor is gone but {len(left)} of its processes still run "
                f"(pids {' '.join(map(str, sorted(left)[:8]))}); `torchship cancel` ends them",
            )
        return SiteStatus(
            "lost",
            reason="its supervisor ended without recording an exit and none of its processes "
            "runs (killed, or the machine restarted)",
        )

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        _, run = self._run(handle)
        return read_log(run / LOG, follow, lambda: self.status(handle).state)

    def cancel(self, handle: str) -> None:
        job_id, run = self._run(handle)
        st = self.status(handle)
        if st.state in ("succeeded", "failed", "cancelled"):
            return
        sup = read_json(run / "supervisor.json")
        if sup is not None and supervisor_alive(int(sup["pid"]), job_id):
            with contextlib.suppress(ProcessLookupError):  # else it ended just now: sweep
                os.kill(int(sup["pid"]), signal.SIGTERM)  # it stops the job and records it
                return
        killed = 0
        for pid in job_pids(job_id):  # no supervisor to ask: end what is left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        why = f"cancelled without its supervisor ({killed} process(es) killed)"
        record = {"state": "cancelled", "exit_code": None, "reason": why, "ended_at": time.time()}
        if not (run / "exit.json").exists():
            write_text_atomic(run / "exit.json", json.dumps(record), PRIVATE)


def started(run: Path, job_id: str) -> bool:
    """The job was started here before: its supervisor wrote its files, or its processes run."""
    done = (run / "supervisor.json").exists() or (run / "exit.json").exists()
    return done or bool(job_pids(job_id))


def start_supervised(
    request: Request, run: Path, unset: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start request.argv (the supervisor and its command) in a session of its own, its output
    going to RUN/log, with the request recorded beside it; `unset` names variables of this
    process it does not inherit."""
    private_dir(run)  # the plan holds the job's environment: 0700 folder, 0600 files
    write_text_atomic(run / "request.json", json.dumps(_request_json(request), indent=2), PRIVATE)
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


def _request_json(r: Request) -> dict[str, Any]:
    return {"site": r.site, "job_id": r.job_id, "text": r.text, "argv": list(r.argv)}


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a run-folder file, or None when it is missing or not (yet) whole."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def create() -> LocalBackend:
    from torchship.state import data_dir

    return LocalBackend(LocalOptions(sys.executable, data_dir(), socket.gethostname()))
