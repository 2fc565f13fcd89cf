"""Create, read and delete torchship's objects through the official `kubernetes` client.

The client is imported only when a Kubernetes site is used (`pip install
'torchship[kubernetes]'`). `Cluster` takes a `kubernetes.client.ApiClient` (from a kubeconfig
context by `connect`, or any other) and speaks plain REST through it: the objects it sends are
exactly the rendered ones (`torchship plan -o` shows them). API errors become one-line errors
with the cause (exists, forbidden, no such CRD) and a hint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torchship.errors import TorchshipError, UsageError, excerpt

# kind → (group, version, plural); batch, networking and the CRDs share the /apis/ path shape.
KINDS = {
    "Job": ("batch", "v1", "jobs"),
    "JobSet": ("jobset.x-k8s.io", "v1alpha2", "jobsets"),
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "PodMonitor": ("monitoring.coreos.com", "v1", "podmonitors"),
}
OPERATOR_HINT = {
    "JobSet": 'install JobSet (jobset.sigs.k8s.io), or set operator = "pytorchjob" for the site',
    "TrainJob": "install Kubeflow Trainer v2 (with its torch-distributed ClusterTrainingRuntime), "
    'or set operator = "jobset" for the site',
    "PyTorchJob": 'install the Kubeflow training operator (v1), or set operator = "trainer" or '
    '"jobset"',
    "PodMonitor": 'install the Prometheus operator, or set prometheus = "annotations" for the site',
}


class ClusterError(TorchshipError):
    """The cluster refused or could not be reached; `status` is the HTTP status (0: none)."""

    def __init__(self, message: str, hint: str, status: int = 0) -> None:
        super().__init__(message, hint)
        self.status = status


@contextmanager
def _answering(what: str) -> Iterator[None]:
    """A network failure (refused, timed out, TLS) is the cluster not answering: one line,
    never a traceback."""
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (HTTPError, OSError) as e:
        why = excerpt(str(getattr(e, "reason", None) or e), 160)
        hint = "check the site's context and that the cluster is up"
        raise ClusterError(f"{what}: the API server did not answer ({why})", hint) from None


def connect(context: str | None) -> Any:
    """An ApiClient for a kubeconfig context (None: the current one)."""
    try:
        from kubernetes import config
    except ImportError:
        raise UsageError(
            "Kubernetes sites need the kubernetes client, which is not installed",
            "pip install 'torchship[kubernetes]'",
        ) from None
    # $KUBECONFIG as it is now: the client reads it once, when it is imported
    files = os.environ.get("KUBECONFIG") or None
    try:
        return config.new_client_from_config(config_file=files, context=context)
    except (config.ConfigException, OSError, TypeError, ValueError) as e:
        raise UsageError(
            f"cannot use kubeconfig context {context or '(current)'!r}: {e}",
            "check `kubectl config get-contexts` ($KUBECONFIG) and the site's context",
        ) from None


@dataclass(frozen=True, slots=True)
class PodState:
    name: str
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    exit_code: int | None
    reason: str


class Cluster:
    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._exc = client.ApiException

    def _route(self, kind: str) -> tuple[str, str, str]:
        try:
            return KINDS[kind]
        except KeyError:
            raise UsageError(f"torchship does not apply {kind} objects", "report this") from None

    def create(self, obj: dict[str, Any]) -> None:
        group, version, plural = self._route(obj["kind"])
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            with _answering(f"create {obj['kind']} {ns}/{name}"):
                self._custom.create_namespaced_custom_object(group, version, ns, plural, obj)
        except self._exc as e:
            raise self._error(e, f"create {obj['kind']} {ns}/{name}", obj["kind"]) from None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        group, version, plural = self._route(kind)
        try:
            with _answering(f"read {kind} {namespace}/{name}"):
                obj: dict[str, Any] = self._custom.get_namespaced_custom_object(
                    group, version, namespace, plural, name
                )
        except self._exc as e:
            if e.status == 404:
                return None
            raise self._error(e, f"read {kind} {namespace}/{name}", kind) from None
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete with its pods (background propagation); False when it was not there."""
        group, version, plural = self._route(kind)
        try:
            with _answering(f"delete {kind} {namespace}/{name}"):
                self._custom.delete_namespaced_custom_object(
                    group, version, namespace, plural, name, propagation_policy="Background"
                )
        except self._exc as e:
            if e.status == 404:
                return False
            raise self._error(e, f"delete {kind} {namespace}/{name}", kind) from None
        return True

    def objects(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The namespace's objects of `kind` that match the label selector, in one request;
        [] where the cluster has no such resource (its CRD is not installed), as `get`
        answers None for each of them."""
        group, version, plural = self._route(kind)
        try:
            with _answering(f"list {kind} in {namespace}"):
                found: dict[str, Any] = self._custom.list_namespaced_custom_object(
                    group, version, namespace, plural, label_selector=selector
                )
        except self._exc as e:
            if e.status == 404:
                return []
            raise self._error(e, f"list {kind} in {namespace}", kind) from None
        return list(found.get("items") or [])

    def pods(self, namespace: str, selector: str) -> list[PodState]:
        return [state for _, state in self.labelled_pods(namespace, selector, "")]

    def labelled_pods(
        self, namespace: str, selector: str, label: str
    ) -> list[tuple[str, PodState]]:
        """(the pod's value of `label`, its state) for the pods the selector matches, sorted
        by name, in one request."""
        try:
            with _answering(f"list pods in {namespace}"):
                items = self._core.list_namespaced_pod(namespace, label_selector=selector).items
        except self._exc as e:
            raise self._error(e, f"list pods in {namespace}", "Pod") from None
        out = []
        for p in sorted(items, key=lambda p: p.metadata.name):
            code, reason = None, p.status.reason or ""
            for cs in p.status.container_statuses or []:
                term = cs.state.terminated if cs.state else None
                if term is not None:
                    code, reason = term.exit_code, term.reason or reason
            value = (p.metadata.labels or {}).get(label, "") if label else ""
            out.append(
                (value, PodState(p.metadata.name, p.status.phase or "Unknown", code, reason))
            )
        return out

    def logs(self, namespace: str, pod: str, follow: bool = False) -> Iterator[str]:
        """The pod's log as it arrives (lines keep their newlines, as the local site's do)."""
        try:
            with _answering(f"read the log of {namespace}/{pod}"):
                yield from self._log_chunks(namespace, pod, follow)
        except self._exc as e:
            raise self._error(e, f"read the log of {namespace}/{pod}", "Pod") from None

    def _log_chunks(self, namespace: str, pod: str, follow: bool) -> Iterator[str]:
        if follow:
            resp = self._core.read_namespaced_pod_log(
                pod, namespace, follow=True, _preload_content=False
            )
            for chunk in resp.stream():
                yield chunk.decode(errors="replace")
            return
        text = self._core.read_namespaced_pod_log(pod, namespace)
        yield from str(text).splitlines(keepends=True)

    def gpu_nodes(self) -> list[tuple[str, str, int]]:
        """(node, GPU product, allocatable GPUs) from NVIDIA's feature-discovery label
        `nvidia.com/gpu.product` and `status.allocatable["nvidia.com/gpu"]`."""
        try:
            with _answering("list nodes"):
                items = self._core.list_node().items
        except self._exc as e:
            raise self._error(e, "list nodes", "Node") from None
        out = []
        for n in items:
            labels = n.metadata.labels or {}
            count = int((n.status.allocatable or {}).get("nvidia.com/gpu", "0") or 0)
            if count:
                product = labels.get("nvidia.com/gpu.product", "")
                out.append((n.metadata.name, product, count))
        return out

    def _error(self, e: Any, what: str, kind: str) -> ClusterError:
        status = getattr(e, "status", None)
        if status == 409:
            return ClusterError(f"{what}: it already exists", "cancel it first, or submit anew",
                                409)  # fmt: skip
        if status == 403:
            return ClusterError(
                f"{what}: forbidden for this kubeconfig user",
                "ask the cluster admin for a Role that allows it in this namespace",
            )
        if status == 404 and kind in OPERATOR_HINT:
            return ClusterError(f"{what}: the cluster has no {kind} resource", OPERATOR_HINT[kind])
        if status in (None, 0):
            return ClusterError(f"{what}: the API server did not answer ({e})",
                                "check the site's context and that the cluster is up")  # fmt: skip
        return ClusterError(f"{what}: HTTP {status} {getattr(e, 'reason', '')}".rstrip(),
                            "see the API server's message with --debug")  # fmt: skip
