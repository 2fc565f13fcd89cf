"""Kubernetes objects for the example jobs: compared whole with the committed files
(examples/pytorch-cuda-*/k8s/job.yaml; `--regen-golden` rewrites them), valid for the
Kubernetes API (kubernetes-validate, strict), and restricted on every pod template."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO
from torchship.errors import SpecError
from torchship.k8s.render import (
    KubeOptions,
    pvc_volume,
    render,
    render_one_node,
    to_yaml,
)
from torchship.lock import read_lock
from torchship.spec.job import job_from_table, load_job

EXAMPLES = ["pytorch-cuda-2.9", "pytorch-cuda-2.6"]
JOB_ID = "01example0000000000"  # fixed, so the files are stable
OPTS = KubeOptions(namespace="ml", registry="registry.example.com/team/")
K8S_VERSION = "1.33.0"


def objects(example: str) -> list[dict[str, Any]]:
    root = REPO / "examples" / example
    job = load_job(root / "job.toml")
    job = dataclasses.replace(job, source=f"examples/{example}/job.toml")
    return render_one_node(job, read_lock(root / "torchship.lock"), JOB_ID, OPTS)


@pytest.mark.parametrize("example", EXAMPLES)
def test_committed_objects(example: str, request: pytest.FixtureRequest) -> None:
    path = REPO / "examples" / example / "k8s/job.yaml"
    text = to_yaml(objects(example))
    if request.config.getoption("--regen-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; --regen-golden"


@pytest.mark.parametrize("example", EXAMPLES)
def test_valid_for_the_api_strict(example: str) -> None:
    for obj in yaml.safe_load_all((REPO / "examples" / example / "k8s/job.yaml").read_text()):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Job":
        return [obj["spec"]["template"]["spec"]]
    return []


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_pod_is_restricted(example: str) -> None:
    objs = objects(example)
    pods = [p for o in objs for p in _pod_templates(o)]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert not any("hostPath" in v for v in pod["volumes"])
        assert not pod.get("hostNetwork") and not pod.get("hostIPC") and not pod.get("hostPID")
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"  # a string quantity
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16384Mi"}
    job = objs[0]
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # resources released when it ends
    assert job["metadata"]["labels"]["torchship.io/job-id"] == JOB_ID
    policy = objs[1]
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == [
        "Ingress",
        "Egress",
    ]


def test_data_is_a_claim_never_a_host_path() -> None:
    table = {
        "workload": "reference",
        "data": [{"path": "pvc://corpus/v2", "mount": "/data", "class": "sensitive"}],
    }
    job = job_from_table(table, "/p/job.toml", "p")
    pod = render_one_node(job, None, "j", dataclasses.replace(OPTS, image="img:1"))[0]
    spec = pod["spec"]["template"]["spec"]
    assert {
        "name": "data-0",
        "persistentVolumeClaim": {"claimName": "corpus", "readOnly": True},
    } in spec["volumes"]
    mount = spec["containers"][0]["volumeMounts"][-1]
    assert mount == {"name": "data-0", "mountPath": "/data", "readOnly": True, "subPath": "v2"}
    for bad in ("/srv/corpus", "pvc://", "s3://bucket"):
        with pytest.raises(SpecError) as e:
            pvc_volume(job, 0, bad)
        assert "job.data[0].path" in str(e.value.field) and "pvc://CLAIM" in e.value.hint


def test_kueue_queue_suspends_and_labels() -> None:
    job = job_from_table({"workload": "reference"}, "/p/job.toml", "p")
    o = dataclasses.replace(OPTS, image="img:1", queue="team-a")
    j = render_one_node(job, None, "j", o)[0]
    assert j["spec"]["suspend"] is True
    assert j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    kubernetes_validate.validate(j, K8S_VERSION, strict=True)


def test_files_exist_for_each_example() -> None:
    for example in EXAMPLES:
        assert Path(REPO / "examples" / example / "k8s/job.yaml").is_file()


# --- several nodes: JobSet, PyTorchJob ------------------------------------------------------

CRDS = REPO / "tests/data/k8s-crds"  # copied from ../shared/reference/k8s-crds
HYBRID = REPO / "examples/hybrid"


def crd_schema(file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / file).read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def multi_node(operator: str) -> list[dict[str, Any]]:
    job = load_job(HYBRID / "job-2node.toml")
    job = dataclasses.replace(job, source="examples/hybrid/job-2node.toml")
    o = KubeOptions(namespace="ml", site="onprem", registry="registry.internal.example/ml/")
    return render(job, read_lock(HYBRID / "torchship.lock"), JOB_ID, o, operator)


def _pods(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "JobSet":
        return [r["template"]["spec"]["template"]["spec"] for r in obj["spec"]["replicatedJobs"]]
    if obj["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    return _pod_templates(obj)


@pytest.mark.parametrize(
    ("operator", "crd"),
    [("jobset", "jobset.x-k8s.io_jobsets.yaml"), ("kubeflow", "kubeflow.org_pytorchjobs.yaml")],
)
def test_two_nodes_valid_against_the_crd_and_restricted(
    operator: str, crd: str, request: pytest.FixtureRequest
) -> None:
    objs = multi_node(operator)
    path = HYBRID / f"k8s/pretrain-2node.{operator}.yaml"
    text = to_yaml(objs)
    if request.config.getoption("--regen-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; --regen-golden"
    main, policy = objs
    jsonschema.validate(main, crd_schema(crd))
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    for pod in _pods(main):
        # each pod template is a valid Pod, and restricted
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
            K8S_VERSION,
            strict=True,
        )
        c = pod["containers"][0]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert pod["volumes"][-1]["persistentVolumeClaim"]["claimName"] == "records-sensitive"
    if operator == "jobset":
        command = _pods(main)[0]["containers"][0]["command"]
        name = main["metadata"]["name"]
        assert f"--master-addr={name}-node-0-0.{name}" in command
        assert "--node-rank=$(JOB_COMPLETION_INDEX)" in command and "--nnodes=2" in command
        assert main["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": name}
        assert main["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] == 2
    else:
        specs = main["spec"]["pytorchReplicaSpecs"]
        assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 1)
        assert main["spec"]["nprocPerNode"] == "8"
