"""The Kubernetes site through the official client, against a small API server on
127.0.0.1 (tests/fake_kube.py): what apply sends, how status reads conditions and pods, logs,
cancel (batch Job, JobSet, TrainJob), the errors a real cluster gives, the operator option, and
`torchship run --site auto` end to end."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.fake_kube import FakeKube
from torchship.backends.kubernetes import (
    KubernetesBackend,
    check,
    make_handle,
    options_of,
    parse_handle,
)
from torchship.errors import SpecError, UsageError
from torchship.k8s.apply import Cluster, ClusterError
from torchship.k8s.identity import identity_of, record
from torchship.lock import read_lock
from torchship.place.sites import Site
from torchship.sites import load_sites
from torchship.spec.job import load_job

HYBRID = REPO / "examples/hybrid"
ONPREM = next(s for s in load_sites(HYBRID / "sites.toml") if s.name == "onprem")
JOBS = "/apis/batch/v1/namespaces/ml/jobs"


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    """The stand-in cluster, recorded as the on-prem site's (as `site check` records it)."""
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path / "home"))
    with FakeKube() as k:
        record("onprem", "onprem", "private", identity_of(k.api_client()))
        yield k


def backend(kube: FakeKube) -> KubernetesBackend:
    return KubernetesBackend(ONPREM, connector=lambda _ctx: kube.api_client())


def submit(kube: FakeKube, job_file: str = "job-1node.toml") -> tuple[KubernetesBackend, str]:
    be = backend(kube)
    request = be.plan(load_job(HYBRID / job_file), read_lock(HYBRID / "torchship.lock"), "01jobid")
    return be, be.apply(request)


def test_apply_sends_exactly_the_rendered_objects_policy_first(kube: FakeKube) -> None:
    be = backend(kube)
    request = be.plan(load_job(HYBRID / "job-1node.toml"), read_lock(HYBRID / "torchship.lock"),
                      "01jobid")  # fmt: skip
    handle = be.apply(request)
    name = "finetune-1node-01jobid"
    assert handle == f"k8s://onprem/ml/job/{name}?cluster={identity_of(kube.api_client()).digest}"
    posts = [p for m, p in kube.requests if m == "POST"]
    assert posts == ["/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies", JOBS]
    rendered = list(yaml.safe_load_all(request.text))
    assert kube.objects[f"{JOBS}/{name}"] == rendered[0]
    assert (
        kube.objects[f"/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies/{name}"]
        == (rendered[1])
    )


def test_status_follows_kueue_pods_and_conditions(kube: FakeKube) -> None:
    be, handle = submit(kube)
    st = be.status(handle)
    assert (st.state, st.reason) == ("pending", "waiting for admission in Kueue queue team-a")
    obj = kube.objects[f"{JOBS}/finetune-1node-01jobid"]
    obj["spec"]["suspend"] = False  # Kueue admitted it
    labels = obj["spec"]["template"]["metadata"]["labels"]
    assert be.status(handle).state == "pending"
    kube.add_pod("ml", "finetune-1node-01jobid-x7k2p", labels, "Running", log="step 1\nstep 2\n")
    kube.add_pod("ml", "unrelated", {"torchship.io/job-id": "other"}, "Running")
    assert be.status(handle).state == "running"
    assert list(be.logs(handle)) == ["step 1\n", "step 2\n"]
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit"}  # fmt: skip
    obj["status"] = {"conditions": [failed]}
    st = be.status(handle)
    assert (st.state, st.exit_code) == ("failed", 1)
    assert st.reason.startswith("BackoffLimitExceeded: Job has reached")
    obj["status"] = {"conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                    {"type": "Complete", "status": "True"}]}  # fmt: skip
    assert (be.status(handle).state, be.status(handle).exit_code) == ("succeeded", 0)


def test_jobset_conditions_and_cancel(kube: FakeKube) -> None:
    be, handle = submit(kube, "job-2node.toml")
    digest = identity_of(kube.api_client()).digest
    assert parse_handle(handle) == ("onprem", "ml", "JobSet", "pretrain-2node-01jobid", digest)
    path = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/ml/jobsets/pretrain-2node-01jobid"
    kube.objects[path]["spec"]["suspend"] = False
    kube.objects[path]["status"] = {"conditions": [{"type": "Completed", "status": "False"}]}
    assert be.status(handle).state == "pending"
    be.cancel(handle)
    assert path not in kube.objects and not kube.find("networkpolicies")
    assert be.status(handle).state == "cancelled"
    st = backend(kube).status(handle)  # another process: it only sees the job gone
    assert st.state == "lost" and "gone from the cluster" in st.reason


def test_cluster_errors_say_what_and_how(kube: FakeKube) -> None:
    submit(kube)
    submit(kube)  # the same job again (an apply cut short, retried): its objects are adopted
    assert len(kube.find("jobs")) == 1
    kube.find("jobs")[0]["metadata"]["labels"]["torchship.io/job-id"] = "someone-else"
    with pytest.raises(ClusterError) as e:
        submit(kube)
    assert "already exists" in e.value.message
    kube.missing_groups.add("jobset.x-k8s.io")
    with pytest.raises(ClusterError) as e:
        submit(kube, "job-2node.toml")
    assert "no JobSet resource" in e.value.message and "install JobSet" in e.value.hint
    kube.forbidden.add("POST")
    with pytest.raises(ClusterError) as e:
        Cluster(kube.api_client()).create(kube.find("jobs")[0])
    assert "forbidden" in e.value.message and "Role" in e.value.hint
    with pytest.raises(UsageError):
        parse_handle("k8s://ctx/ns/deployment/x")
    assert make_handle("c", "ns", "PyTorchJob", "x", "ab") == "k8s://c/ns/pytorchjob/x?cluster=ab"


def test_gpu_inventory_from_node_labels(kube: FakeKube) -> None:
    kube.nodes = [
        {"metadata": {"name": "dgx-1",
                      "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
         "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "128"}}},
        {"metadata": {"name": "cpu-1", "labels": {}}, "status": {"allocatable": {"cpu": "64"}}},
    ]  # fmt: skip
    assert Cluster(kube.api_client()).gpu_nodes() == [("dgx-1", "NVIDIA-A100-SXM4-80GB", 8)]


def test_run_site_auto_applies_to_the_cluster(kube: FakeKube, tmp_path: Path) -> None:
    """The whole command: placement picks the on-prem cluster (its kubeconfig context is the
    fake server), the objects are created, the job is stored with its k8s:// handle, and
    status/cancel reach the cluster again from another process."""
    sites = tmp_path / "sites.toml"
    sites.write_text((HYBRID / "sites.toml").read_text().replace('context = "onprem"',
                     'context = "fake"'))  # fmt: skip
    env = {"KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
           "TORCHSHIP_HOME": str(tmp_path / "cli-home")}  # fmt: skip
    job = tmp_path / "job-2node.toml"
    job.write_text((HYBRID / "job-2node.toml").read_text())
    (tmp_path / "torchship.lock").write_text((HYBRID / "torchship.lock").read_text())
    r = run_cli("run", str(job), "--site", "auto", "--sites", str(sites),
                env=env)  # fmt: skip
    assert r.returncode == 1 and "is not recorded" in r.stderr  # never shown: nothing is sent
    assert not kube.objects
    r = run_cli("site", "check", "--sites", str(sites), env=env)
    assert r.returncode == 0 and f"onprem: context 'fake' recorded: {kube.url}" in r.stdout
    r = run_cli("run", str(job), "--site", "auto", "--sites", str(sites), "--detach", env=env)
    assert r.returncode == 0, r.stderr
    assert "preflight: 0 error(s)" in r.stdout  # this machine's GPUs are not the cluster's
    assert "k8s://fake/ml/jobset/pretrain-2node-" in r.stdout
    (jobset,) = kube.find("jobsets")
    assert jobset["spec"]["replicatedJobs"][0]["replicas"] == 1
    r = run_cli("status", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert '"pending"' in r.stdout
    r = run_cli("cancel", jobset["metadata"]["labels"]["torchship.io/job-id"], env=env)
    assert r.returncode == 0, r.stderr
    assert not kube.find("jobsets")


def test_site_check_live_reads_the_nodes(kube: FakeKube, tmp_path: Path) -> None:
    a100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    kube.nodes = [
        {"metadata": {"name": f"dgx-{i}", "labels": a100},
         "status": {"allocatable": {"nvidia.com/gpu": "8"}}}
        for i in range(3)
    ] + [{"metadata": {"name": "l40s-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-L40S"}},
          "status": {"allocatable": {"nvidia.com/gpu": "4"}}}]  # fmt: skip
    sites = tmp_path / "sites.toml"
    onprem = (HYBRID / "sites.toml").read_text().split("[[site]]")[2]
    sites.write_text("[[site]]" + onprem.replace('context = "onprem"', 'context = "fake"'))
    env = {"KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
           "TORCHSHIP_HOME": str(tmp_path / "cli-home")}  # fmt: skip
    r = run_cli("site", "check", "--live", "--sites", str(sites), env=env)
    assert r.returncode == 0, r.stderr
    assert "onprem: the cluster has 24×A100, 4×L40S" in r.stdout
    assert ("warning: onprem: sites.toml lists 32 A100 (8 per node); the cluster has 24 "
            "(8 per node)") in r.stdout  # fmt: skip
    assert "warning: onprem: the cluster has 4 L40S not in sites.toml" in r.stdout


def test_an_unreachable_cluster_is_one_line_not_a_traceback() -> None:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # discard: nothing listens
    cfg.retries = 0
    with pytest.raises(ClusterError, match="the API server did not answer"):
        Cluster(client.ApiClient(cfg)).get("Job", "ml", "x")
    be = KubernetesBackend(ONPREM, connector=lambda _c: client.ApiClient(cfg))
    with pytest.raises(UsageError, match="the API server did not answer"):
        be.status("k8s://onprem/ml/job/x?cluster=ab12")


# --- Kubeflow Trainer v2: a TrainJob ------------------------------------------------------------

TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"


def trainer_backend(kube: FakeKube) -> KubernetesBackend:
    site = replace(ONPREM, options=replace(options_of(ONPREM), operator="trainer"))
    return KubernetesBackend(site, connector=lambda _ctx: kube.api_client())


def test_trainjob_apply_status_logs_cancel(kube: FakeKube) -> None:
    """The TrainJob path through the client: created after its NetworkPolicy (and adopted when
    an apply is retried), pending while Kueue holds it and until Trainer's pods run, then its
    own conditions (Complete, Failed) say how it ended; cancel deletes it and its policy."""
    be = trainer_backend(kube)
    request = be.plan(load_job(HYBRID / "job-2node.toml"), read_lock(HYBRID / "torchship.lock"),
                      "01jobid")  # fmt: skip
    handle = be.apply(request)
    name = "pretrain-2node-01jobid"
    digest = identity_of(kube.api_client()).digest
    assert parse_handle(handle) == ("onprem", "ml", "TrainJob", name, digest)
    posts = [p for m, p in kube.requests if m == "POST"]
    assert posts == ["/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies", TRAINJOBS]
    obj = kube.objects[f"{TRAINJOBS}/{name}"]
    assert obj == next(yaml.safe_load_all(request.text))
    assert trainer_backend(kube).apply(request) == handle  # retried: its own objects, adopted
    assert len(kube.find("trainjobs")) == 1
    st = be.status(handle)
    assert (st.state, st.reason) == ("pending", "waiting for admission in Kueue queue team-a")
    obj["spec"]["suspend"] = False  # Kueue admitted it; Trainer made its JobSet
    obj["status"] = {"conditions": [{"type": "Suspended", "status": "False", "reason": "Resumed",
                                     "message": "TrainJob is resumed"}]}  # fmt: skip
    assert be.status(handle).state == "pending"
    patch = obj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    labels = patch["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["labels"]
    labels = labels | {"jobset.sigs.k8s.io/jobset-name": name}
    kube.add_pod("ml", f"{name}-node-0-1-b8x2q", labels, "Running", log="rank 1\n")
    kube.add_pod("ml", f"{name}-node-0-0-k2l9z", labels, "Running", log="step 1\n")
    assert be.status(handle).state == "running"
    assert list(be.logs(handle)) == ["step 1\n"]  # node 0
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
              "message": "TrainJob exceeded its activeDeadlineSeconds"}  # fmt: skip
    obj["status"]["conditions"].append(failed)
    st = be.status(handle)
    assert (st.state, st.exit_code) == ("failed", 1) and st.reason.startswith("DeadlineExceeded")
    obj["status"]["conditions"][-1] = {"type": "Complete", "status": "True",
                                       "reason": "JobSetCompleted", "message": ""}  # fmt: skip
    assert (be.status(handle).state, be.status(handle).exit_code) == ("succeeded", 0)
    be.cancel(handle)
    assert not kube.find("trainjobs") and not kube.find("networkpolicies")
    assert be.status(handle).state == "cancelled"


def test_trainjob_errors_and_the_operator_option(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.missing_groups.add("trainer.kubeflow.org")
    be = trainer_backend(kube)
    request = be.plan(load_job(HYBRID / "job-2node.toml"), read_lock(HYBRID / "torchship.lock"),
                      "01jobid")  # fmt: skip
    with pytest.raises(ClusterError) as e:
        be.apply(request)
    assert "no TrainJob resource" in e.value.message
    assert "install Kubeflow Trainer v2" in e.value.hint and "torch-distributed" in e.value.hint
    onprem = (HYBRID / "sites.toml").read_text().split("[[site]]")[2]
    sites = tmp_path / "sites.toml"

    def load(extra: str) -> Site:
        sites.write_text("[[site]]" + onprem + extra)
        return load_sites(sites)[0]

    assert options_of(load('operator = "trainer"\n')).operator == "trainer"
    assert options_of(load('operator = "pytorchjob"\n')).operator == "pytorchjob"
    legacy = load('operator = "kubeflow"\n')  # the old name: still read, as written
    assert options_of(legacy).operator == "kubeflow"
    with pytest.raises(SpecError) as bad:
        load('operator = "kubeflow-v2"\n')
    assert bad.value.field == "site[0].operator" and "trainer" in bad.value.hint
    with pytest.raises(SpecError) as bad:
        load('operator = "trainer"\nprometheus = "podmonitor"\n')
    assert bad.value.field == "site[0].prometheus" and "annotations" in bad.value.hint
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "kubeconfig", "onprem")))
    lines = check(legacy, live=False)  # `site check`: recorded already, and a note
    assert lines[-1] == ('warning: onprem: operator = "kubeflow" is the legacy Kubeflow v1 '
                         'PyTorchJob: write "pytorchjob" to keep it, or "trainer" for Kubeflow '
                         "Trainer v2")  # fmt: skip
    assert not any("legacy" in line for line in check(load(""), live=False))
