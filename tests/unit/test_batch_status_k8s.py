"""`statuses` of the Kubernetes site: many jobs in a fixed number of requests, counted in the
request log of the stand-in API server (tests/fake_kube.py) the official client talks to, and
for every job exactly what `status` says of it alone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fake_kube import FakeKube
from tests.unit.test_batch_status import same
from tests.unit.test_kubernetes_backend import HYBRID, ONPREM
from torchship.backends.base import SiteStatus, one_by_one
from torchship.backends.kubernetes import KubernetesBackend, options_of
from torchship.errors import TorchshipError, UsageError
from torchship.k8s.apply import ClusterError
from torchship.k8s.identity import IdentityError, identity_of, record
from torchship.lock import read_lock
from torchship.spec.job import load_job

JOBS = "/apis/batch/v1/namespaces/ml/jobs"
JOBSETS = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/ml/jobsets"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"
LOCK = read_lock(HYBRID / "torchship.lock")
DONE = {"type": "Complete", "status": "True"}
FAILED = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
          "message": "Job has reached the specified backoff limit"}  # fmt: skip


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path / "home"))
    with FakeKube() as k:
        record("onprem", "onprem", "private", identity_of(k.api_client()))
        yield k


def backend(kube: FakeKube, operator: str = "jobset") -> KubernetesBackend:
    site = replace(ONPREM, options=replace(options_of(ONPREM), operator=operator))
    return KubernetesBackend(site, connector=lambda _ctx: kube.api_client())


def submit(kube: FakeKube, job_id: str, job_file: str = "job-1node.toml",
           operator: str = "jobset") -> tuple[str, str]:  # fmt: skip
    """(handle, the path of its job object): applied as `torchship run` applies it."""
    be = backend(kube, operator)
    handle = be.apply(be.plan(load_job(HYBRID / job_file), LOCK, job_id))
    kind_path = {"job-1node.toml": JOBS, "job-2node.toml": TRAINJOBS if operator == "trainer"
                 else JOBSETS}[job_file]  # fmt: skip
    return handle, f"{kind_path}/{handle.split('/')[-1].split('?')[0]}"


def admitted(kube: FakeKube, path: str, conditions: list[dict[str, str]] | None = None) -> None:
    """Kueue admitted it; its controller set these conditions."""
    obj = kube.objects[path]
    obj["spec"]["suspend"] = False
    if conditions is not None:
        obj["status"] = {"conditions": conditions}


def pod(kube: FakeKube, path: str, phase: str, exit_code: int | None = None) -> None:
    obj = kube.objects[path]
    job_id = obj["metadata"]["labels"]["torchship.io/job-id"]
    name = f"{obj['metadata']['name']}-{len(kube.pods.get('ml', []))}"
    kube.add_pod("ml", name, {"torchship.io/job-id": job_id}, phase, exit_code)


def test_k8s_batch_says_what_status_says_of_each(kube: FakeKube) -> None:
    h = {}
    h["queued"], _ = submit(kube, "01queued")  # suspended: waiting for Kueue
    h["admitted"], p = submit(kube, "01admitted")
    admitted(kube, p)  # no pod yet
    h["running"], p = submit(kube, "01running")
    admitted(kube, p)
    pod(kube, p, "Running")
    h["retrying"], p = submit(kube, "01retrying")
    admitted(kube, p)
    pod(kube, p, "Failed", 137)  # its first pod was killed; the Job makes another
    h["done"], p = submit(kube, "01done")
    admitted(kube, p, [DONE])
    h["failed"], p = submit(kube, "01failed")
    admitted(kube, p, [FAILED])
    h["jobset"], p = submit(kube, "01jobset", "job-2node.toml")
    admitted(kube, p, [{"type": "Completed", "status": "True"}])
    h["trainjob"], p = submit(kube, "01train", "job-2node.toml", "trainer")
    admitted(kube, p, [{"type": "Suspended", "status": "False", "reason": "Resumed"}])
    pod(kube, p, "Running")
    h["deleted"], p = submit(kube, "01deleted")
    del kube.objects[p]
    h["cancelled"], _ = submit(kube, "01cancel")
    h["pytorchjob"] = h["done"].replace("/job/", "/pytorchjob/")  # no such CRD here
    kube.missing_groups.add("kubeflow.org")
    h["other-cluster"] = h["done"].split("?cluster=")[0] + "?cluster=0123456789abcdef"
    h["not-a-handle"] = "k8s://onprem/ml/deployment/x?cluster=ab"
    be = backend(kube)
    be.cancel(h["cancelled"])  # this process cancelled it: `cancelled`, not `lost`
    kube.requests.clear()
    batch = be.statuses(list(h.values()))
    pytorchjobs = "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"
    pods = "/api/v1/namespaces/ml/pods"
    assert [p for _, p in kube.requests] == [JOBS, JOBSETS, pytorchjobs, TRAINJOBS, pods]
    same(batch, be.status, list(h.values()))
    got = {k: batch[v] for k, v in h.items()}
    assert got["queued"] == SiteStatus("pending", reason="waiting for admission in Kueue queue "
                                       "team-a")  # fmt: skip
    assert got["admitted"] == SiteStatus("pending") and got["running"] == SiteStatus("running")
    assert got["retrying"] == SiteStatus("pending", reason="Error")
    assert got["done"] == SiteStatus("succeeded", 0) and got["jobset"] == SiteStatus("succeeded", 0)
    assert (got["failed"].state, got["trainjob"].state) == ("failed", "running")  # type: ignore[union-attr]
    assert got["deleted"].state == got["pytorchjob"].state == "lost"  # type: ignore[union-attr]
    assert got["cancelled"] == SiteStatus("cancelled", reason="deleted by torchship cancel")
    assert isinstance(got["other-cluster"], IdentityError)
    assert isinstance(got["not-a-handle"], UsageError)


def test_k8s_batch_is_a_fixed_number_of_requests_whatever_the_number(kube: FakeKube) -> None:
    for n in (1, 10, 50):
        handles = []
        for i in range(n):  # pending, done, failed, running in turn
            handle, path = submit(kube, f"{n:02d}x{i:03d}")
            admitted(kube, path, [[], [DONE], [FAILED], []][i % 4])
            if i % 4 == 3:
                pod(kube, path, "Running")
            handles.append(handle)
        handles.append(handles[0].replace(f"{n:02d}x000", "gone"))
        kube.requests.clear()
        be = backend(kube)  # a new process: its connection counts too
        batch = be.statuses(handles)
        assert kube.requests == [("GET", "/api/v1/namespaces/kube-system"), ("GET", JOBS),
                                 ("GET", "/api/v1/namespaces/ml/pods")], n  # fmt: skip
        states = [s.state for s in batch.values()]  # type: ignore[union-attr]
        assert states == [["pending", "succeeded", "failed", "running"][i % 4]
                          for i in range(n)] + ["lost"]  # fmt: skip
        kube.requests.clear()
        one_by_one(be, handles)
        undecided = sum(1 for i in range(n) if i % 4 in (0, 3))
        assert len(kube.requests) == n + 1 + undecided  # `status`: a GET of each job object,
        # and a list of the pods of each job its object does not decide


def test_k8s_a_cluster_that_cannot_be_asked_raises_once(kube: FakeKube) -> None:
    from kubernetes import client

    handle, _ = submit(kube, "01job")
    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # discard: nothing listens
    cfg.retries = 0
    away = KubernetesBackend(ONPREM, connector=lambda _c: client.ApiClient(cfg))
    with pytest.raises(TorchshipError, match="the API server did not answer") as e:
        away.statuses([handle, handle.replace("01job", "02job")])
    assert e.value.hint == "check the context and that the cluster is up"
    be = backend(kube)
    assert be.statuses([handle])[handle].state == "pending"  # type: ignore[union-attr]
    kube.forbidden.add("GET")  # the user lost the Role that lists jobs
    with pytest.raises(ClusterError) as forbidden:
        be.statuses([handle])
    assert "list Job in ml: forbidden" in forbidden.value.message
    assert "Role" in forbidden.value.hint
