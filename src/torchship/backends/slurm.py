"""The `slurm` site: a Slurm cluster reached on its login node — this machine, or over SSH with
the user's own keys and ~/.ssh/config (`login = "hpc-login"`, BatchMode: never a prompt).

plan() is pure: it renders the exact batch script. `#SBATCH` lines for the nodes, GPUs per node
(`--gpus-per-node=<gres type>:<n>`, the type from the site's `gres` map of GPU models), CPUs,
memory, time, partition, account and QoS; `--requeue`, so a preempted job runs again and its
workload resumes from the checkpoint folder in its run folder; then `srun` starts torchrun once
per node with a c10d rendezvous on the first node of Slurm's node list (its NodeAddr), and the
script records how the job ended in the run folder (`exit.json`), which lives on the cluster's
shared filesystem (`runs_dir`).

The job runs in the lock's environment as synced to the shared filesystem (`python`, the
interpreter of that environment, e.g. `<env_dir>/<env>-<key>/bin/python` after `torchship sync`
there), or in the lock's image through Pyxis/enroot (`container = "pyxis"`: srun
`--container-image`) or Apptainer (`container = "apptainer"`: `apptainer exec --nv`).

apply() submits with `sbatch --parsable` (the script on stdin: nothing to copy over SSH).
status: the exit record, else `squeue`, else `scontrol show job`, else `sacct` (when the
cluster keeps accounting), else lost; `statuses`, many jobs in one squeue, one read of their
exit records and one sacct per login node. logs: the job's output file; cancel: `scancel`.
load(): the partition's pending queue (`squeue --start`), so placement's burst rule sees the
real wait. Handle: `slurm://<login or localhost>/<job id>?id=<slurm job id>&runs=<runs_dir>`.

Options (its keys of a [[site]] table): login, partition, account, qos, time_limit_minutes,
gres (GPU model → GRES type), python, runs_dir, container, registry, interface (the network
interface multi-node jobs talk over: GLOO/NCCL_SOCKET_IFNAME), sbatch (more `#SBATCH` options).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from torchship.backends.base import (
    Request,
    SiteKind,
    SiteStatus,
    admit,
    data_classes,
    last_line,
)
from torchship.conventions import (
    CHECKPOINT_DIR_ENV,
    EXIT_FILE,
    LOCAL_RENDEZVOUS,
    RENDEZVOUS_PORT,
    RUNS,
    data_dir,
)
from torchship.errors import TorchshipError, UsageError, excerpt
from torchship.launch import checkpoint_dir, job_env, workload_argv
from torchship.lock.model import Lock
from torchship.place.policy import SiteLoad
from torchship.place.sites import REGISTRY, Capabilities, Site, canonical_gpu, registry_host
from torchship.spec.job import JobSpec
from torchship.spec.load import FieldReader

KIND_NAME = "slurm"
SCHEME = "slurm"
CAPABILITIES = Capabilities(
    kind=KIND_NAME, multi_node=True, max_nodes=1, gpus=True, containers=True,
    volumes=("host-path",), remote=True, data_reach="path", gang_scheduling=True,
)  # fmt: skip
OPTION_KEYS = (
    "login", "partition", "account", "qos", "time_limit_minutes", "gres", "python", "runs_dir",
    "container", "registry", "interface", "sbatch",
)  # fmt: skip
CONTAINERS = ("", "pyxis", "apptainer")
PYTHONS = frozenset({"python", "python3"})
NODE_ADDR_SED = r"s/.*NodeAddr=\([^ ]*\).*/\1/p"  # a node's address in `scontrol show node`
_WORD = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")  # partition, account, qos, gres type, interface
_LOGIN = re.compile(r"^[A-Za-z0-9_.@-]{1,255}$")  # an ssh destination or ~/.ssh/config alias
_SBATCH = re.compile(r"^--[a-z][a-z-]*(=[^\s'\"\\`$;&|<>]+)?$")  # one long option, no shell
# Slurm job states (squeue/scontrol/sacct) → the site's states
STATES = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending", "RESV_DEL_HOLD": "pending",
    "SUSPENDED": "pending", "PREEMPTED": "pending", "RESIZING": "running",
    "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running",
    "SIGNALING": "running", "COMPLETED": "succeeded", "FAILED": "failed", "TIMEOUT": "failed",
    "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed",
    "DEADLINE": "failed", "SPECIAL_EXIT": "failed", "CANCELLED": "cancelled",
    "REVOKED": "cancelled",
}  # fmt: skip
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True, slots=True)
class SlurmSiteOptions:
    """A Slurm site's own settings (see the module's docstring)."""

    login: str = ""  # "": this machine is the login node
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit_minutes: int = 0  # the partition's limit, used when a job sets none
    gres: tuple[tuple[str, str], ...] = ()  # (GPU model, GRES type): ("A100", "a100")
    python: str = "python3"  # the interpreter on the nodes: the synced environment's
    runs_dir: str = ""  # run folders on the shared filesystem ("": this machine's data dir)
    container: str = ""  # "" | "pyxis" | "apptainer"
    registry: str = ""  # prefix of the lock's image tag (container jobs)
    interface: str = ""  # the network interface nodes reach each other on (multi-node)
    sbatch: tuple[str, ...] = ()  # more `#SBATCH` options, one long option each

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gres"] = dict(self.gres)
        return out

    def reaches(self) -> tuple[tuple[str, str], ...]:
        host = (("the Slurm login node", self.login),) if self.login else ()
        return (*host, *(((REGISTRY, registry_host(self.registry)),) if self.registry else ()))


def _word(r: FieldReader, key: str, example: str) -> str:
    value = r.string(key, "", example) or ""
    if value and not _WORD.match(value):
        raise r.fail(key, f"{excerpt(value)} is not a Slurm name", f"write {example}")
    return value


def parse_options(r: FieldReader, trust: str) -> SlurmSiteOptions:
    login = r.string("login", "", 'login = "hpc-login"') or ""
    if login and (not _LOGIN.match(login) or login.startswith("-")):
        raise r.fail("login", f"{excerpt(login)} is not an SSH destination",
                     'write login = "user@login1" or a Host of ~/.ssh/config')  # fmt: skip
    gres: list[tuple[str, str]] = []
    raw = r.table.get("gres", {})
    if not isinstance(raw, dict):
        raise r.fail("gres", "must be a table of GPU model = GRES type", 'gres = { A100 = "a100" }')
    for model, kind in raw.items():
        if not isinstance(kind, str) or not _WORD.match(kind):
            raise r.fail(f"gres.{model}", f"{excerpt(kind)} is not a GRES type",
                         'write gres = { A100 = "a100" }')  # fmt: skip
        gres.append((canonical_gpu(str(model)), kind))
    container = r.string("container", "", 'container = "pyxis"') or ""
    if container not in CONTAINERS:
        raise r.fail("container", f"{excerpt(container)} is not a container runtime",
                     "one of: pyxis, apptainer (or leave it out)")  # fmt: skip
    sbatch = r.strings("sbatch", 'sbatch = ["--constraint=ib"]')
    for i, option in enumerate(sbatch):
        if not _SBATCH.match(option):
            raise r.fail(f"sbatch[{i}]", f"{excerpt(option)} is not one long sbatch option",
                         'write e.g. "--constraint=ib" (no spaces, quotes or shell)')  # fmt: skip
    python = r.string("python", "python3", 'python = "/shared/envs/proj/bin/python"') or "python3"
    runs = r.string("runs_dir", "", 'runs_dir = "/shared/torchship/runs"') or ""
    for key, value in (("python", python), ("runs_dir", runs)):
        if "\n" in value or (key == "runs_dir" and value and not value.startswith("/")):
            raise r.fail(key, f"{excerpt(value)} is not an absolute path on the cluster",
                         f'write {key} = "/shared/…"')  # fmt: skip
    if login and not runs:
        raise r.fail(
            "runs_dir",
            "missing: jobs on a remote cluster need a folder on its shared filesystem",
            'add runs_dir = "/shared/torchship/runs"',
        )
    return SlurmSiteOptions(
        login=login,
        partition=_word(r, "partition", 'partition = "gpu"'),
        account=_word(r, "account", 'account = "ml-team"'),
        qos=_word(r, "qos", 'qos = "normal"'),
        time_limit_minutes=r.integer("time_limit_minutes", 0, 0, "time_limit_minutes = 1440"),
        gres=tuple(gres),
        python=python,
        runs_dir=runs,
        container=container,
        registry=r.string("registry", "", 'registry = "registry.example.com/team/"') or "",
        interface=_word(r, "interface", 'interface = "ib0"'),
        sbatch=sbatch,
    )


def options_of(site: Site) -> SlurmSiteOptions:
    if not isinstance(site.options, SlurmSiteOptions):
        raise UsageError(f"site {site.name} is a {site.kind} site, not a Slurm one",
                         "give the Slurm backend a Slurm site")  # fmt: skip
    return site.options


def runs_dir(o: SlurmSiteOptions) -> str:
    return o.runs_dir or str(data_dir() / RUNS)


# --- the batch script (pure) -------------------------------------------------------------------


def gres_type(job: JobSpec, site: Site, o: SlurmSiteOptions) -> str:
    """The GRES type of the first of the site's GPU models the job accepts ("" when the site
    maps none: `--gpus-per-node=N` takes any)."""
    wanted = {canonical_gpu(m) for m in job.gpu_models}
    for pool in site.gpus:
        if not wanted or pool.model in wanted:
            return dict(o.gres).get(pool.model, "")
    return ""


def _image(lock: Lock | None, o: SlurmSiteOptions, job: JobSpec) -> str:
    if lock is None:
        raise UsageError(
            f"{job.source}: this Slurm site runs the project's image ({o.container}), and "
            "there is no lock", "run `torchship lock`, then build and push the image",
        )  # fmt: skip
    from torchship.image.dockerfile import image_tag

    ref = o.registry + image_tag(lock)
    if o.container == "apptainer":
        return f"docker://{ref}"
    host, sep, rest = ref.partition("/")  # enroot: registry#image
    return f"{host}#{rest}" if sep and ("." in host or ":" in host) else ref


def data_binds(job: JobSpec, o: SlurmSiteOptions) -> list[str]:
    """The job's data on the cluster's filesystem (its `path`), where the job reads it. In a
    container it is bound at its `mount` (read-only unless the job says otherwise); without
    one the job reads it at its path, so a different mount cannot be honoured."""
    binds = []
    for i, d in enumerate(job.data):
        path = d.address("path")
        if path is None:
            raise UsageError(
                f"{job.source}: job.data[{i}]: a Slurm site reads data from its filesystem, "
                f"and {d.path!r} has no path there",
                "add the path on the cluster's shared filesystem to mirrors, or run the job "
                "on a site that reaches it",
            )
        if "," in path or ":" in path or "," in d.mount or ":" in d.mount:
            raise UsageError(f"{job.source}: job.data[{i}]: a path with ',' or ':' cannot be "
                             "bound into a container", "rename the folder")  # fmt: skip
        if not o.container and d.mount != path:
            raise UsageError(
                f"{job.source}: job.data[{i}]: without a container a Slurm job reads data "
                f"where it is ({path}), not at mount {d.mount}",
                f'set mount = "{path}", or give the site container = "pyxis" or "apptainer"',
            )
        binds.append(f"{path}:{d.mount}" + (":ro" if d.read_only else ""))
    return binds


def sbatch_script(job: JobSpec, lock: Lock | None, job_id: str, site: Site) -> str:
    """The batch script `apply` submits, exactly (pure)."""
    o = options_of(site)
    run = f"{runs_dir(o)}/{job_id}"
    q = shlex.quote
    head = ["#!/bin/bash", f"#SBATCH --job-name={job.name}", f"#SBATCH --nodes={job.nodes}",
            "#SBATCH --ntasks-per-node=1"]  # fmt: skip
    if job.cpus:
        head.append(f"#SBATCH --cpus-per-task={max(1, round(job.cpus))}")
    if job.memory_gib:
        head.append(f"#SBATCH --mem={max(1, round(job.memory_gib * 1024))}M")
    if job.gpus_per_node:
        kind = gres_type(job, site, o)
        head.append(f"#SBATCH --gpus-per-node={kind + ':' if kind else ''}{job.gpus_per_node}")
    minutes = math.ceil(job.max_runtime_minutes or o.time_limit_minutes or 0)
    if minutes:
        head.append(f"#SBATCH --time={minutes}")
    head += [f"#SBATCH --{k}={v}" for k, v in (("partition", o.partition),
             ("account", o.account), ("qos", o.qos)) if v]  # fmt: skip
    head += [f"#SBATCH --output={run}/slurm-%j.out", "#SBATCH --open-mode=append",
             "#SBATCH --requeue", *(f"#SBATCH {x}" for x in o.sbatch)]  # fmt: skip
    env = job_env(job, job_id, Path(run))
    multi = job.nodes > 1
    if multi:  # gloo would bind to the address the hostname resolves to, not the loopback
        env.pop("GLOO_SOCKET_IFNAME", None)
        if o.interface:
            env |= {"GLOO_SOCKET_IFNAME": o.interface, "NCCL_SOCKET_IFNAME": o.interface}
    env[CHECKPOINT_DIR_ENV] = str(checkpoint_dir(job, Path(run)))
    python = "python" if o.container else o.python
    torchrun = [python, "-m", "torch.distributed.run", f"--nnodes={job.nodes}",
                f"--nproc-per-node={job.processes_per_node}", "--rdzv-backend=c10d",
                f"--rdzv-id={job_id}", f"--max-restarts={job.retries}"]  # fmt: skip
    if job.command is None:
        program = workload_argv(job, Path(run))
    else:
        program = ["--no-python", *[python if i == 0 and c in PYTHONS else c
                                    for i, c in enumerate(job.command)]]  # fmt: skip
    cwd = run if job.command is None else str(Path(job.source).resolve().parent)
    binds = [f"{run}:{run}", *data_binds(job, o)]
    srun = ["srun", f"--nodes={job.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            f"--chdir={cwd}"]  # fmt: skip
    if o.container == "pyxis":
        srun += [f"--container-image={_image(lock, o, job)}",
                 f"--container-mounts={','.join(binds)}", "--container-workdir=" + cwd]  # fmt: skip
    elif o.container == "apptainer":
        torchrun[:0] = ["apptainer", "exec", "--nv", "--bind", ",".join(binds),
                        _image(lock, o, job)]  # fmt: skip
    endpoint = LOCAL_RENDEZVOUS  # one node: c10d on the loopback, a free port
    body = [
        "",
        f"run={q(run)}",
        'mkdir -p "$run"',
        f'rm -f "$run/{EXIT_FILE}"',
        'echo "[torchship] job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on '
        '$SLURM_JOB_NODELIST"',
        *(f"export {k}={q(v)}" for k, v in env.items()),
    ]
    if multi:
        # The rendezvous is on the first node of the allocation, by its NodeAddr; that node
        # hosts the store (is_host=1), and each node gives the others its own NodeAddr
        # (--local-addr): told rather than guessed from what its hostname resolves to. Each
        # node's shell (sh -c, run by srun) reads its own variables; every other word is quoted.
        body += [
            'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f'addr=$(scontrol show node "$head" | sed -n {q(NODE_ADDR_SED)})',
            'export TORCHSHIP_RDZV_ADDR="${addr:-$head}"',
        ]
        node = (
            'h=0; [ "$SLURM_NODEID" = 0 ] && h=1; '
            f'a=$(scontrol show node "$SLURMD_NODENAME" | sed -n {q(NODE_ADDR_SED)}); exec '
            f'{shlex.join(torchrun)} --rdzv-endpoint="$TORCHSHIP_RDZV_ADDR:{RENDEZVOUS_PORT}" '
            f'--rdzv-conf="is_host=$h" --local-addr="${{a:-$SLURMD_NODENAME}}" '
            f"{shlex.join(program)}"
        )
        body += [f"{shlex.join(srun)} \\", f"  sh -c {q(node)}"]
    else:
        body += [
            f"{shlex.join(srun)} \\",
            f"  {shlex.join(torchrun)} --rdzv-endpoint={endpoint} \\",
            f"  {shlex.join(program)}",
        ]
    body += [
        "code=$?",
        'if [ "$code" -eq 0 ]; then state=succeeded; else state=failed; fi',
        'printf \'{"state": "%s", "exit_code": %d, "ended_at": %s}\\n\' '
        f'"$state" "$code" "$(date +%s)" > "$run/{EXIT_FILE}.tmp"',
        f'mv "$run/{EXIT_FILE}.tmp" "$run/{EXIT_FILE}"',
        'exit "$code"',
    ]
    return "\n".join(head + body) + "\n"


# --- talking to the cluster ---------------------------------------------------------------------


def make_handle(o: SlurmSiteOptions, job_id: str, slurm_id: str) -> str:
    return (f"{SCHEME}://{o.login or 'localhost'}/{job_id}?id={slurm_id}"
            f"&runs={quote(runs_dir(o), safe='')}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Handle:
    login: str  # "" for this machine
    job_id: str
    slurm_id: str
    runs: str

    @property
    def run(self) -> str:
        return f"{self.runs}/{self.job_id}"

    @property
    def exit_path(self) -> str:
        return f"{self.run}/{EXIT_FILE}"


def parse_slurm_handle(handle: str) -> Handle:
    parts = urlsplit(handle)
    query = parse_qs(parts.query)
    job_id = parts.path.strip("/")
    slurm_id = (query.get("id") or [""])[0]
    runs = (query.get("runs") or [""])[0]
    host = parts.netloc
    good_host = bool(_LOGIN.match(host)) and not host.startswith("-")
    if (parts.scheme != SCHEME or not job_id or "/" in job_id or not slurm_id.isdigit()
            or not runs.startswith("/") or not good_host):  # fmt: skip
        raise UsageError(f"{excerpt(handle)} is not a Slurm handle",
                         "handles look like slurm://<login>/<job id>?id=<slurm id>&runs=<dir>; "
                         "see `torchship status`")  # fmt: skip
    return Handle("" if host == "localhost" else host, job_id, slurm_id, runs)


LIVE = ("pending", "running")
# The states squeue leaves out unless `-t` names them: "If no state is specified then pending,
# running, and completing jobs are reported" (squeue(1), --states); these are the ended ones of
# its JOB STATE CODES. Seen on slurm-wlm 22.05: a FAILED and a COMPLETED job are not listed.
ENDED = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                   "OUT_OF_MEMORY", "PREEMPTED", "SPECIAL_EXIT", "TIMEOUT"})  # fmt: skip
# What one command may carry: the ids or paths of a batch go in commands of at most this many
# characters. Over SSH the whole command is one argument of the login node's shell, and Linux
# caps one argument at MAX_ARG_STRLEN, 128 KiB (include/uapi/linux/binfmts.h); half of it is
# ~7,000 job ids of 8 digits or ~600 exit records of 100 characters per command.
ARGV_BUDGET = 64 * 1024
# Each file's text then a NUL, for every path given: `$(…)` drops the trailing newline, which
# JSON does not need, and a missing file is an empty text.
READ_ALL = 'for f in "$@"; do printf "%s\\0" "$(cat "$f" 2>/dev/null)"; done'


def chunks(words: Sequence[str], budget: int = ARGV_BUDGET) -> Iterator[list[str]]:
    """`words` in runs whose joined length stays within `budget` (one run for a usual batch)."""
    run: list[str] = []
    size = 0
    for word in words:
        if run and size + len(word) + 1 > budget:
            yield run
            run, size = [], 0
        run.append(word)
        size += len(word) + 1
    if run:
        yield run


def queued_state(line: str) -> tuple[str, str]:
    """squeue's `%T|%r` (state, reason) → (our state, reason)."""
    name, _, why = line.partition("|")
    return STATES.get(name, "running"), "" if why in ("None", "") else f"Slurm: {name} ({why})"


def listed_state(line: str) -> tuple[str, str]:
    """`squeue -t all`'s `%T|%r` → (our state, reason) as `status` reads it: squeue's for the
    states squeue lists by default, scontrol's (`JobState=` and the first word of `Reason=`)
    for the ended ones, which squeue leaves out unless asked and status then reads there."""
    name, _, why = line.partition("|")
    if name not in ENDED:
        return queued_state(line)
    reason = why.split()[0] if why.split() and why != "None" else ""
    return STATES.get(name, "running"), f"Slurm: {name}" + (f" ({reason})" if reason else "")


def accounted_state(name: str) -> tuple[str, str]:
    """sacct's State → (our state, reason)."""
    return STATES.get(name, "failed"), f"Slurm (sacct): {name}"


def exit_record(text: str) -> dict[str, Any] | None:
    """The job script's exit.json (or cancel's), when it reads as one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("state") in STATES.values() else None


def judged(h: Handle, state: str, reason: str, ended: dict[str, Any] | None) -> SiteStatus:
    """A job Slurm no longer runs: its exit record, else what Slurm says, else lost."""
    if ended is not None:
        code = ended.get("exit_code")
        why = "" if ended["state"] == "succeeded" else f"the job exited {code} on the cluster"
        return SiteStatus(str(ended["state"]), code if isinstance(code, int) else None, why,
                          ended.get("ended_at"))  # fmt: skip
    if state:
        return SiteStatus(state, None if state != "succeeded" else 0, reason)
    return SiteStatus("lost", reason=f"Slurm job {h.slurm_id} is gone from squeue, scontrol "
                      "and sacct, and it recorded no end in its run folder")  # fmt: skip


class SlurmBackend:
    kind = KIND_NAME

    def __init__(self, site: Site | None, runner: Runner = subprocess.run) -> None:
        self.site = site
        self.runner = runner

    def capabilities(self) -> Capabilities:
        s = self.site
        return CAPABILITIES if s is None else replace(CAPABILITIES, max_nodes=s.max_nodes)

    def _cluster(
        self, login: str, argv: list[str], stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on the login node: here, or over SSH (BatchMode: never a prompt)."""
        if login:
            argv = ["ssh", "-o", "BatchMode=yes", login, "--", shlex.join(argv)]
        elif shutil.which(argv[0]) is None:
            raise UsageError(f"`{argv[0]}` is not installed here: this machine is not a Slurm "
                             "login node", 'set login = "<login node>" in the site, or run '
                             "torchship on the login node")  # fmt: skip
        return self.runner(argv, input=stdin, capture_output=True, text=True, check=False,
                           timeout=timeout)  # fmt: skip

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request:
        if self.site is None:
            raise UsageError("a Slurm job needs its site", "run it with --site auto")
        o = options_of(self.site)
        return Request(site=self.site.name, kind=self.kind, job_id=job_id,
                       text=sbatch_script(job, lock, job_id, self.site),
                       argv=("sbatch", "--parsable"), run_dir=f"{runs_dir(o)}/{job_id}",
                       max_runtime_s=(job.max_runtime_minutes or 0) * 60 or None,
                       data_classes=data_classes(job))  # fmt: skip

    def apply(self, request: Request) -> str:
        if self.site is None:
            raise UsageError("a Slurm job needs its site", "run it with --site auto")
        admit(request, self.site)
        o = options_of(self.site)
        self._cluster(o.login, ["mkdir", "-p", f"{runs_dir(o)}/{request.job_id}"])
        out = self._cluster(o.login, list(request.argv), stdin=request.text)
        slurm_id = out.stdout.strip().split(";")[0]
        if out.returncode != 0 or not slurm_id.isdigit():
            why = last_line(out.stderr or out.stdout, f"exit {out.returncode}")
            raise UsageError(f"sbatch refused job {request.job_id} on {self.site.name}: {why}",
                             "fix the site's partition/account/qos or the job's resources "
                             "(see `torchship plan JOB -o DIR` for the script)")  # fmt: skip
        return make_handle(o, request.job_id, slurm_id)

    def _exit_record(self, h: Handle) -> dict[str, Any] | None:
        out = self._cluster(h.login, ["cat", h.exit_path])
        return exit_record(out.stdout) if out.returncode == 0 else None

    def status(self, handle: str) -> SiteStatus:
        h = parse_slurm_handle(handle)
        state, reason = self._slurm_state(h)
        if state in ("pending", "running"):
            return SiteStatus(state, reason=reason)
        return judged(h, state, reason, self._exit_record(h))

    def _slurm_state(self, h: Handle) -> tuple[str, str]:
        """(our state, Slurm's reason) from squeue, scontrol, then sacct; ("", "") unknown."""
        q = self._cluster(h.login, ["squeue", "-h", "-j", h.slurm_id, "-o", "%T|%r"])
        line = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else ""
        if line:
            return queued_state(line)
        c = self._cluster(h.login, ["scontrol", "show", "job", h.slurm_id])
        m = re.search(r"JobState=(\w+)", c.stdout) if c.returncode == 0 else None
        if m:
            found = re.search(r"Reason=(\S+)", c.stdout)
            reason = found.group(1) if found and found.group(1) != "None" else ""
            return STATES.get(m.group(1), "running"), f"Slurm: {m.group(1)}" + (
                f" ({reason})" if reason else ""
            )
        a = self._cluster(h.login, ["sacct", "-n", "-X", "-P", "-j", h.slurm_id, "-o", "State"])
        words = a.stdout.strip().split() if a.returncode == 0 else []
        return accounted_state(words[0]) if words else ("", "")

    def statuses(self, handles: Sequence[str]) -> dict[str, SiteStatus | TorchshipError]:
        """`status` of many jobs in at most three commands per login node whatever their
        number (more only past ARGV_BUDGET): one `squeue` of them all; one read of the exit
        records of those squeue does not show pending or running; one `sacct` of those it
        does not know and that recorded no end. `scontrol show job` is left out: it knows the
        jobs squeue knows (both read slurmctld's table), so it adds nothing here. A handle
        torchship did not write gets its error; a login node that cannot be asked raises."""
        out: dict[str, SiteStatus | TorchshipError] = {}
        by_login: dict[str, list[tuple[str, Handle]]] = {}
        for handle in dict.fromkeys(handles):
            try:
                h = parse_slurm_handle(handle)
            except TorchshipError as e:
                out[handle] = e
                continue
            by_login.setdefault(h.login, []).append((handle, h))
        for login, jobs in by_login.items():
            out |= self._login_statuses(login, jobs)
        return {h: out[h] for h in dict.fromkeys(handles)}

    def _login_statuses(self, login: str, jobs: list[tuple[str, Handle]]) -> dict[str, SiteStatus]:
        queued = self._squeue(login, [h.slurm_id for _, h in jobs])
        done = [h for _, h in jobs if queued.get(h.slurm_id, ("", ""))[0] not in LIVE]
        records = self._exit_records(login, [h.exit_path for h in done])
        unknown = [h.slurm_id for h in done if h.slurm_id not in queued
                   and records.get(h.exit_path) is None]  # fmt: skip
        accounted = self._sacct(login, unknown)
        out: dict[str, SiteStatus] = {}
        for handle, h in jobs:
            state, reason = queued.get(h.slurm_id) or accounted.get(h.slurm_id) or ("", "")
            if state in LIVE:
                out[handle] = SiteStatus(state, reason=reason)
            else:
                out[handle] = judged(h, state, reason, records.get(h.exit_path))
        return out

    def _squeue(self, login: str, ids: list[str]) -> dict[str, tuple[str, str]]:
        """Slurm id → (our state, reason) of the jobs slurmctld still knows. squeue answers
        for several ids from the whole job table, leaving out the ones it no longer knows;
        for one id it asks for that job, and an unknown one is an error (slurm's
        src/squeue/squeue.c, `_print_job`), read here as not known."""
        out: dict[str, tuple[str, str]] = {}
        for chunk in chunks(sorted(set(ids))):
            # %A: the job id (squeue(1), "Valid for jobs only"), before the fields status
            # reads; `-t all`: the ended jobs too, which `status` finds with scontrol
            argv = ["squeue", "-h", "-t", "all", "-j", ",".join(chunk), "-o", "%A|%T|%r"]
            q = self._cluster(login, argv)
            if q.returncode != 0 and "Invalid job id" not in q.stderr:
                raise self._unanswered(login, "squeue", q)
            for line in q.stdout.splitlines() if q.returncode == 0 else []:
                slurm_id, _, rest = line.strip().partition("|")
                if rest:
                    out.setdefault(slurm_id, listed_state(rest))
        return out

    def _exit_records(self, login: str, paths: list[str]) -> dict[str, dict[str, Any]]:
        """Path → the exit record there (what `_exit_record` reads), for all in one command:
        each file's text, NUL-ended, in the order given ("" for a file that is not there)."""
        out: dict[str, dict[str, Any]] = {}
        for chunk in chunks(paths):
            argv = ["sh", "-c", READ_ALL, "sh", *chunk]
            got = self._cluster(login, argv)
            if got.returncode != 0:
                raise self._unanswered(login, "reading the exit records", got)
            for path, text in zip(chunk, got.stdout.split("\0"), strict=False):
                record = exit_record(text)
                if record is not None:
                    out[path] = record
        return out

    def _sacct(self, login: str, ids: list[str]) -> dict[str, tuple[str, str]]:
        """Slurm id → (our state, reason) from accounting; {} where the cluster keeps none
        (sacct fails: status reads that as not known too)."""
        out: dict[str, tuple[str, str]] = {}
        for chunk in chunks(sorted(set(ids))):
            argv = ["sacct", "-n", "-X", "-P", "-j", ",".join(chunk), "-o", "JobID,State"]
            a = self._cluster(login, argv)
            for line in a.stdout.splitlines() if a.returncode == 0 else []:
                slurm_id, _, state = line.strip().partition("|")
                if state.split():  # "CANCELLED by 0" is two words; the state is the first
                    out.setdefault(slurm_id, accounted_state(state.split()[0]))
        return out

    def _unanswered(
        self, login: str, what: str, proc: subprocess.CompletedProcess[str]
    ) -> TorchshipError:
        where = login or "this machine"
        why = last_line(proc.stderr or proc.stdout, f"exit {proc.returncode}")
        return UsageError(
            f"{what} on {where} failed: {why}",
            f"check that {where} answers: `{'ssh ' + login + ' ' if login else ''}squeue`",
        )

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        h = parse_slurm_handle(handle)
        path = f"{h.run}/slurm-{h.slurm_id}.out"
        seen = 0
        while True:
            out = self._cluster(h.login, ["tail", "-c", f"+{seen + 1}", path])
            text = out.stdout if out.returncode == 0 else ""
            seen += len(text.encode())
            yield from text.splitlines(keepends=True)
            if not follow or self.status(handle).state not in ("pending", "running"):
                if follow:  # what it wrote while it ended
                    tail = self._cluster(h.login, ["tail", "-c", f"+{seen + 1}", path])
                    yield from (tail.stdout if tail.returncode == 0 else "").splitlines(True)
                return
            time.sleep(1.0)

    def cancel(self, handle: str) -> None:
        h = parse_slurm_handle(handle)
        if self.status(handle).state in ("succeeded", "failed", "cancelled", "lost"):
            return
        out = self._cluster(h.login, ["scancel", h.slurm_id])
        if out.returncode != 0:
            raise UsageError(f"scancel {h.slurm_id} failed: {last_line(out.stderr or out.stdout)}",
                             f"on the login node: scancel {h.slurm_id}")  # fmt: skip
        record = json.dumps({"state": "cancelled", "exit_code": None, "ended_at": time.time(),
                             "reason": "cancelled with scancel"})  # fmt: skip
        self._cluster(h.login, ["sh", "-c", '[ -e "$1" ] || printf "%s\\n" "$2" > "$1"', "sh",
                                f"{h.run}/{EXIT_FILE}", record])  # fmt: skip


# --- the kind's other parts ---------------------------------------------------------------------


def parse_start(squeue_start: str, now: float) -> tuple[int, float | None]:
    """(pending jobs, the latest expected start among them as minutes from now; None when no
    start is known) from `squeue -h -t PENDING --start -o %S` lines (`2026-11-30T12:00:00` or
    `N/A`)."""
    pending, latest = 0, None
    for line in squeue_start.split():
        pending += 1
        try:
            at = time.mktime(time.strptime(line.strip(), "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            continue
        minutes = max(0.0, (at - now) / 60)
        latest = minutes if latest is None else max(latest, minutes)
    return pending, latest


def load(site: Site) -> SiteLoad | None:
    """The partition's queue: with jobs pending, a new job waits at least until the latest of
    their expected starts (Slurm's backfill estimate); a start Slurm cannot estimate counts
    as past the site's wait budget."""
    o = options_of(site)
    argv = ["squeue", "-h", "-t", "PENDING", "--start", "-o", "%S"]
    if o.partition:
        argv[1:1] = ["-p", o.partition]
    out = SlurmBackend(site)._cluster(o.login, argv, timeout=30)
    if out.returncode != 0:
        raise UsageError(f"squeue failed: {last_line(out.stderr or out.stdout)}",
                         "check the site's login and partition")  # fmt: skip
    pending, latest = parse_start(out.stdout, time.time())
    if not pending:
        return SiteLoad(free_gpus=site.total_gpus)
    wait = latest if latest is not None else site.wait_budget_minutes + 1
    return SiteLoad(free_gpus=0, wait_minutes=wait, backlog=True)


def create(site: Site | None = None, peers: tuple[Site, ...] = ()) -> SlurmBackend:
    """The site's backend; with no site, one that works from handles alone."""
    return SlurmBackend(site)


def check(site: Site, live: bool) -> list[str]:
    """`torchship site check`: the partition exists and is up, seen from the login node."""
    o = options_of(site)
    argv = ["sinfo", "-h", "-o", "%P %a %D %G"] + (["-p", o.partition] if o.partition else [])
    out = SlurmBackend(site)._cluster(o.login, argv, timeout=30)
    where = o.login or "this machine"
    if out.returncode != 0:
        return [f"warning: {site.name}: sinfo on {where} failed: "
                f"{last_line(out.stderr or out.stdout)}"]  # fmt: skip
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    if not rows:
        return [f"warning: {site.name}: partition {o.partition or '(default)'} not found on "
                f"{where}"]  # fmt: skip
    lines = []
    for row in rows:
        part, avail, nodes = row[0].rstrip("*"), row[1], row[2]
        gres = row[3] if len(row) > 3 else "(null)"
        note = "" if avail == "up" else "warning: "
        lines.append(f"{note}{site.name}: partition {part} is {avail}, {nodes} node(s), "
                     f"GRES {gres}")  # fmt: skip
    return lines


def export(
    job: JobSpec, lock: Lock | None, site: Site, job_id: str, out: Path, image_digest: str | None
) -> dict[str, str]:
    """`torchship plan -o DIR`: the batch script as `<job>.sbatch` (submit: sbatch FILE)."""
    return {f"{job.name}.sbatch": sbatch_script(job, lock, job_id, site)}


KIND = SiteKind(
    name=KIND_NAME,
    capabilities=CAPABILITIES,
    handle_scheme=SCHEME,
    create=create,
    option_keys=OPTION_KEYS,
    parse_options=parse_options,
    check=check,
    export=export,
    load=load,
)
