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
from tools.scan_manifests import pod_templates, restricted_violations

from tests.conftest import REPO
from torchship.backends.kubernetes import options_for
from torchship.errors import SpecError, UsageError
from torchship.k8s.render import (
    KubeOptions,
    pvc_volume,
    render,
    render_one_node,
    to_yaml,
)
from torchship.lock import read_lock
from torchship.sites import load_sites
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
    onprem = next(s for s in load_sites(HYBRID / "sites.toml") if s.name == "onprem")
    return render(job, read_lock(HYBRID / "torchship.lock"), JOB_ID, options_for(onprem), operator)


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
        # the run folder (checkpoints) on the site's claim, one sub-folder per job: a restarted
        # pod resumes from the last checkpoint
        run = next(v for v in pod["volumes"] if v["name"] == "run")
        assert run == {"name": "run", "persistentVolumeClaim": {"claimName": "ml-runs"}}
        mount = next(m for m in c["volumeMounts"] if m["name"] == "run")
        assert mount == {"name": "run", "mountPath": "/torchship/run",
                         "subPath": main["metadata"]["name"]}  # fmt: skip
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


GOLDEN_MANIFESTS = sorted(REPO.glob("examples/*/k8s/*.yaml"))


@pytest.mark.parametrize("path", GOLDEN_MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_pod_template_is_restricted(path: Path) -> None:
    """Pod Security "restricted", field by field, on every pod template of every golden (Job,
    JobSet, PyTorchJob), plus what we add: read-only root, no token, a high UID, no host paths,
    images pulled on every start, a NetworkPolicy beside the pods."""
    objs = list(yaml.safe_load_all(path.read_text()))
    pods = [pod for o in objs for _, pod in pod_templates(o)]
    assert pods and any(o["kind"] == "NetworkPolicy" for o in objs)
    for pod in pods:
        assert restricted_violations(pod) == []
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["runAsGroup"] >= 10000
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["imagePullPolicy"] == "Always"
            env = {e["name"]: e["value"] for e in c["env"]}
            assert env["HOME"] == "/tmp" and env["USER"] == "torchship"  # no passwd entry needed


def test_the_restricted_check_can_fail() -> None:
    guide = list(yaml.safe_load_all((REPO / "benchmarks/k8s-compare/guide.yaml").read_text()))
    ((where, pod),) = [t for o in guide for t in pod_templates(o)]
    assert where == "Deployment/pytorch-cuda"
    assert set(restricted_violations(pod)) == {"allowPrivilegeEscalation", "capabilities.drop-ALL",
                                               "runAsNonRoot", "seccompProfile",
                                               "volume:hostPath"}  # fmt: skip


def test_image_digest_pins_the_image() -> None:
    onprem = next(s for s in load_sites(HYBRID / "sites.toml") if s.name == "onprem")
    digest = "sha256:" + "ab" * 32
    objs = render(load_job(HYBRID / "job-1node.toml"), read_lock(HYBRID / "torchship.lock"),
                  JOB_ID, options_for(onprem, digest))  # fmt: skip
    image = objs[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.internal.example/ml/") and image.endswith("@" + digest)
    with pytest.raises(UsageError) as e:
        options_for(onprem, "sha256:short")
    assert "64 hex digits" in e.value.hint


# --- clouds without Kubernetes: a SkyPilot task -----------------------------------------------


@pytest.mark.parametrize("job_file", ["job-1node.toml", "job-2node.toml"])
def test_skypilot_task(job_file: str, request: pytest.FixtureRequest) -> None:
    from torchship.backends.skypilot import launch_command, sky_task

    gcp = next(s for s in load_sites(HYBRID / "sites.toml") if s.name == "gcp-a2")
    job = load_job(HYBRID / job_file)
    if job.nodes == 2:  # its sensitive records are a PVC on-prem only: the task's shape without
        with pytest.raises(UsageError, match="has no bucket address"):
            sky_task(job, read_lock(HYBRID / "torchship.lock"), JOB_ID, gcp)
        job = dataclasses.replace(job, data=())
    task = sky_task(job, read_lock(HYBRID / "torchship.lock"), JOB_ID, gcp)
    path = HYBRID / f"sky/{job.name}.sky.yaml"
    text = to_yaml([task])
    if request.config.getoption("--regen-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; --regen-golden"
    res = task["resources"]
    assert res["image_id"] == "docker:pytorch-cuda:2.9.1-cu128-py3.12-53ac2e3f"
    assert res["accelerators"] == {"A100": 8 if job.nodes == 2 else 4}
    assert res["autostop"] == {"idle_minutes": 10, "down": True}  # released when it ends
    assert task["num_nodes"] == job.nodes and task["envs"]["TORCHSHIP_JOB_ID"] == JOB_ID
    assert '--nnodes="${SKYPILOT_NUM_NODES}" --node-rank="${SKYPILOT_NODE_RANK}"' in task["run"]
    assert "|" in text.split("run:")[1].splitlines()[0]  # a literal block, readable
    assert launch_command("t.yaml", "c") == ["sky", "launch", "--yes", "--down", "--cluster",
                                             "c", "t.yaml"]  # fmt: skip


def test_declared_egress_is_the_only_way_out() -> None:
    table = {"workload": "reference", "egress": ["10.20.0.0/16:443", "192.168.7.9"]}
    job = job_from_table(table, "/p/job.toml", "p")
    policy = render_one_node(job, None, "j", dataclasses.replace(OPTS, image="img:1"))[1]
    rules = policy["spec"]["egress"]
    assert rules[2:] == [
        {
            "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        },
        {"to": [{"ipBlock": {"cidr": "192.168.7.9/32"}}]},
    ]
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    for bad, what in (("10.0.0.0/33", "not an IP network"), ("10.0.0.0/8:0", "not a port"),
                      ("example.com:443", "not an IP network")):  # fmt: skip
        with pytest.raises(SpecError) as e:
            job_from_table({"workload": "reference", "egress": [bad]}, "/p/job.toml", "p")
        assert e.value.field == "job.egress[0]" and what in e.value.message
