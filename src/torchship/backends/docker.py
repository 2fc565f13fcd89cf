"""The `docker` site: jobs (and Jupyter, a shell, one command) in the project's image on this
machine's container engine, docker or podman (same `run` syntax; podman reaches GPUs by CDI).

plan() is pure: the exact `<engine> run` command. The container carries labels (job id, lock
hash, site) and is found again by them: status reads `<engine> ps -a --filter label=…` (and
`statuses` every job's at once: one `ps` of the job label, one `container inspect`), logs
are the engine's, cancel is `<engine> stop` (SIGTERM through tini to torchrun, then SIGKILL
after the grace period). The job's run folder on the host is mounted at /torchship/run, so
summary.json, metrics and checkpoints land where the local site puts them.

The engine is this machine's: DOCKER_HOST, CONTAINER_HOST, a docker context or a podman
connection that names another machine's engine is refused before any engine command runs
(`engine_elsewhere`), so a job, its mounts and its [job.env] never leave by a setting the user
forgot. Remote machines are the Kubernetes and SkyPilot sites.

Defaults are the safe ones: the image's non-root user (or the host user's UID/GID when it is
not root, so files in mounts stay yours), no new privileges, all capabilities dropped, data
read-only unless asked, /dev/shm sized for DataLoader workers and NCCL (the engines' 64 MB
default breaks them), Jupyter published on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torchship._atomic import write_text_atomic
from torchship.backends.base import Request, SiteKind, SiteStatus, last_line, parse_handle
from torchship.backends.preflight import data_path
from torchship.conventions import (
    CONTAINER_LABEL_PREFIX,
    IMAGE_UID,
    JOB_ID_LABEL,
    LOCK_HASH_LABEL,
    METRICS_ADDR_ENV,
    METRICS_PORT_ENV,
    RUN_MOUNT,
    SITE_LABEL,
    TRAINING_PORT,
    WORKSPACE,
    data_dir,
    run_dir,
    shm_mib,
)
from torchship.doctor.checks import ERROR, Finding
from torchship.errors import TorchshipError, UsageError, excerpt
from torchship.image.build import detect_engine
from torchship.image.dockerfile import image_tag
from torchship.launch import checkpoint_dir, job_env, torchrun_argv, workload_argv
from torchship.lock.model import Lock
from torchship.place.sites import Capabilities, Site
from torchship.spec.job import JobSpec

SCHEME = "docker"
ENGINES = ("docker", "podman")
STOP_GRACE_S = 20
CANCELLED = "cancel-requested"  # in the run folder: a stopped container was cancelled
LABEL_JOB = CONTAINER_LABEL_PREFIX + JOB_ID_LABEL
LABEL_LOCK = CONTAINER_LABEL_PREFIX + LOCK_HASH_LABEL
LABEL_SITE = CONTAINER_LABEL_PREFIX + SITE_LABEL
CAPABILITIES = Capabilities(
    kind=SCHEME, multi_node=False, max_nodes=1, gpus=True, containers=True, volumes=("bind",)
)
Runner = Callable[..., subprocess.CompletedProcess[str]]
# An engine on this machine answers on a unix socket; ssh://, tcp:// and the rest are elsewhere.
LOCAL_ENDPOINT = "unix://"
# Flags that point an engine elsewhere: docker's global -H/--host/--context; podman's global
# --remote/-r/--url/--connection, which podman also takes after `run` (cobra persistent flags).
REMOTE_FLAGS = ("-H", "--host", "--context", "-r", "--remote", "--url", "--connection")


@dataclass(frozen=True, slots=True)
class DockerOptions:
    engine: str  # "docker" | "podman"
    home: Path  # the data dir: runs/<job id>/ lives here
    host: str
    uid: int  # the host user; 0 (root) runs as the image's non-root user instead
    gid: int
    shm_size: str | None = None  # None: sized from the job; with ipc_host, unused
    ipc_host: bool = False
    engine_args: tuple[str, ...] = ()  # appended to every `run` as is (e.g. --runtime=runc)
    network: str | None = None  # jobs' --network (e.g. "none"); None: the engine's default


@dataclass(frozen=True, slots=True)
class Launch:
    """One container, as `<engine> run` will start it."""

    image: str
    name: str
    command: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    env_from_host: tuple[str, ...] = ()  # `-e NAME`: the value comes from the caller's env
    volumes: tuple[tuple[str, str, bool], ...] = ()  # (host, container, read_only)
    ports: tuple[str, ...] = ()  # `127.0.0.1:8888:8888`
    gpus: int = 0  # 0: none; -1: all
    memory_gib: float | None = None
    cpus: float | None = None
    workdir: str = WORKSPACE
    detach: bool = True
    interactive: bool = False
    remove: bool = False
    read_only_root: bool = False
    network: str | None = None


def user_flag(o: DockerOptions) -> str:
    """The host user, so files written to mounts stay theirs; never root in the container."""
    if o.uid == 0:
        return f"{IMAGE_UID}:{IMAGE_UID}"
    return f"{o.uid}:{o.gid}"


def shm_size(memory_gib: float | None) -> str:
    """/dev/shm by the rule every site shares (torchship.conventions.shm_mib), in whole GiB
    as `--shm-size` takes it (rounded down)."""
    return f"{shm_mib(memory_gib) // 1024}g"


def gpu_flags(engine: str, gpus: int) -> list[str]:
    if gpus == 0:
        return []
    if engine == "podman":  # CDI: `nvidia-ctk cdi generate` names them nvidia.com/gpu=N|all
        names = ["all"] if gpus < 0 else [str(i) for i in range(gpus)]
        return [f"--device=nvidia.com/gpu={n}" for n in names]
    return ["--gpus", "all" if gpus < 0 else f'"device={",".join(map(str, range(gpus)))}"']


def run_argv(o: DockerOptions, launch: Launch) -> list[str]:
    """The exact `<engine> run` command for `launch`. Pure."""
    argv = [o.engine, "run"]
    argv += ["--detach"] if launch.detach else []
    argv += ["--interactive", "--tty"] if launch.interactive else []
    argv += ["--rm"] if launch.remove else []
    argv += ["--name", launch.name]
    for k, v in sorted(launch.labels.items()):
        argv += ["--label", f"{k}={v}"]
    argv += ["--user", user_flag(o), "--workdir", launch.workdir]
    argv += ["--security-opt=no-new-privileges", "--cap-drop=ALL"]
    if launch.read_only_root:
        argv += ["--read-only", "--tmpfs=/tmp:rw,exec,size=2g"]
    argv += ["--ipc=host"] if o.ipc_host else [f"--shm-size={o.shm_size or shm_size(None)}"]
    argv += gpu_flags(o.engine, launch.gpus)
    if launch.memory_gib:
        argv += [f"--memory={launch.memory_gib:g}g"]
    if launch.cpus:
        argv += [f"--cpus={launch.cpus:g}"]
    if launch.network:
        argv += [f"--network={launch.network}"]
    for host, inside, ro in launch.volumes:
        argv += ["--volume", f"{host}:{inside}" + (":ro" if ro else "")]
    for port in launch.ports:
        argv += ["--publish", port]
    for k, v in sorted(launch.env.items()):
        argv += ["--env", f"{k}={v}"]
    for k in launch.env_from_host:
        argv += ["--env", k]
    return [*argv, *o.engine_args, launch.image, *launch.command]


def metrics_endpoint(network: str | None) -> dict[str, str]:
    """The workload's training-metrics settings in a container on `network`: every address
    inside a published network (the engine forwards 127.0.0.1 only), loopback on the host's,
    none without a network."""
    if network == "none":
        return {}
    addr = "127.0.0.1" if network == "host" else "0.0.0.0"
    return {METRICS_PORT_ENV: str(TRAINING_PORT), METRICS_ADDR_ENV: addr}


def container_name(job_id: str) -> str:
    return f"torchship-{job_id}"


class DockerBackend:
    kind = SCHEME

    def __init__(self, options: DockerOptions, runner: Runner = subprocess.run) -> None:
        self.options = options
        self.runner = runner

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def image_for(self, lock: Lock | None, job: JobSpec) -> str:
        if lock is None:
            raise UsageError(
                f"{job.source}: the docker site runs the project's image, built from its lock, "
                "and there is no torchship.lock",
                "run `torchship lock` and `torchship image build` in the project folder",
            )
        return image_tag(lock)

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request:
        if job.nodes > 1:
            raise UsageError(
                f"{job.source}: job.nodes = {job.nodes}, but the docker site runs one node",
                "set nodes = 1, or run it on a Kubernetes site",
            )
        o = self.options
        image = self.image_for(lock, job)
        run = run_dir(o.home, job_id)
        inside = Path(RUN_MOUNT)
        cmd = torchrun_argv("python", job, job_id)  # the image's python
        volumes: list[tuple[str, str, bool]] = [(str(run), RUN_MOUNT, False)]
        ckpt = checkpoint_dir(job, run)
        if not ckpt.is_relative_to(run):  # a shared checkpoint folder: same path inside
            volumes.append((str(ckpt), str(ckpt), False))
        if job.command is None:
            cmd += workload_argv(job, inside)  # an absolute checkpoint_dir keeps its path
        else:
            cmd += ["--no-python", *job.command]
            volumes.append((str(Path(job.source).resolve().parent), WORKSPACE, False))
        volumes += [(str(data_path(job, d.address("path") or d.path)), d.mount, d.read_only)
                    for d in job.data]  # fmt: skip
        if job.max_runtime_minutes:
            grace = f"--kill-after={STOP_GRACE_S}"
            cmd = ["timeout", grace, f"{job.max_runtime_minutes * 60:g}", *cmd]
        env = metrics_endpoint(o.network) | job_env(job, job_id, inside)  # the job's env wins
        ports: tuple[str, ...] = ()
        if o.network not in ("none", "host"):  # on this machine only, at a port the engine picks
            ports = (f"127.0.0.1::{TRAINING_PORT}",)
        labels = {LABEL_JOB: job_id, LABEL_SITE: SCHEME}
        if lock is not None:
            labels[LABEL_LOCK] = lock.content_hash
        launch = Launch(
            image=image,
            name=container_name(job_id),
            command=tuple(cmd),
            labels=labels,
            env=env,
            volumes=tuple(volumes),
            gpus=job.gpus_per_node,
            memory_gib=job.memory_gib,
            cpus=job.cpus,
            read_only_root=True,
            network=o.network,
            ports=ports,
        )
        opts = o if o.shm_size or o.ipc_host else replace(o, shm_size=shm_size(job.memory_gib))
        argv = run_argv(opts, launch)
        return Request(
            site=SCHEME,
            kind=SCHEME,
            job_id=job_id,
            text=shlex.join(argv),
            argv=tuple(argv),
            run_dir=str(run),
            max_runtime_s=job.max_runtime_minutes * 60 if job.max_runtime_minutes else None,
        )

    def site_findings(self, job: JobSpec, lock: Lock | None) -> list[Finding]:
        """What only this site checks: the engine is there and the image is built."""
        o = self.options
        if shutil.which(o.engine) is None:
            return [_finding("engine-missing", f"{o.engine} is not installed on this machine",
                             "install docker or podman, or run on another site")]  # fmt: skip
        if lock is None:
            return []
        image = image_tag(lock)
        probe = self._engine("image", "inspect", "--format", "{{json .Config.Labels}}", image)
        if probe.returncode != 0:
            folder = Path(job.source).parent
            return [
                _finding(
                    "image-missing",
                    f"the image {image} is not built on this machine",
                    f"build it: `torchship image build {folder}`",
                )
            ]
        labels = json.loads(probe.stdout or "null") or {}
        if labels.get(LABEL_LOCK) != lock.content_hash:
            return [_finding("image-not-from-lock",
                             f"{image} was not built from this lock ({labels.get(LABEL_LOCK)})",
                             "rebuild it: `torchship image build`")]  # fmt: skip
        return []

    def apply(self, request: Request) -> str:
        refuse_remote_engine(os.environ, self.options.engine_args)
        run = Path(request.run_dir or run_dir(self.options.home, request.job_id))
        run.mkdir(parents=True, exist_ok=True)
        if self.options.uid == 0:  # the container runs as the image's user; let it write
            os.chown(run, IMAGE_UID, IMAGE_UID)
        proc = self.runner(list(request.argv), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise TorchshipError(
                f"{self.options.engine} could not start the job: "
                + last_line(proc.stderr, "no output"),
                f"run the command to see more: {request.text}",
            )
        return f"{SCHEME}://{self.options.host}/{request.job_id}"

    def _engine(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.runner(
            [self.options.engine, *args], capture_output=True, text=True, check=False
        )

    def _job(self, handle: str) -> str:
        host, job_id = parse_handle(handle, SCHEME)
        if host != self.options.host:
            raise UsageError(
                f"{handle} ran on {host}, not on this machine ({self.options.host})",
                f"run this command on {host}",
            )
        return job_id

    def status(self, handle: str) -> SiteStatus:
        job_id = self._job(handle)
        fmt = "{{.ID}}"
        found = self._engine("ps", "-a", "--filter", f"label={LABEL_JOB}={job_id}", "--format", fmt)
        ids = found.stdout.split()
        if found.returncode != 0 or not ids:
            return _no_container(job_id)
        state = self._engine("inspect", "--format", "{{json .State}}", ids[0])
        try:
            st = json.loads(state.stdout)
        except json.JSONDecodeError:
            return SiteStatus(
                "lost",
                reason=f"{self.options.engine} inspect: " + last_line(state.stderr, "no output"),
            )
        return self._judged(job_id, st)

    def statuses(self, handles: Sequence[str]) -> dict[str, SiteStatus | TorchshipError]:
        """`status` of many jobs in two engine calls whatever their number: one `ps` of every
        container with the job label, one `container inspect` of all it found (none when it
        found none). A handle of another machine gets its error; an engine that does not
        answer raises."""
        out: dict[str, SiteStatus | TorchshipError] = {}
        jobs: dict[str, str] = {}
        for handle in dict.fromkeys(handles):
            try:
                jobs[handle] = self._job(handle)
            except TorchshipError as e:
                out[handle] = e
        states = self._labelled_states() if jobs else {}
        for handle, job_id in jobs.items():
            st = states.get(job_id)
            out[handle] = _no_container(job_id) if st is None else self._judged(job_id, st)
        return out

    def _labelled_states(self) -> dict[str, dict[str, Any]]:
        """Job id → the `.State` of its newest container (the first `ps` lists, as `status`
        takes), for every container with the job label. The label's value is read from
        `inspect` (`.Config.Labels`): podman's `ps --format` has no `.Label "key"`."""
        ids = self._ask("ps", "-a", "--filter", f"label={LABEL_JOB}", "--format", "{{.ID}}").split()
        if not ids:
            return {}
        # a container removed since `ps` is missing from the array and makes the exit status
        # non-zero (docker 1, podman 125): the others are still there, so stdout is read
        found = self._ask("container", "inspect", *ids, any_exit=True)
        try:
            records = json.loads(found)
        except json.JSONDecodeError:
            records = None
        if not isinstance(records, list):
            raise self._unanswered("container inspect", found)
        # `ps` prints IDs cut to 12 hex digits (docker's stringid.TruncateID, podman's ID[:12])
        by_id = {str(r.get("Id", ""))[:12]: r for r in records if isinstance(r, dict)}
        states: dict[str, dict[str, Any]] = {}
        for short in ids:  # newest first, as `ps` lists them
            record = by_id.get(short[:12]) or {}
            labels = (record.get("Config") or {}).get("Labels") or {}
            job_id, st = labels.get(LABEL_JOB), record.get("State")
            if isinstance(job_id, str) and isinstance(st, dict):
                states.setdefault(job_id, st)
        return states

    def _ask(self, *args: str, any_exit: bool = False) -> str:
        """An engine command's output, for the batch: an engine that is missing or fails
        raises once for all the jobs, rather than reading as every job lost."""
        try:
            proc = self._engine(*args)
        except OSError as e:
            raise TorchshipError(
                f"cannot run {self.options.engine}: {e.strerror or e}",
                "install docker or podman (or set TORCHSHIP_ENGINE), or ask on the machine "
                "that ran the jobs",
            ) from None
        if proc.returncode != 0 and not any_exit:
            raise self._unanswered(args[0], proc.stderr)
        return proc.stdout

    def _unanswered(self, what: str, output: str) -> TorchshipError:
        return TorchshipError(
            f"{self.options.engine} {what} failed: {last_line(output, 'no output')}",
            f"check that the engine runs: `{self.options.engine} ps`",
        )

    def _judged(self, job_id: str, st: dict[str, Any]) -> SiteStatus:
        """The container's state, read with the job's cancel marker."""
        site = container_state(st)
        cancelled = run_dir(self.options.home, job_id) / CANCELLED
        if site.state in ("failed", "cancelled") and cancelled.exists():
            # torchrun turns the SIGTERM of `stop` into exit 1; the marker says it was asked
            return SiteStatus("cancelled", site.exit_code, "cancelled")
        return site

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        name = container_name(self._job(handle))
        argv = [self.options.engine, "logs", *(["--follow"] if follow else []), name]
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            assert proc.stdout is not None
            yield from proc.stdout

    def cancel(self, handle: str) -> None:
        job_id = self._job(handle)
        run = run_dir(self.options.home, job_id)
        if self.status(handle).state in ("succeeded", "failed", "cancelled"):
            return
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / CANCELLED, f"{time.time()}\n")
        self._engine("stop", "--time", str(STOP_GRACE_S), container_name(job_id))


def _no_container(job_id: str) -> SiteStatus:
    return SiteStatus("lost", reason=f"no container labelled {LABEL_JOB}={job_id}")


def container_state(st: dict[str, object]) -> SiteStatus:
    """An engine's `.State` → a site state. Exit 124/137 after `timeout`: over max runtime."""
    status = str(st.get("Status", "")).lower()
    code = st.get("ExitCode")
    exit_code = int(code) if isinstance(code, int) else None
    if status in ("created", "configured", "initialized"):
        return SiteStatus("pending", reason="created")
    if status in ("running", "restarting", "paused", "stopping"):
        return SiteStatus("running")
    if status in ("exited", "stopped", "dead"):
        if exit_code == 0:
            return SiteStatus("succeeded", 0)
        if exit_code == 124:
            return SiteStatus("failed", 124, "stopped at its max_runtime_minutes")
        if exit_code == 143 or (exit_code == 137 and st.get("OOMKilled") is not True):
            return SiteStatus("cancelled", exit_code, "stopped")
        if st.get("OOMKilled") is True:
            return SiteStatus("failed", exit_code, "killed: out of memory (raise memory_gib)")
        return SiteStatus("failed", exit_code, str(st.get("Error") or ""))
    return SiteStatus("lost", exit_code, f"unknown container state {status!r}")


def _finding(code: str, message: str, fix: str) -> Finding:
    return Finding(code, ERROR, message, fix, "job")


def engine_elsewhere(environ: Mapping[str, str]) -> str | None:
    """What in `environ` (or the docker config it names) points the engine at another machine,
    as one line (`DOCKER_HOST='ssh://…'`); None when the engine is this machine's. Docker's
    order (docker/cli `resolveContextName`): DOCKER_HOST, else DOCKER_CONTEXT, else the
    config's currentContext, a context counting as local when its endpoint is a unix socket
    (rootless docker's). Podman's CONTAINER_HOST and CONTAINER_CONNECTION count whichever
    engine runs: a podman connection is nearly always ssh://."""
    host = environ.get("DOCKER_HOST")
    if host and not host.startswith(LOCAL_ENDPOINT):
        return f"DOCKER_HOST={excerpt(host)}"
    if not host:
        config = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
        name, where = environ.get("DOCKER_CONTEXT"), "DOCKER_CONTEXT="
        if not name:
            name, where = _json(config / "config.json").get("currentContext"), "currentContext "
        if isinstance(name, str) and name and name != "default":
            meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
            endpoints = _json(meta / "meta.json").get("Endpoints")
            docker = endpoints.get("docker") if isinstance(endpoints, dict) else None
            url = docker.get("Host") if isinstance(docker, dict) else None
            if not isinstance(url, str) or not url.startswith(LOCAL_ENDPOINT):
                at = excerpt(url) if isinstance(url, str) else "a context torchship cannot read"
                return f"{where}{excerpt(name)} ({at}) in {config}"
    container = environ.get("CONTAINER_HOST")
    if container and not container.startswith(LOCAL_ENDPOINT):
        return f"CONTAINER_HOST={excerpt(container)}"
    if environ.get("CONTAINER_CONNECTION"):
        return f"CONTAINER_CONNECTION={excerpt(environ['CONTAINER_CONNECTION'])}"
    return None


def _json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when there is none (docker reads a broken one so too)."""
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def refuse_remote_engine(environ: Mapping[str, str], engine_args: Sequence[str]) -> None:
    """UsageError when the engine would be another machine's: see engine_elsewhere."""
    flag = next((a for a in engine_args if a.split("=", 1)[0] in REMOTE_FLAGS), None)
    why = f"TORCHSHIP_ENGINE_ARGS {excerpt(flag)}" if flag else engine_elsewhere(environ)
    if why is not None:
        raise UsageError(
            f"the docker site runs jobs on this machine, but {why} points its engine elsewhere",
            "unset it, or `docker context use default` (a local unix:// socket is fine); "
            "run on remote machines through a Kubernetes or SkyPilot site",
        )


def options(engine: str | None = None, engine_args: Sequence[str] = ()) -> DockerOptions:
    args = tuple(engine_args) or tuple(shlex.split(os.environ.get("TORCHSHIP_ENGINE_ARGS", "")))
    refuse_remote_engine(os.environ, args)  # before any engine command, `docker version` too
    return DockerOptions(
        engine=engine or os.environ.get("TORCHSHIP_ENGINE") or detect_engine(engines=ENGINES),
        home=data_dir(),
        host=socket.gethostname(),
        uid=os.getuid(),
        gid=os.getgid(),
        engine_args=args,
        network=os.environ.get("TORCHSHIP_DOCKER_NETWORK") or None,
    )


def create(site: Site | None = None, peers: tuple[Site, ...] = ()) -> DockerBackend:
    """This machine's engine (a docker site has no settings of its own)."""
    return DockerBackend(options())


KIND = SiteKind(name=SCHEME, capabilities=CAPABILITIES, handle_scheme=SCHEME, create=create)
