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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from torchship._atomic import PRIVATE, write_text_atomic
from torchship._host import hostname
from torchship.backends.base import Request, SiteKind, SiteStatus, parse_handle
from torchship.backends.supervise import (
    STARTING_S,
    job_pids,
    read_log,
    start_supervised,
    started,
    supervisor_alive,
)
from torchship.conventions import (
    EXIT_FILE,
    JOB_ID_ENV,
    LOG,
    SUPERVISOR_FILE,
    data_dir,
    read_json,
    run_dir,
)
from torchship.errors import TorchshipError, UsageError
from torchship.launch import job_env, torchrun_argv, workload_argv
from torchship.place.sites import Capabilities, Site

if TYPE_CHECKING:
    from torchship.doctor.facts import Facts
    from torchship.env.sync import Printer
    from torchship.lock.model import Lock
    from torchship.spec.job import JobSpec

SCHEME = "local"
PYTHONS = frozenset({"python", "python3"})
CAPABILITIES = Capabilities(
    kind=SCHEME, multi_node=False, max_nodes=1, gpus=True, volumes=("host-path",)
)
__all__ = ["CAPABILITIES", "KIND", "LocalBackend", "LocalOptions", "create"]


@dataclass(frozen=True, slots=True)
class LocalOptions:
    python: str  # the interpreter the job runs with: the synced environment's, or this one
    home: Path  # the data dir: runs/<job id>/ lives here
    host: str
    env: Mapping[str, str] = field(default_factory=dict)  # VIRTUAL_ENV, PATH, the agent's path
    supervisor: str | None = None  # torchship's own interpreter (default: `python`)
    environment: str | None = None  # the lock environment's name, for the plan's text
    unset: tuple[str, ...] = ()  # variables of this process the job must not inherit


class LocalBackend:
    kind = SCHEME

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self._children: list[subprocess.Popen[bytes]] = []

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

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

    def in_environment(
        self,
        lock: Lock,
        lock_path: Path | None,
        facts: Facts,
        env_name: str | None,
        dry_run: bool,
        say: Printer | None,
        stream: TextIO | None,
    ) -> tuple[LocalBackend, Facts, str]:
        """This site running inside the lock's environment for this machine, synced (for a
        dry run only looked up), and the facts of that environment for the preflight (the
        hook torchship.jobs.submit calls where a backend has it)."""
        from torchship.compat.matrix import load_matrix
        from torchship.env import agent_path, env_facts, envs_dir, pick_environment, run_env
        from torchship.env.places import AGENT_VAR, DROPPED
        from torchship.env.sync import SyncedEnv, env_path, sync
        from torchship.lock import check_lock_file

        if lock_path is not None:
            check_lock_file(lock, lock_path)
        pick = pick_environment(lock, facts, load_matrix(), env_name)
        synced = None if dry_run else sync(pick.env, None, (), say, stream, lock.name)
        if synced is None:  # a dry run builds nothing: where it would be
            synced = SyncedEnv(pick.env.name, pick.env.key, env_path(pick.env, envs_dir()), False)
        if synced.python.exists():
            facts = env_facts(facts, synced)
        else:  # a dry run before the first sync: what the sync would install
            facts = replace(
                facts,
                python=None,  # whichever interpreter of that version the sync finds
                packages={p.name: p.version for p in pick.env.packages},
                torch=pick.env.torch,
                torch_cuda=pick.env.cuda,
                sources={
                    **facts.sources,
                    "packages": f"lock environment {pick.env.name} (not synced)",
                },
            )
        o = self.options
        environ = run_env(synced, agent_path(), os.environ)
        extra = {k: environ[k] for k in ("VIRTUAL_ENV", "PATH", AGENT_VAR)}
        options = replace(
            o,
            python=str(synced.python),
            env=extra,
            supervisor=o.supervisor or sys.executable,
            environment=pick.env.name,
            unset=DROPPED,
        )
        note = f"{pick.env.name} ({synced.path}): {pick.reason}"
        return type(self)(options), facts, note

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
        return self._status(job_id, run, job_pids)

    def statuses(self, handles: Sequence[str]) -> dict[str, SiteStatus | TorchshipError]:
        """`status` of many jobs, asking this machine's processes once: a job whose
        supervisor is gone without a record is looked for among all processes (`job_pids`
        reads every /proc/<pid>/environ), and for many such jobs (lost ones stay asked about)
        one pass finds all of them. A handle of another machine gets its error."""
        for c in self._children:
            c.poll()
        out: dict[str, SiteStatus | TorchshipError] = {}
        index: dict[str, list[int]] | None = None

        def pids(job_id: str) -> list[int]:
            nonlocal index
            if index is None:  # the first job that needs it; never when none does
                index = pids_by_job(Path("/proc"))
            return index.get(job_id, [])

        for handle in dict.fromkeys(handles):
            try:
                job_id, run = self._run(handle)
            except TorchshipError as e:
                out[handle] = e
                continue
            out[handle] = self._status(job_id, run, pids)
        return out

    def _status(self, job_id: str, run: Path, pids: Callable[[str], list[int]]) -> SiteStatus:
        ended = read_json(run / EXIT_FILE)
        if ended is not None:
            at = ended.get("ended_at")
            return SiteStatus(ended["state"], ended.get("exit_code"), ended.get("reason", ""),
                              at if isinstance(at, int | float) else None)  # fmt: skip
        sup = read_json(run / SUPERVISOR_FILE)
        if sup is not None and supervisor_alive(int(sup["pid"]), job_id):
            return SiteStatus("running")
        if sup is None and run.is_dir() and time.time() - run.stat().st_mtime < STARTING_S:
            return SiteStatus("pending", reason="starting")
        left = [p for p in pids(job_id) if sup is None or p != sup.get("reaper")]
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
        sup = read_json(run / SUPERVISOR_FILE)
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
        if not (run / EXIT_FILE).exists():
            write_text_atomic(run / EXIT_FILE, json.dumps(record), PRIVATE)


def pids_by_job(proc: Path) -> dict[str, list[int]]:
    """Job id → the processes whose environment carries TORCHSHIP_JOB_ID=<id>, from one pass
    over `proc` (/proc; {} elsewhere): `job_pids` for every job at once, this process left
    out as it does."""
    prefix = f"{JOB_ID_ENV}=".encode()
    out: dict[str, list[int]] = {}
    for entry in proc.glob("[0-9]*"):
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if int(entry.name) == os.getpid():
            continue
        for job_id in {v[len(prefix) :] for v in env.split(b"\0") if v.startswith(prefix)}:
            out.setdefault(job_id.decode(errors="replace"), []).append(int(entry.name))
    return out


def create(site: Site | None = None, peers: tuple[Site, ...] = ()) -> LocalBackend:
    """This machine's backend (a local site has no settings of its own)."""
    return LocalBackend(LocalOptions(sys.executable, data_dir(), hostname()))


KIND = SiteKind(name=SCHEME, capabilities=CAPABILITIES, handle_scheme=SCHEME, create=create)
