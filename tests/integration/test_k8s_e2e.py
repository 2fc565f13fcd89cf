"""A real cluster, where one is configured: a two-process CPU job of the reference workload
applied through the Kubernetes site, followed to success, its log read, then cleaned up.

Runs when a kubeconfig is present (KUBECONFIG or ~/.kube/config) and TORCHSHIP_E2E_IMAGE names
a torchship image the cluster can pull (`torchship image build`, then push it); the namespace
is TORCHSHIP_E2E_NAMESPACE (default "default"). Skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from torchship.backends.base import Request
from torchship.backends.kubernetes import KubernetesBackend, KubernetesSiteOptions
from torchship.k8s.render import KubeOptions, render, to_yaml
from torchship.place.sites import Site
from torchship.spec.job import job_from_table

pytestmark = pytest.mark.slow
KUBECONFIG = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube/config"))
IMAGE = os.environ.get("TORCHSHIP_E2E_IMAGE")


@pytest.mark.skipif(not KUBECONFIG.is_file(), reason=f"no kubeconfig at {KUBECONFIG}")
@pytest.mark.skipif(not IMAGE, reason="TORCHSHIP_E2E_IMAGE (a pushed torchship image) not set")
def test_cpu_job_on_a_real_cluster() -> None:
    ns = os.environ.get("TORCHSHIP_E2E_NAMESPACE", "default")
    context = os.environ.get("TORCHSHIP_E2E_CONTEXT", "default")  # a site names its context
    site = Site(name="e2e", kind="kubernetes", tier=1, trust="private",
                data_classes=frozenset({"public"}),
                options=KubernetesSiteOptions(context=context, namespace=ns))  # fmt: skip
    table = {"name": "e2e", "workload": "reference", "processes_per_node": 2, "cpus": 2,
             "memory_gib": 4, "max_runtime_minutes": 10,
             "workload_args": {"steps": 5, "d_model": 64, "layers": 2, "heads": 2}}  # fmt: skip
    job = job_from_table(table, "/e2e/job.toml", "e2e")
    job_id = f"01e2e{int(time.time())}"
    objects = render(job, None, job_id, KubeOptions(namespace=ns, site="e2e", image=IMAGE))
    be = KubernetesBackend(site)
    handle = be.apply(Request(site="e2e", kind="kubernetes", job_id=job_id, text=to_yaml(objects)))
    try:
        deadline = time.time() + 600
        while (st := be.status(handle)).state in ("pending", "running") and time.time() < deadline:
            time.sleep(5)
        assert st.state == "succeeded", st
        assert any("step" in line for line in be.logs(handle))
    finally:
        be.cancel(handle)
