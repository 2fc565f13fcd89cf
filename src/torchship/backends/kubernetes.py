"""The Kubernetes site: plan renders the objects (exact YAML), apply creates them through the
client, status/logs/cancel find them again from the handle alone.

Handle: `k8s://<context>/<namespace>/<kind>/<name>` (context `-`: the kubeconfig's current one).
Status reads the job object's conditions (batch Job, JobSet, PyTorchJob) and its pods by the
job-id label; a job Kueue has not admitted yet (suspended) is pending.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import yaml

from torchship.backends.base import Capabilities, Request, SiteStatus
from torchship.errors import UsageError
from torchship.k8s import render as k8s
from torchship.k8s.apply import Cluster, connect
from torchship.lock.model import Lock
from torchship.place.sites import Site
from torchship.spec.job import JobSpec

SCHEME = "kubernetes"
JOB_KINDS = ("Job", "JobSet", "PyTorchJob")
# The condition that ends each kind, and what it means; the last True one wins.
DONE = {"Complete": "succeeded", "Completed": "succeeded", "Succeeded": "succeeded",
        "SuccessCriteriaMet": "succeeded", "Failed": "failed"}  # fmt: skip


def make_handle(context: str | None, namespace: str, kind: str, name: str) -> str:
    return f"k8s://{context or '-'}/{namespace}/{kind.lower()}/{name}"


def parse_handle(handle: str) -> tuple[str | None, str, str, str]:
    """→ (context or None, namespace, kind, name)."""
    parts = urlsplit(handle)
    path = parts.path.strip("/").split("/")
    kinds = {k.lower(): k for k in JOB_KINDS}
    if parts.scheme != "k8s" or not parts.netloc or len(path) != 3 or path[1] not in kinds:
        raise UsageError(
            f"{handle!r} is not a Kubernetes handle",
            "handles look like k8s://<context>/<namespace>/<job|jobset|pytorchjob>/<name>",
        )
    context = None if parts.netloc == "-" else parts.netloc
    return context, path[0], kinds[path[1]], path[2]


class KubernetesBackend:
    kind = SCHEME

    def __init__(
        self, site: Site | None = None, connector: Callable[[str | None], Any] = connect
    ) -> None:
        self.site = site
        self.connector = connector
        self._clusters: dict[str | None, Cluster] = {}
        self._cancelled: set[str] = set()

    def cluster(self, context: str | None) -> Cluster:
        if context not in self._clusters:
            self._clusters[context] = Cluster(self.connector(context))
        return self._clusters[context]

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
                       else None)  # fmt: skip

    def apply(self, request: Request) -> str:
        """Create the objects, the NetworkPolicy first (the pods never run unfenced)."""
        if self.site is None:
            raise UsageError("a Kubernetes job needs its site", "run it with --site auto")
        objects = [o for o in yaml.safe_load_all(request.text) if o]
        main = next(o for o in objects if o["kind"] in JOB_KINDS)
        cluster = self.cluster(self.site.context)
        for obj in sorted(objects, key=lambda o: o["kind"] != "NetworkPolicy"):
            cluster.create(obj)
        meta = main["metadata"]
        return make_handle(self.site.context, meta["namespace"], main["kind"], meta["name"])

    def status(self, handle: str) -> SiteStatus:
        context, ns, kind, name = parse_handle(handle)
        cluster = self.cluster(context)
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
        context, ns, kind, name = parse_handle(handle)
        cluster = self.cluster(context)
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
        context, ns, kind, name = parse_handle(handle)
        cluster = self.cluster(context)
        cluster.delete(kind, ns, name)
        cluster.delete("NetworkPolicy", ns, name)
        if self.site is not None and self.site.prometheus == "podmonitor":
            cluster.delete("PodMonitor", ns, name)
        self._cancelled.add(handle)


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
