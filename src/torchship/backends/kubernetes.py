"""The Kubernetes site: plan renders the objects (exact YAML), apply creates them through the
client, status/logs/cancel find them again from the handle alone.

Handle: `k8s://<context>/<namespace>/<kind>/<name>?cluster=<identity>`: the site's context,
and the digest of the cluster identity (API server URL and CA fingerprint,
torchship.k8s.identity) the objects were created on. Every call first checks that the context
still reaches that cluster: apply against the identity recorded for the site (`site add`,
`site check`), status, logs and cancel against the handle's. A switched or edited context is
refused with both identities, never followed.

Status reads the job object's conditions (batch Job, JobSet, PyTorchJob) and its pods by the
job-id label; a job Kueue has not admitted yet (suspended) is pending.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

from torchship.backends.base import Capabilities, Request, SiteStatus, admit, data_classes
from torchship.errors import UsageError
from torchship.k8s import render as k8s
from torchship.k8s.apply import Cluster, ClusterError, connect
from torchship.k8s.identity import (
    ClusterIdentity,
    IdentityError,
    check_site,
    identity_of,
    same_cluster,
)
from torchship.lock.model import Lock
from torchship.place.sites import Site
from torchship.spec.job import JobSpec

SCHEME = "kubernetes"
JOB_KINDS = ("Job", "JobSet", "PyTorchJob")
# The condition that ends each kind, and what it means; the last True one wins.
DONE = {"Complete": "succeeded", "Completed": "succeeded", "Succeeded": "succeeded",
        "SuccessCriteriaMet": "succeeded", "Failed": "failed"}  # fmt: skip


def make_handle(context: str, namespace: str, kind: str, name: str, cluster: str) -> str:
    """The context percent-encoded: EKS and OpenShift context names hold `/` and `:`."""
    return f"k8s://{quote(context, safe='')}/{namespace}/{kind.lower()}/{name}?cluster={cluster}"


def parse_handle(handle: str) -> tuple[str, str, str, str, str]:
    """→ (context, namespace, kind, name, cluster identity digest)."""
    parts = urlsplit(handle)
    path = parts.path.strip("/").split("/")
    kinds = {k.lower(): k for k in JOB_KINDS}
    cluster = (parse_qs(parts.query).get("cluster") or [""])[0]
    if parts.scheme != "k8s" or not parts.netloc or len(path) != 3 or path[1] not in kinds:
        raise UsageError(
            f"{handle!r} is not a Kubernetes handle",
            "handles look like k8s://<context>/<namespace>/<job|jobset|pytorchjob>/<name>"
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
        if identity.digest != digest:
            raise IdentityError(
                f"context {context!r} now reaches {identity.describe()} (cluster "
                f"{identity.digest}), not the cluster this job was created on ({digest})",
                "switch the context back (`kubectl config get-contexts`); torchship does not "
                "act on a job in another cluster",
            )
        return cluster

    def site_cluster(self, site: Site) -> tuple[Cluster, ClusterIdentity]:
        """The site's cluster, after checking its context reaches the identity recorded for
        the site, and that no site of another trust is recorded on that cluster."""
        assert site.context is not None  # a Kubernetes site names its context (sites.py)
        cluster, identity = self._connect(site.context)
        check_site(site.name, site.context, site.trust, identity)
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
                    f"{identity.describe()} (contexts {site.context!r} and "
                    f"{peer.kube_context!r}): nothing was sent",
                    "sites of different trust may not share a cluster: fix the kubeconfig or "
                    "the sites file",
                )
        return cluster, identity

    def capabilities(self) -> Capabilities:
        s = self.site
        return Capabilities(
            kind=SCHEME, multi_node=True, max_nodes=s.max_nodes if s else 1, gpus=True,
            containers=True, gang_scheduling=bool(s and s.queue), volumes=("pvc",),
            remote=True,
        )  # fmt: skip

    def plan(self, job: JobSpec, lock: Lock | None, job_id: str) -> Request:
        if self.site is None:
            raise UsageError("a Kubernetes job needs its site", "run it with --site auto")
        objects = k8s.render(job, lock, job_id, k8s.options_for(self.site), self.site.operator)
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
        assert self.site.context is not None
        return make_handle(self.site.context, meta["namespace"], main["kind"], meta["name"],
                           identity.digest)  # fmt: skip

    def status(self, handle: str) -> SiteStatus:
        context, ns, kind, name, digest = parse_handle(handle)
        cluster = self.cluster(context, digest)
        obj = cluster.get(kind, ns, name)
        if obj is None:
            if handle in self._cancelled:
                return SiteStatus("cancelled", reason="deleted by torchship cancel")
            return SiteStatus("lost", reason=f"{kind} {ns}/{name} is gone from the cluster")
        state = job_state(obj)
        if state is not None:
            return state
        job_id = obj["metadata"]["labels"].get(k8s.LABEL_JOB, "")
        pods = cluster.pods(ns, f"{k8s.LABEL_JOB}={job_id}")
        if any(p.phase == "Running" for p in pods):
            return SiteStatus("running")
        waiting = next((p.reason for p in pods if p.reason), "")
        return SiteStatus("pending", reason=waiting)

    def logs(self, handle: str, follow: bool = False) -> Iterator[str]:
        """Node 0's log (the first pod by name): rank 0 prints the progress."""
        context, ns, kind, name, digest = parse_handle(handle)
        cluster = self.cluster(context, digest)
        obj = cluster.get(kind, ns, name)
        if obj is None:
            raise UsageError(f"{kind} {ns}/{name} is gone from the cluster",
                             "finished jobs are removed after ttlSecondsAfterFinished")  # fmt: skip
        job_id = obj["metadata"]["labels"].get(k8s.LABEL_JOB, "")
        pods = cluster.pods(ns, f"{k8s.LABEL_JOB}={job_id}")
        if not pods:
            return iter(())
        return cluster.logs(ns, pods[0].name, follow)

    def cancel(self, handle: str) -> None:
        context, ns, kind, name, digest = parse_handle(handle)
        cluster = self.cluster(context, digest)
        cluster.delete(kind, ns, name)
        cluster.delete("NetworkPolicy", ns, name)
        if self.site is not None and self.site.prometheus == "podmonitor":
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
        ours = meta.get("labels", {}).get(k8s.LABEL_JOB)
        if there is None or (there["metadata"].get("labels") or {}).get(k8s.LABEL_JOB) != ours:
            raise


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


def create() -> KubernetesBackend:
    return KubernetesBackend()
