"""The SkyPilot site: a cloud without Kubernetes, reached through the `sky` CLI.

plan() renders the task (pure): the locked image, the accelerators, the nodes, data from
buckets, and autostop with down, so the VMs are released when the job ends.

    resources: {image_id: docker:<image>, accelerators: {A100: 8}, autostop: {idle_minutes, down}}
    num_nodes, envs, file_mounts, run: torchrun with SkyPilot's node rank and head IP

apply() writes it into the run folder and starts, under the supervisor the local site uses,

    sky launch --yes --down --cluster ts-<job id> <run folder>/task.sky.yaml

attached: it provisions, streams the job's output into the run folder's log (so the log
outlives the cluster) and exits with the job's end (SkyPilot's codes: 0 succeeded, 100
failed, 103 cancelled), which the supervisor records in exit.json. While it runs, and if this
machine lost it, status asks `sky queue -o json` for the job on the cluster.
Handle: `sky://<cluster>/<job id>`. Cancel: `sky cancel`, then `sky down` to release at once.

`torchship plan JOB -o DIR` writes the same task as `<job>.sky.yaml` with the command beside it.

Options (its keys of a [[site]] table): infra (SkyPilot's resources.infra: where it may run the
job; a private site must name infrastructure of its own, `k8s/<context>` or `ssh/<pool>`),
registry (prefix of the lock's image tag), log_format (text, the default, or json). A site on
a Kubernetes context of yours has that cluster recorded and checked like a Kubernetes site's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torchship._atomic import write_text_atomic
from torchship.backends.base import (
    Request,
    SiteKind,
    SiteStatus,
    admit,
    data_classes,
    last_line,
    parse_handle,
)
from torchship.backends.supervise import read_log, start_supervised, starting, supervisor_of
from torchship.conventions import (
    EXIT_FILE,
    JOB_ID_ENV,
    LOG,
    LOG_FORMAT_ENV,
    RENDEZVOUS_PORT,
    RUN_DIR_ENV,
    data_dir,
    read_json,
    run_dir,
)
from torchship.errors import TorchshipError, UsageError, excerpt
from torchship.image.dockerfile import image_tag
from torchship.launch import multinode_torchrun_argv, workload_argv
from torchship.lock.model import Lock
from torchship.place.sites import KUBE_CONTEXT, REGISTRY, Capabilities, Site, registry_host
from torchship.spec.job import BUCKETS, JobSpec
from torchship.spec.load import FieldReader

KIND_NAME = "skypilot"
SCHEME = "sky"  # handles: sky://<cluster>/<job id>
# The run folder inside the container SkyPilot starts from image_id: SkyPilot mounts none of
# this machine's, so the job writes here and its log streams back through `sky launch`.
RUN_DIR = "/tmp/torchship-run"
AUTOSTOP_IDLE_MINUTES = 10
MASTER_PORT = RENDEZVOUS_PORT
KILL_AFTER_S = 60  # after max_runtime: SIGTERM, then SIGKILL this much later
# `sky launch` / `sky logs` exit codes (sky.exceptions.JobExitCode, SkyPilot 0.8+)
SKY_EXIT = {0: "succeeded", 100: "failed", 103: "cancelled"}
# sky.skylet.job_lib.JobStatus → our states
SKY_JOB_STATES = {
    "INIT": "pending", "PENDING": "pending", "SETTING_UP": "pending", "RUNNING": "running",
    "SUCCEEDED": "succeeded", "FAILED": "failed", "FAILED_SETUP": "failed",
    "FAILED_DRIVER": "failed", "CANCELLED": "cancelled",
}  # fmt: skip
Runner = Callable[..., "subprocess.CompletedProcess[str]"]
CAPABILITIES = Capabilities(
    kind=KIND_NAME, multi_node=True, max_nodes=1, gpus=True, containers=True,
    volumes=("bucket",), remote=True, data_reach="bucket",
)  # fmt: skip
OPTION_KEYS = ("infra", "registry", "log_format")
# SkyPilot infra that is yours, named: a kubeconfig context or an SSH node pool. A SkyPilot site
# may be private only on these (anything else is a cloud SkyPilot may provision in).
PRIVATE_INFRA = ("k8s/", "ssh/")  # after normal_infra
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class SkyPilotSiteOptions:
    """A SkyPilot site's own settings (see the module's docstring)."""

    infra: str = ""  # its resources.infra ("aws/us-east-1", "k8s/onprem", "ssh/pool")
    registry: str = ""
    log_format: str = "text"  # the log comes back to this machine's run folder, read by people

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reaches(self) -> tuple[tuple[str, str], ...]:
        context = self.infra.removeprefix("k8s/") if self.infra.startswith("k8s/") else None
        cluster = ((KUBE_CONTEXT, context),) if context else ()
        registry = ((REGISTRY, registry_host(self.registry)),) if self.registry else ()
        return (*cluster, *registry)


def normal_infra(text: str) -> str:
    """SkyPilot's infra as SkyPilot reads it: outer slashes dropped, the cloud lower case,
    `kubernetes` spelt `k8s` (the context after it keeps its case)."""
    cloud, sep, rest = text.strip().strip("/").partition("/")
    cloud = cloud.lower()
    return ("k8s" if cloud == "kubernetes" else cloud) + sep + rest


def parse_options(r: FieldReader, trust: str) -> SkyPilotSiteOptions:
    log_format = r.string("log_format", "text", 'log_format = "json"') or ""
    if log_format not in LOG_FORMATS:
        raise r.fail(
            "log_format", f"{excerpt(log_format)} is not a log format", "one of: json, text"
        )
    infra = normal_infra(r.string("infra", "", 'infra = "k8s/onprem"') or "")
    if infra and ("region" in r.table or any(c.isspace() or c == "*" for c in infra)):
        raise r.fail("infra", "give the region inside infra, not beside it, and no spaces or *",
                     'e.g. infra = "aws/us-east-1", and remove region')  # fmt: skip
    cloud, _, rest = infra.partition("/")
    if rest.startswith("/") or rest.endswith("/"):
        raise r.fail("infra", f"{excerpt(infra)} has an empty part", 'e.g. infra = "k8s/onprem"')
    if cloud == "k8s" and not rest:
        raise r.fail(
            "infra",
            "names no context: SkyPilot would run on any allowed context, yours included",
            'name it: infra = "k8s/<context>"',
        )
    if trust == "private" and not (infra.startswith(PRIVATE_INFRA) and rest):
        raise r.fail(
            "trust",
            "a SkyPilot site is private only on infrastructure it names as yours "
            f"(infra = {excerpt(infra or 'none')}: SkyPilot may provision in any enabled cloud)",
            'add infra = "k8s/<context>" or "ssh/<node pool>", or set trust = "public"',
        )
    registry = r.string("registry", "", 'registry = "registry.example.com/team/"') or ""
    return SkyPilotSiteOptions(infra=infra, registry=registry, log_format=log_format)


def options_of(site: Site) -> SkyPilotSiteOptions:
    """The site's SkyPilot options (a UsageError for a site of another kind)."""
    if not isinstance(site.options, SkyPilotSiteOptions):
        raise UsageError(f"site {site.name} is a {site.kind} site, not a SkyPilot one",
                         "give the SkyPilot backend a SkyPilot site")  # fmt: skip
    return site.options


def accelerator(job: JobSpec, site: Site) -> str:
    """The site's GPU model the job accepts (the first such pool)."""
    wanted = set(job.gpu_models)
    for pool in site.gpus:
        if not wanted or pool.model in wanted or pool.model.lower() in {w.lower() for w in wanted}:
            return pool.model
    raise UsageError(f"{site.name} has none of the job's GPU models ({', '.join(job.gpu_models)})",
                     "place it with `torchship plan`, which checks the models first")  # fmt: skip


def file_mounts(job: JobSpec) -> dict[str, Any]:
    """The job's data from buckets, mounted (not copied) where the job expects it."""
    mounts: dict[str, Any] = {}
    for i, d in enumerate(job.data):
        source = d.address("bucket")
        if source is None:
            raise UsageError(
                f"{job.source}: job.data[{i}]: a SkyPilot site reads data from a bucket, and "
                f"{d.path!r} has no bucket address",
                f"add its bucket to mirrors ({', '.join(BUCKETS)}), or run the job on a site "
                "that reaches it",
            )
        mounts[d.mount] = {"source": source, "mode": "MOUNT"}
    return mounts


# the torchrun arguments that take SkyPilot's per-node variables, and how the script writes them
SKY_VARIABLE_ARGS = (
    "--nnodes=${SKYPILOT_NUM_NODES}",
    "--node-rank=${SKYPILOT_NODE_RANK}",
    "--master-addr=${HEAD_IP}",
)
_SKY_EXPANDED = {
    arg: arg.split("=", 1)[0] + '="' + arg.split("=", 1)[1] + '"' for arg in SKY_VARIABLE_ARGS
}


def sky_task(job: JobSpec, lock: Lock | None, job_id: str, site: Site) -> dict[str, Any]:
    if lock is None:
        raise UsageError(
            f"{job.source}: a SkyPilot site runs the project's image, and there is no lock",
            "run `torchship lock`, then build and push the image",
        )
    o = options_of(site)
    image = o.registry + image_tag(lock)
    rendezvous = [*SKY_VARIABLE_ARGS, f"--master-port={MASTER_PORT}"]
    argv = multinode_torchrun_argv("python", job, job_id, rendezvous)
    tail = workload_argv(job, Path(RUN_DIR)) if job.command is None else ["--no-python",
                                                                          *job.command]  # fmt: skip
    if job.max_runtime_minutes:  # enforced on the nodes: the job ends there, not only here
        argv[:0] = ["timeout", f"--kill-after={KILL_AFTER_S}", f"{job.max_runtime_minutes * 60:g}"]
    # torchship's own references to SkyPilot's variables are expanded by the shell, as one word
    # each; every other word, and every word of the user's command, is quoted
    command = " ".join(
        [*(_SKY_EXPANDED.get(a) or shlex.quote(a) for a in argv), *map(shlex.quote, tail)]
    )
    resources: dict[str, Any] = {
        "image_id": f"docker:{image}",
        "autostop": {"idle_minutes": AUTOSTOP_IDLE_MINUTES, "down": True},
    }
    if job.gpus_per_node:
        resources["accelerators"] = {accelerator(job, site): job.gpus_per_node}
    if o.infra:  # where SkyPilot may run it: a private site names its own cluster or pool
        resources["infra"] = o.infra
    elif site.region:
        resources["region"] = site.region
    if job.cpus:
        resources["cpus"] = f"{job.cpus:g}+"
    if job.memory_gib:
        resources["memory"] = f"{job.memory_gib:g}+"
    envs = {JOB_ID_ENV: job_id, RUN_DIR_ENV: RUN_DIR, "PYTHONUNBUFFERED": "1"}
    if o.log_format == "json":  # text is the workload's default
        envs[LOG_FORMAT_ENV] = "json"
    envs |= job.env
    run = (
        f'set -e\nHEAD_IP=$(echo "$SKYPILOT_NODE_IPS" | head -n1)\nmkdir -p {RUN_DIR}\n{command}\n'
    )
    task: dict[str, Any] = {"name": job.name, "resources": resources, "num_nodes": job.nodes,
                            "envs": envs}  # fmt: skip
    if job.data:
        task["file_mounts"] = file_mounts(job)
    return {**task, "run": run}


def launch_command(task_file: str, cluster: str, sky: str = "sky") -> list[str]:
    """`sky launch` that tears the cluster down when the job ends (--down) and asks nothing."""
    return [sky, "launch", "--yes", "--down", "--cluster", cluster, task_file]


def cluster_name(job_id: str) -> str:
    """One cluster per job (SkyPilot names: a letter first, then [-a-z0-9])."""
    return f"ts-{job_id}"


def sky_handle(handle: str) -> tuple[str, str]:
    """(cluster, job id) of a handle torchship made: the cluster is the job's own, never one
    a hand-edited handle names (cancel runs `sky down` on it)."""
    cluster, job_id = parse_handle(handle, SCHEME)
    if cluster != cluster_name(job_id):
        raise UsageError(
            f"{excerpt(handle)} names cluster {excerpt(cluster)}, not the job's own "
            f"{cluster_name(job_id)}: torchship acts only on clusters it launched",
            "see `torchship status`; use `sky` itself for other clusters",
        )
    return cluster, job_id


def make_handle(cluster: str, job_id: str) -> str:
    return f"{SCHEME}://{cluster}/{job_id}"


class SkyPilotBackend:
    kind = KIND_NAME

    def __init__(
        self,
        site: Site | None,
        home: Path,
        sky: str | None,
        python: str = sys.executable,
        runner: Runner = subprocess.run,
    ) -> None:
        self.site = site
        self.home = home
        self.sky = sky  # the `sky` executable; None: SkyPilot is not installed
        self.python = python
        self.runner = runner
        self._children: list[subprocess.Popen[bytes]] = []

    def capabilities(self) -> Capabilities:
        s = self.site
        return CAPABILITIES if s is None else replace(CAPABILITIES, max_nodes=s.max_nodes)

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request:
        if self.site is None:
            raise UsageError("a SkyPilot job needs its site", "run it with --site auto")
        from torchship.k8s.render import to_yaml

        run = run_dir(self.home, job_id)
        task_file = str(run / "task.sky.yaml")
        launch = launch_command(task_file, cluster_name(job_id), self.sky or "sky")
        text = to_yaml([sky_task(job, lock, job_id, self.site)])
        sup = [self.python, "-m", "torchship.backends.supervise", "--run-dir", str(run),
               "--job-id", job_id, "--remote", "--"]  # fmt: skip
        return Request(site=self.site.name, kind=self.kind, job_id=job_id,
                       text=f"{text}# {shlex.join(launch)}\n", argv=(*sup, *launch),
                       run_dir=str(run), data_classes=data_classes(job))  # fmt: skip

    def apply(self, request: Request) -> str:
        if self.site is None:
            raise UsageError("a SkyPilot job needs its site", "run it with --site auto")
        admit(request, self.site)
        ctx = self.site.kube_context
        if ctx:  # SkyPilot on a cluster of ours: the recorded one only
            from torchship.k8s.apply import connect
            from torchship.k8s.identity import check_site, identity_of

            check_site(self.site.name, ctx, self.site.trust, identity_of(connect(ctx)))
        if self.sky is None:
            raise UsageError(
                "SkyPilot is not installed here (no `sky` on PATH)",
                "pip install 'skypilot[aws]' (or [gcp], [azure]) and run `sky check`; or write "
                "the task with `torchship plan JOB -o DIR` and launch it where SkyPilot is",
            )
        run = Path(request.run_dir or run_dir(self.home, request.job_id))
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "task.sky.yaml", request.text)
        self._children.append(start_supervised(request, run))
        return make_handle(cluster_name(request.job_id), request.job_id)

    def status(self, handle: str) -> SiteStatus:
        for c in self._children:
            c.poll()  # reap a finished supervisor we started
        cluster, job_id = sky_handle(handle)
        run = run_dir(self.home, job_id)
        ended = read_json(run / EXIT_FILE)
        if ended is not None:
            return ended_status(ended, run / LOG)
        launching = self._client(run, job_id) is not None or starting(run)  # before asking
        return self._judged(cluster, run, launching, self.queue(cluster))

    def _judged(self, cluster: str, run: Path, launching: bool, found: SiteStatus | None
                ) -> SiteStatus:  # fmt: skip
        """A job with no exit record, once its cluster's queue has been read (None: the
        cluster is not there, or SkyPilot could not say)."""
        if found is not None:
            return found
        if launching:
            return SiteStatus("pending", reason=f"sky launch is provisioning {cluster}")
        ended = read_json(run / EXIT_FILE)  # `sky launch` may have ended while we asked
        if ended is not None:
            return ended_status(ended, run / LOG)
        return SiteStatus("lost", reason=f"cluster {cluster} is gone, and torchship's `sky "
                          "launch` ended without recording how the job ended")  # fmt: skip

    def queue(self, cluster: str) -> SiteStatus | None:
        """The newest job on the cluster, as `sky queue -o json` reports it; None: no cluster."""
        if self.sky is None:
            return None
        out = self._sky("queue", "--output", "json", cluster)
        return newest_job(parse_json_tail(out.stdout).get(cluster) if out.returncode == 0 else None)

    def statuses(self, handles: Sequence[str]) -> dict[str, SiteStatus | TorchshipError]:
        """`status` of many jobs in one `sky queue` of all their clusters whatever their
        number (SkyPilot's CLI takes several and answers for each: a cluster that is gone is
        left out of its JSON), none when every job recorded its end. A handle that names
        another cluster than its job's gets its error; a SkyPilot that cannot be asked (not
        installed, or `sky queue` fails: its API server is down) raises."""
        for c in self._children:
            c.poll()
        out: dict[str, SiteStatus | TorchshipError] = {}
        asking: dict[str, tuple[str, Path, bool]] = {}  # handle → (cluster, run, launching)
        for handle in dict.fromkeys(handles):
            try:
                cluster, job_id = sky_handle(handle)
            except TorchshipError as e:
                out[handle] = e
                continue
            run = run_dir(self.home, job_id)
            ended = read_json(run / EXIT_FILE)
            if ended is not None:
                out[handle] = ended_status(ended, run / LOG)
            else:
                asking[handle] = (cluster, run, self._client(run, job_id) is not None
                                  or starting(run))  # fmt: skip
        queues = self._queues(sorted({c for c, _, _ in asking.values()})) if asking else {}
        for handle, (cluster, run, launching) in asking.items():
            out[handle] = self._judged(cluster, run, launching, newest_job(queues.get(cluster)))
        return {h: out[h] for h in dict.fromkeys(handles)}

    def _queues(self, clusters: list[str]) -> dict[str, Any]:
        """Cluster → its jobs, from one `sky queue -o json` of them all."""
        if self.sky is None:
            raise UsageError(
                "SkyPilot is not installed here (no `sky` on PATH): torchship cannot ask "
                f"about {len(clusters)} cluster(s) whose jobs recorded no end",
                "pip install 'skypilot[aws]' (or [gcp], [azure]) and run `sky check`; or ask "
                "on the machine that launched them",
            )
        out = self._sky("queue", "--output", "json", *clusters)
        if out.returncode != 0:
            why = last_line(out.stderr or out.stdout, f"exit {out.returncode}")
            raise UsageError(
                f"`sky queue` failed: {why}",
                "check SkyPilot here: `sky status` (`sky api info` for its API server)",
            )
        return parse_json_tail(out.stdout)

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        """The output `sky launch` streamed into the run folder (it outlives the cluster)."""
        _, job_id = sky_handle(handle)
        return read_log(run_dir(self.home, job_id) / LOG, follow,
                        lambda: self.status(handle).state)  # fmt: skip

    def cancel(self, handle: str) -> None:
        """Cancel the job on the cluster, stop the local client, then tear the cluster down."""
        cluster, job_id = sky_handle(handle)
        if self.status(handle).state in ("succeeded", "failed", "cancelled"):
            return
        if self.sky is None:
            raise UsageError("SkyPilot is not installed here (no `sky` on PATH), so the job "
                             f"on {cluster} cannot be cancelled from here",
                             f"where SkyPilot is: sky down --yes {cluster}")  # fmt: skip
        self._sky("cancel", "--yes", "--all", cluster)  # fails while provisioning: down ends it
        run = run_dir(self.home, job_id)
        client = self._client(run, job_id)
        if client is not None:
            os.kill(client, signal.SIGTERM)  # the supervisor stops `sky launch`, records it
        down = self._sky("down", "--yes", cluster)
        if down.returncode != 0 and "not found" not in down.stdout + down.stderr:
            why = last_line(down.stderr or down.stdout)
            raise UsageError(f"`sky down {cluster}` failed: {why}",
                             f"release it yourself: sky down --yes {cluster}")  # fmt: skip
        if client is None and read_json(run / EXIT_FILE) is None:  # no supervisor to record it
            record = {"state": "cancelled", "exit_code": None, "reason": "cancelled; cluster down"}
            run.mkdir(parents=True, exist_ok=True)  # cancelled from another machine
            write_text_atomic(run / EXIT_FILE, json.dumps(record) + "\n")

    def _client(self, run: Path, job_id: str) -> int | None:
        """The pid of the supervisor of this job's `sky launch`, while it lives."""
        return supervisor_of(run, job_id)

    def _sky(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.sky is not None
        return self.runner([self.sky, *args], capture_output=True, text=True, check=False,
                           timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


def ended_status(ended: dict[str, Any], log: Path) -> SiteStatus:
    """The supervisor's record of `sky launch`, read with SkyPilot's exit codes."""
    code = ended.get("exit_code")
    if ended.get("state") in ("succeeded", "cancelled") or code is None:
        return SiteStatus(str(ended["state"]), code, str(ended.get("reason", "")))
    if code in SKY_EXIT:
        state = SKY_EXIT[code]
        return SiteStatus(state, 0 if state == "succeeded" else 1,
                          _why(state, f"sky launch exit {code}"))  # fmt: skip
    text = log.read_text("utf-8", "replace") if log.exists() else ""
    ours = "\n".join(x for x in text.splitlines() if not x.startswith("[torchship]"))
    tail = last_line(ours)[:300]
    return SiteStatus("failed", code, f"sky launch failed (exit {code}): {tail}")


def newest_job(jobs: object) -> SiteStatus | None:
    """The newest of a cluster's jobs, as `sky queue -o json` lists them; None: none."""
    if not isinstance(jobs, list) or not jobs:
        return None
    last = max(jobs, key=lambda j: int(j.get("job_id", 0)))
    sky_state = str(last.get("status", ""))
    state = SKY_JOB_STATES.get(sky_state.removeprefix("JobStatus."), "running")
    code = {"succeeded": 0, "failed": 1}.get(state)
    return SiteStatus(state, exit_code=code, reason=_why(state, f"SkyPilot job {sky_state}"))


def parse_json_tail(text: str) -> dict[str, Any]:
    """The JSON object `sky … -o json` prints after its progress lines ({} when none)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("{"):
            try:
                data = json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
            return data if isinstance(data, dict) else {}
    return {}


def _why(state: str, detail: str) -> str:
    head = {"failed": "the job failed on the cluster", "cancelled": "cancelled on the cluster"}
    return f"{head[state]} ({detail})" if state in head else ""


def create(site: Site | None = None, peers: tuple[Site, ...] = ()) -> SkyPilotBackend:
    """The site's backend; with no site, one that reads and cancels jobs from their handles
    and run folders alone."""
    return SkyPilotBackend(site, data_dir(), shutil.which("sky"))


def check(site: Site, live: bool) -> list[str]:
    """`torchship site check`: a site on a Kubernetes context of yours has its cluster
    recorded or checked, as a Kubernetes site's."""
    ctx = site.kube_context
    if ctx is None:
        return []
    from torchship.k8s.identity import record_cluster

    return record_cluster(site.name, ctx, site.trust).splitlines()


def export(
    job: JobSpec, lock: Lock | None, site: Site, job_id: str, out: Path, image_digest: str | None
) -> dict[str, str]:
    """`torchship plan -o DIR`: the task as `<job>.sky.yaml`, and the `sky launch` that runs it
    (on a cluster named after the job) as `<job>.sky-launch.sh`."""
    from torchship.k8s.render import dns_name, to_yaml

    task = f"{job.name}.sky.yaml"
    launch = shlex.join(launch_command(str(out / task), dns_name(job.name)))
    return {task: to_yaml([sky_task(job, lock, job_id, site)]), f"{job.name}.sky-launch.sh":
            launch + "\n"}  # fmt: skip


KIND = SiteKind(
    name=KIND_NAME,
    capabilities=CAPABILITIES,
    handle_scheme=SCHEME,
    create=create,
    option_keys=OPTION_KEYS,
    parse_options=parse_options,
    check=check,
    export=export,
)
