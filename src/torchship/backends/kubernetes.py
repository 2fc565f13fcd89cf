"""The Kubernetes site: plan renders the objects (exact YAML), apply creates them through the
client, status/logs/cancel find them again from the handle alone.

Handle: `k8s://<context>/<namespace>/<kind>/<name>?cluster=<identity>`: the site's context,
and the digest of the cluster identity (API server URL and CA fingerprint,
torchship.k8s.identity) the objects were created on. Every call first checks that the context
still reaches that cluster: apply against the identity recorded for the site (`site add`,
`site check`), status, logs and cancel against the handle's. A switched or edited context is
refused with both identities, never followed.

Status reads the job object's conditions (batch Job, JobSet, TrainJob, PyTorchJob) and its pods
by the job-id label; a job Kueue has not admitted yet (suspended) is pending.

Options (its keys of a [[site]] table): context (required: the current context changes with
`kubectl config use-context`, and a job must not follow it), namespace, operator (how several
nodes run: jobset; trainer, Kubeflow Trainer v2's TrainJob; pytorchjob, the legacy Kubeflow v1
PyTorchJob, also read under its old name kubeflow; docs/sites-kubernetes.md), registry (prefix
of the lock's image tag), checkpoint_claim (a PVC for run folders, so a retried pod resumes),
prometheus (annotations | podmonitor | off), prometheus_namespace, log_format (json | text).
`site check` records the cluster the context reaches (torchship.k8s.identity) and, with --live,
reads the GPUs of its nodes. The objects are rendered by torchship.k8s.render from KubeOptions
(`options_for`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

from torchship.backends.base import Request, SiteKind, SiteStatus, admit, data_classes
from torchship.conventions import JOB_ID_LABEL, K8S_LABEL_PREFIX
from torchship.errors import TorchshipError, UsageError, excerpt
from torchship.k8s import render as k8s
from torchship.k8s.apply import Cluster, ClusterError, PodState, connect
from torchship.k8s.identity import (
    ClusterIdentity,
    IdentityError,
    check_site,
    identity_of,
    record_cluster,
    same_cluster,
)
from torchship.place.sites import KUBE_CONTEXT, REGISTRY, Capabilities, Site, registry_host

if TYPE_CHECKING:
    from torchship.lock.model import Lock
    from torchship.spec.job import JobSpec
    from torchship.spec.load import FieldReader

SCHEME = "kubernetes"
HANDLE_SCHEME = "k8s"
JOB_KINDS = ("Job", "JobSet", "TrainJob", "PyTorchJob")
# The condition that ends each kind, and what it means; the last True one wins. (TrainJob:
# Complete, Failed, as Job; its Suspended and Created conditions end nothing.)
DONE = {"Complete": "succeeded", "Completed": "succeeded", "Succeeded": "succeeded",
        "SuccessCriteriaMet": "succeeded", "Failed": "failed"}  # fmt: skip
LABEL_JOB = K8S_LABEL_PREFIX + JOB_ID_LABEL
CAPABILITIES = Capabilities(
    kind=SCHEME, multi_node=True, max_nodes=1, gpus=True, containers=True, volumes=("pvc",),
    remote=True, data_reach="pvc",
)  # fmt: skip
OPTION_KEYS = ("context", "namespace", "operator", "registry", "checkpoint_claim",
               "prometheus", "prometheus_namespace", "log_format")  # fmt: skip
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class KubernetesSiteOptions:
    """A Kubernetes site's own settings (see the module's docstring)."""

    context: str
    namespace: str = "default"
    operator: k8s.Operator = "jobset"  # as written: "kubeflow" stays (site check notes it)
    registry: str = ""
    checkpoint_claim: str | None = None
    prometheus: str = "annotations"  # how Prometheus finds job pods: annotations | podmonitor | off
    prometheus_namespace: str = "monitoring"  # where Prometheus runs: the NetworkPolicy lets it in
    log_format: str = "json"  # cluster logs go to a collector: one JSON object per line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reaches(self) -> tuple[tuple[str, str], ...]:
        registry = ((REGISTRY, registry_host(self.registry)),) if self.registry else ()
        return ((KUBE_CONTEXT, self.context), *registry)


def parse_options(r: FieldReader, trust: str) -> KubernetesSiteOptions:
    operator = operator_of(r)
    prometheus = r.string("prometheus", "annotations", 'prometheus = "podmonitor"') or ""
    if prometheus not in k8s.METRICS_MODES:
        raise r.fail("prometheus", f"{excerpt(prometheus)} is not a way to find pods",
                     f"one of: {', '.join(k8s.METRICS_MODES)}")  # fmt: skip
    if operator == "trainer" and prometheus == "podmonitor":
        raise r.fail(
            "prometheus",
            "a PodMonitor selects the pods' metrics port, and a TrainJob (operator = "
            '"trainer") cannot declare it',
            'use prometheus = "annotations" (or operator = "jobset")',
        )
    log_format = log_format_of(r, "json")
    context = r.string("context", None, 'context = "onprem"')
    if not context:
        raise r.fail(
            "context",
            "missing: a Kubernetes site names its kubeconfig context (the current one changes "
            "with `kubectl config use-context`)",
            'add context = "onprem" (see `kubectl config get-contexts`)',
        )
    return KubernetesSiteOptions(
        context=context,
        namespace=r.string("namespace", "default", 'namespace = "ml"') or "default",
        operator=operator,
        registry=r.string("registry", "", 'registry = "registry.example.com/team/"') or "",
        checkpoint_claim=r.string("checkpoint_claim", None, 'checkpoint_claim = "ml-runs"'),
        prometheus=prometheus,
        prometheus_namespace=r.string(
            "prometheus_namespace", "monitoring", 'prometheus_namespace = "monitoring"'
        )
        or "monitoring",
        log_format=log_format,
    )


def operator_of(r: FieldReader) -> k8s.Operator:
    """The site's operator (how it runs several nodes), as written."""
    text = r.string("operator", "jobset", 'operator = "trainer"') or "jobset"
    for operator in k8s.OPERATORS:
        if text == operator:
            return operator
    raise r.fail(
        "operator",
        f"{excerpt(text)} is not supported",
        "one of: jobset, trainer (Kubeflow Trainer v2), pytorchjob (Kubeflow v1, legacy)",
    )


def log_format_of(r: FieldReader, default: str) -> str:
    """A site's log_format (json | text): how its jobs' logs read."""
    log_format = r.string("log_format", default, 'log_format = "json"') or ""
    if log_format not in LOG_FORMATS:
        raise r.fail(
            "log_format", f"{excerpt(log_format)} is not a log format", "one of: json, text"
        )
    return log_format


def options_of(site: Site) -> KubernetesSiteOptions:
    """The site's Kubernetes options (a UsageError for a site of another kind)."""
    if not isinstance(site.options, KubernetesSiteOptions):
        raise UsageError(f"site {site.name} is a {site.kind} site, not a Kubernetes one",
                         "give the Kubernetes backend a Kubernetes site")  # fmt: skip
    return site.options


def options_for(site: Site, image_digest: str | None = None) -> k8s.KubeOptions:
    """A Kubernetes site's rendering options."""
    if image_digest is not None and not k8s.DIGEST.fullmatch(image_digest):
        raise UsageError(
            f"{image_digest!r} is not an image digest",
            "give the pushed image's digest: sha256: and 64 hex digits",
        )
    o = options_of(site)
    return k8s.KubeOptions(namespace=o.namespace, site=site.name, registry=o.registry,
                           queue=site.queue, image_digest=image_digest,
                           checkpoint_claim=o.checkpoint_claim, metrics=o.prometheus,
                           metrics_namespace=o.prometheus_namespace,
                           log_format=o.log_format)  # fmt: skip


def make_handle(context: str, namespace: str, kind: str, name: str, cluster: str) -> str:
    """The context percent-encoded: EKS and OpenShift context names hold `/` and `:`."""
    context = quote(context, safe="")
    return f"{HANDLE_SCHEME}://{context}/{namespace}/{kind.lower()}/{name}?cluster={cluster}"


def parse_handle(handle: str) -> tuple[str, str, str, str, str]:
    """→ (context, namespace, kind, name, cluster identity digest)."""
    parts = urlsplit(handle)
    path = parts.path.strip("/").split("/")
    kinds = {k.lower(): k for k in JOB_KINDS}
    cluster = (parse_qs(parts.query).get("cluster") or [""])[0]
    if parts.scheme != HANDLE_SCHEME or not parts.netloc or len(path) != 3 or path[1] not in kinds:
        raise UsageError(
            f"{handle!r} is not a Kubernetes handle",
            "handles look like k8s://<context>/<namespace>/<job|jobset|trainjob|pytorchjob>/"
            "<name>"
            "?cluster=<id>",
        )
    if parts.netloc == "-" or not cluster:
        raise IdentityError(
            f"{handle} does not say which cluster the job was created on (made before "
            "torchship pinned clusters): torchship will not guess",
            f"use kubectl with the right context: kubectl -n {path[0]} get {path[1]} {path[2]}",
        )
    return unquote(parts.netloc), path[0], kinds[path[1]], path[2], cluster


class KubernetesBackend:
    kind = SCHEME

    def __init__(
        self,
        site: Site | None = None,
        connector: Callable[[str | None], Any] = connect,
        peers: tuple[Site, ...] = (),
    ) -> None:
        self.site = site
        self.connector = connector
        self.peers = peers  # the other sites of the site's file: none of another trust may
        # reach the same cluster
        self._clusters: dict[str, tuple[Cluster, ClusterIdentity]] = {}
        self._cancelled: set[str] = set()

    def _connect(self, context: str) -> tuple[Cluster, ClusterIdentity]:
        """The context's client and the identity of the cluster it reaches (read from the
        same client that sends the requests: nothing can change in between)."""
        if context not in self._clusters:
            api = self.connector(context)
            self._clusters[context] = (Cluster(api), identity_of(api))
        return self._clusters[context]

    def cluster(self, context: str, digest: str) -> Cluster:
        """The cluster a handle names, after checking the context still reaches it."""
        cluster, identity = self._connect(context)
        same_as_created(context, digest, identity)
        return cluster

    def site_cluster(self, site: Site) -> tuple[Cluster, ClusterIdentity]:
        """The site's cluster, after checking its context reaches the identity recorded for
        the site, and that no site of another trust is recorded on that cluster."""
        context = options_of(site).context
        cluster, identity = self._connect(context)
        check_site(site.name, context, site.trust, identity)
        for peer in self.peers:
            if peer.trust == site.trust or not peer.kube_context or peer.name == site.name:
                continue
            try:
                api = self.connector(peer.kube_context)
            except UsageError:  # a context the kubeconfig lacks reaches no cluster
                continue
            try:
                theirs = identity_of(api)
            except UsageError:  # it does not answer: compare what the kubeconfig says
                theirs = identity_of(api, ask=False)
            if same_cluster(theirs, identity):
                raise IdentityError(
                    f"sites {site.name} ({site.trust}) and {peer.name} ({peer.trust}) both reach "
                    f"{identity.describe()} (contexts {context!r} and "
                    f"{peer.kube_context!r}): nothing was sent",
                    "sites of different trust may not share a cluster: fix the kubeconfig or "
                    "the sites file",
                )
        return cluster, identity

    def capabilities(self) -> Capabilities:
        s = self.site
        if s is None:
            return CAPABILITIES
        return replace(CAPABILITIES, max_nodes=s.max_nodes, gang_scheduling=bool(s.queue))

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request:
        if self.site is None:
            raise UsageError("a Kubernetes job needs its site", "run it with --site auto")
        objects = k8s.render(
            job, lock, job_id, options_for(self.site), options_of(self.site).operator
        )
        return Request(site=self.site.name, kind=SCHEME, job_id=job_id, text=k8s.to_yaml(objects),
                       max_runtime_s=job.max_runtime_minutes * 60 if job.max_runtime_minutes
                       else None, data_classes=data_classes(job))  # fmt: skip

    def apply(self, request: Request) -> str:
        """Create the objects, the NetworkPolicy first (the pods never run unfenced), on the
        site's recorded cluster only, and only data the site may hold."""
        if self.site is None:
            raise UsageError("a Kubernetes job needs its site", "run it with --site auto")
        admit(request, self.site)
        objects = [o for o in yaml.safe_load_all(request.text) if o]
        main = next(o for o in objects if o["kind"] in JOB_KINDS)
        cluster, identity = self.site_cluster(self.site)
        for obj in sorted(objects, key=lambda o: o["kind"] != "NetworkPolicy"):
            create_or_adopt(cluster, obj)
        meta = main["metadata"]
        return make_handle(options_of(self.site).context, meta["namespace"], main["kind"],
                           meta["name"], identity.digest)  # fmt: skip

    def status(self, handle: str) -> SiteStatus:
        context, ns, kind, name, digest = parse_handle(handle)
        cluster = self.cluster(context, digest)
        obj = cluster.get(kind, ns, name)
        if obj is None:
            return self._gone(handle, kind, ns, name)
        state = job_state(obj)
        if state is not None:
            return state
        job_id = obj["metadata"]["labels"].get(LABEL_JOB, "")
        return pods_state(cluster.pods(ns, f"{LABEL_JOB}={job_id}"))

    def _gone(self, handle: str, kind: str, ns: str, name: str) -> SiteStatus:
        if handle in self._cancelled:
            return SiteStatus("cancelled", reason="deleted by torchship cancel")
        return SiteStatus("lost", reason=f"{kind} {ns}/{name} is gone from the cluster")

    def statuses(self, handles: Sequence[str]) -> dict[str, SiteStatus | TorchshipError]:
        """`status` of many jobs in a fixed number of requests whatever their number: per
        context, the identity check `status` makes (once); per namespace, one list of each
        kind of job object the handles name, by the job-id label, and one list of the pods
        of the jobs whose objects say neither done nor suspended. A handle torchship did not
        write, or whose cluster its context no longer reaches, gets its error; a context or
        namespace that cannot be read (unreachable, forbidden) raises."""
        out: dict[str, SiteStatus | TorchshipError] = {}
        groups: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {}
        for handle in dict.fromkeys(handles):
            try:
                context, ns, kind, name, digest = parse_handle(handle)
            except TorchshipError as e:
                out[handle] = e
                continue
            groups.setdefault((context, ns), {})[handle] = (kind, name, digest)
        for (context, ns), jobs in groups.items():
            cluster, identity = self._connect(context)
            asked: dict[str, tuple[str, str]] = {}
            for handle, (kind, name, digest) in jobs.items():
                try:
                    same_as_created(context, digest, identity)
                except IdentityError as e:
                    out[handle] = e
                    continue
                asked[handle] = (kind, name)
            out |= self._namespace_statuses(cluster, ns, asked)
        return {h: out[h] for h in dict.fromkeys(handles)}

    def _namespace_statuses(
        self, cluster: Cluster, ns: str, jobs: dict[str, tuple[str, str]]
    ) -> dict[str, SiteStatus]:
        """handle → status for jobs (handle → (kind, name)) of one namespace: a list per kind,
        then one of the pods of the undecided ones (`in`: a set-based label selector)."""
        found = {(kind, obj["metadata"]["name"]): obj
                 for kind in sorted({k for k, _ in jobs.values()})
                 for obj in cluster.objects(kind, ns, LABEL_JOB)}  # fmt: skip
        out: dict[str, SiteStatus] = {}
        undecided: dict[str, str] = {}  # handle → job id
        for handle, (kind, name) in jobs.items():
            obj = found.get((kind, name))
            state = None if obj is None else job_state(obj)
            if obj is None:
                out[handle] = self._gone(handle, kind, ns, name)
            elif state is not None:
                out[handle] = state
            else:
                undecided[handle] = obj["metadata"]["labels"].get(LABEL_JOB, "")
        ids = sorted({i for i in undecided.values() if i})
        pods: dict[str, list[PodState]] = {}
        if ids:
            selector = f"{LABEL_JOB} in ({','.join(ids)})"
            for job_id, pod in cluster.labelled_pods(ns, selector, LABEL_JOB):
                pods.setdefault(job_id, []).append(pod)
        for handle, job_id in undecided.items():
            out[handle] = pods_state(pods.get(job_id, []))
        return out

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        """Node 0's log (the first pod by name): rank 0 prints the progress."""
        context, ns, kind, name, digest = parse_handle(handle)
        cluster = self.cluster(context, digest)
        obj = cluster.get(kind, ns, name)
        if obj is None:
            raise UsageError(f"{kind} {ns}/{name} is gone from the cluster",
                             "finished jobs are removed after ttlSecondsAfterFinished")  # fmt: skip
        job_id = obj["metadata"]["labels"].get(LABEL_JOB, "")
        pods = cluster.pods(ns, f"{LABEL_JOB}={job_id}")
        if not pods:
            return iter(())
        return cluster.logs(ns, pods[0].name, follow)

    def cancel(self, handle: str) -> None:
        context, ns, kind, name, digest = parse_handle(handle)
        cluster = self.cluster(context, digest)
        cluster.delete(kind, ns, name)
        cluster.delete("NetworkPolicy", ns, name)
        if self.site is None:  # its settings are not known here (a site since removed)
            with contextlib.suppress(ClusterError):  # a PodMonitor, if it had one
                cluster.delete("PodMonitor", ns, name)
        elif options_of(self.site).prometheus == "podmonitor":
            cluster.delete("PodMonitor", ns, name)
        self._cancelled.add(handle)


def create_or_adopt(cluster: Cluster, obj: dict[str, Any]) -> None:
    """Create the object; one that exists already with this job's id label was created by an
    earlier attempt of this same job (an apply cut short, then retried with its key): it is
    this job's, and the retry goes on. Any other object of that name is refused."""
    try:
        cluster.create(obj)
    except ClusterError as e:
        if e.status != 409:
            raise
        meta = obj["metadata"]
        there = cluster.get(obj["kind"], meta["namespace"], meta["name"])
        ours = meta.get("labels", {}).get(LABEL_JOB)
        if there is None or (there["metadata"].get("labels") or {}).get(LABEL_JOB) != ours:
            raise


def same_as_created(context: str, digest: str, identity: ClusterIdentity) -> None:
    """IdentityError unless the context reaches the cluster the job was created on."""
    if identity.digest != digest:
        raise IdentityError(
            f"context {context!r} now reaches {identity.describe()} (cluster "
            f"{identity.digest}), not the cluster this job was created on ({digest})",
            "switch the context back (`kubectl config get-contexts`); torchship does not "
            "act on a job in another cluster",
        )


def pods_state(pods: list[PodState]) -> SiteStatus:
    """A started job its object does not decide: running while a pod runs, else pending
    with the first pod's reason (by name)."""
    if any(p.phase == "Running" for p in pods):
        return SiteStatus("running")
    waiting = next((p.reason for p in pods if p.reason), "")
    return SiteStatus("pending", reason=waiting)


def job_state(obj: dict[str, Any]) -> SiteStatus | None:
    """The state the object's own status says, when it says one (done, or suspended)."""
    status = obj.get("status") or {}
    for c in reversed(status.get("conditions") or []):
        if c.get("status") == "True" and c.get("type") in DONE:
            state = DONE[c["type"]]
            reason = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            return SiteStatus(state, exit_code=0 if state == "succeeded" else 1, reason=reason)
    spec = obj.get("spec") or {}
    if spec.get("suspend") or (spec.get("runPolicy") or {}).get("suspend"):
        queue = obj["metadata"]["labels"].get("kueue.x-k8s.io/queue-name")
        why = f"waiting for admission in Kueue queue {queue}" if queue else "suspended"
        return SiteStatus("pending", reason=why)
    return None


def create(site: Site | None = None, peers: tuple[Site, ...] = ()) -> KubernetesBackend:
    """The site's backend (`peers`: the other sites of its file); with no site, one that
    reads and cancels jobs from their handles alone."""
    return KubernetesBackend(site, peers=peers)


def check(site: Site, live: bool) -> list[str]:
    """`torchship site check`: record or check the cluster the site's context reaches, and
    note the legacy operator name; with `live`, read its nodes' GPUs and warn where the site
    says otherwise."""
    o = options_of(site)
    lines = record_cluster(site.name, o.context, site.trust).splitlines()
    if o.operator in k8s.LEGACY_OPERATORS:
        lines.append(
            f'warning: {site.name}: operator = "{o.operator}" is the legacy Kubeflow v1 '
            'PyTorchJob: write "pytorchjob" to keep it, or "trainer" for Kubeflow Trainer v2'
        )
    if live:
        from torchship.place.live import differences, inventory

        found = inventory(Cluster(connect(o.context)).gpu_nodes())
        have = ", ".join(f"{g.count}×{g.model}" for g in found) or "no GPUs"
        lines.append(f"{site.name}: the cluster has {have}")
        lines += [f"warning: {w}" for w in differences(site, found)]
    return lines


def export(
    job: JobSpec, lock: Lock | None, site: Site, job_id: str, out: Path, image_digest: str | None
) -> dict[str, str]:
    """`torchship plan -o DIR`: the objects apply would create, as `<job>.yaml`."""
    objects = k8s.render(
        job, lock, job_id, options_for(site, image_digest), options_of(site).operator
    )
    return {f"{job.name}.yaml": k8s.to_yaml(objects)}


KIND = SiteKind(
    name=SCHEME,
    capabilities=CAPABILITIES,
    handle_scheme=HANDLE_SCHEME,
    create=create,
    option_keys=OPTION_KEYS,
    parse_options=parse_options,
    elsewhere={
        "context": 'remove it (a SkyPilot site names its cluster: infra = "k8s/CONTEXT")',
        "prometheus": "remove it; other sites publish the port as the docs say",
        "prometheus_namespace": "remove it; other sites publish the port as the docs say",
        "log_format": 'set TORCHSHIP_LOG_FORMAT = "json" in the job\'s [job.env]',
    },
    check=check,
    export=export,
)
