"""Kubernetes objects for the example jobs: compared whole with the committed files
(examples/pytorch-cuda-*/k8s/job.yaml, examples/hybrid/k8s/, tests/golden/k8s/;
`--regen-golden` rewrites them), valid for the Kubernetes API (kubernetes-validate, strict; the
custom resources against their CRDs' schemas, closed to fields they lack), and restricted on
every pod template."""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from tools.scan_manifests import pod_templates, restricted_violations

from tests.conftest import REPO
from torchship.backends.kubernetes import options_for
from torchship.conventions import RENDEZVOUS_PORT
from torchship.errors import SpecError, UsageError
from torchship.k8s.render import (
    RUNTIME_CONTAINER_FIELDS,
    RUNTIME_POD_FIELDS,
    TRAINER_CONTAINER_PATCH,
    TRAINER_FIELDS,
    TRAINER_NODE,
    TRAINER_POD_PATCH,
    KubeOptions,
    pvc_volume,
    render,
    render_one_node,
    to_yaml,
    trainjob_name,
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


# --- several nodes: JobSet, TrainJob, PyTorchJob ----------------------------------------------

CRDS = REPO / "tests/data/k8s-crds"  # copied from ../shared/reference/k8s-crds
HYBRID = REPO / "examples/hybrid"
# libyaml where PyYAML has it: the CRDs are 0.5-0.8 MB, 2 s each in pure Python
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def crd_schema(file: str) -> dict[str, Any]:
    """The CRD's schema, closed: an object whose schema lists its fields takes no other (unless
    it says so). The API server drops an unknown field of a custom resource with no more than a
    warning (its default field validation), so a field the schema lacks would be lost silently."""
    crd = yaml.load((CRDS / file).read_text(), Loader=LOADER)  # a safe loader (CSafeLoader)
    return _closed(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@functools.cache
def crd_validator(file: str) -> Any:
    """A validator of the closed schema, made once (jsonschema.validate checks a schema before
    each use: seconds for these)."""
    schema = crd_schema(file)
    return jsonschema.validators.validator_for(schema)(schema)


def _closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) if k != "properties" else {n: _closed(p) for n, p in v.items()}
           for k, v in schema.items()}  # fmt: skip
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


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
    ("operator", "golden", "crd"),
    [("jobset", "jobset", "jobset.x-k8s.io_jobsets.yaml"),
     ("pytorchjob", "kubeflow", "kubeflow.org_pytorchjobs.yaml")],
)  # fmt: skip
def test_two_nodes_valid_against_the_crd_and_restricted(
    operator: str, golden: str, crd: str, request: pytest.FixtureRequest
) -> None:
    objs = multi_node(operator)
    path = HYBRID / f"k8s/pretrain-2node.{golden}.yaml"
    text = to_yaml(objs)
    if request.config.getoption("--regen-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; --regen-golden"
    main, policy = objs
    crd_validator(crd).validate(main)
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


# --- several nodes on Kubeflow Trainer v2: a TrainJob ------------------------------------------

TRAINJOB_CRD = "trainer.kubeflow.org_trainjobs.yaml"
RUNTIME_CRD = "trainer.kubeflow.org_clustertrainingruntimes.yaml"
TRAINJOB_GOLDENS = REPO / "tests/golden/k8s"
CPU_JOB = {
    "name": "cpu-2node",
    "workload": "reference",
    "nodes": 2,
    "processes_per_node": 4,
    "cpus": 8,
    "memory_gib": 16,
}  # fmt: skip  (synthetic: a two-node CPU job)


@functools.cache
def torch_distributed() -> dict[str, Any]:
    """The runtime a TrainJob names, as Trainer ships it, valid for its CRD."""
    runtime: dict[str, Any] = yaml.safe_load((CRDS / "runtime-torch-distributed.yaml").read_text())
    crd_validator(RUNTIME_CRD).validate(runtime)
    return runtime


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge as Kubernetes makes it of a pod template: maps key by key, lists of
    named things (containers, volumes, env) by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return base | {k: _merge(base[k], v) if k in base else v for k, v in patch.items()}
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(x, dict) and "name" in x for x in [*base, *patch]):
        by_name = {x["name"]: x for x in base}
        for x in patch:
            by_name[x["name"]] = _merge(by_name[x["name"]], x) if x["name"] in by_name else x
        return list(by_name.values())
    return patch


def trainer_pod(trainjob: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, spec) of the pods Kubeflow Trainer makes of a TrainJob on torch-distributed: a
    stand-in for its controller, for the checks below, after kubeflow/trainer: runtimePatches
    merged into the runtime's Job template (pkg/runtime/core/trainingruntime.go,
    mergeRuntimePatches), the trainer's image, command, env and resources on container `node`
    (plugins/jobset/builder.go), and torchrun's PET_* variables and port (plugins/torch)."""
    name, spec = trainjob["metadata"]["name"], trainjob["spec"]
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    jobs = torch_distributed()["spec"]["template"]["spec"]["replicatedJobs"]
    (job,) = [j for j in jobs if j["name"] == TRAINER_NODE]
    assert job["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }  # the job the trainer fills in
    template = job["template"]["spec"]["template"]
    for patch in spec["runtimePatches"]:
        for r in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if r["name"] == job["name"]:
                template = _merge(template, r["template"]["spec"]["template"])
    pod = copy.deepcopy(template["spec"])
    (node,) = [c for c in pod["containers"] if c["name"] == TRAINER_NODE]
    t = spec["trainer"]
    rank = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    node |= {"image": t["image"], "command": t["command"], "resources": t["resourcesPerNode"],
             "ports": [{"containerPort": RENDEZVOUS_PORT}],  # Trainer's 29500, as ours
             "env": [*t["env"], {"name": "PET_NNODES", "value": str(t["numNodes"])},
                     {"name": "PET_NPROC_PER_NODE", "value": str(t["numProcPerNode"])},
                     {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": rank}}},
                     {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
                     {"name": "PET_MASTER_PORT", "value": str(RENDEZVOUS_PORT)}]}  # fmt: skip
    return template["metadata"], pod


def trainjob(case: str) -> list[dict[str, Any]]:
    if case == "pretrain-2node":  # the hybrid example's on-prem site: GPUs, Kueue, a claim
        return multi_node("trainer")
    job = job_from_table(CPU_JOB, "tests/golden/k8s/cpu-2node.toml", "cpu-2node")
    o = dataclasses.replace(OPTS, metrics="off")
    return render(job, read_lock(HYBRID / "torchship.lock"), JOB_ID, o, "trainer")


@pytest.mark.parametrize("case", ["pretrain-2node", "cpu-2node"])
def test_trainjob_valid_against_the_crds_and_its_pods_restricted(
    case: str, request: pytest.FixtureRequest
) -> None:
    objs = trainjob(case)
    path = TRAINJOB_GOLDENS / f"{case}.trainer.yaml"
    text = to_yaml(objs)
    if request.config.getoption("--regen-golden"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; --regen-golden"
    main, policy = objs
    crd_validator(TRAINJOB_CRD).validate(main)
    name = main["metadata"]["name"]  # the CRD's CEL rules on it, which jsonschema skips
    assert re.fullmatch("[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    meta, pod = trainer_pod(main)
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                  "spec": pod}, K8S_VERSION, strict=True)  # fmt: skip
    assert restricted_violations(pod) == []
    # the NetworkPolicy fences the pods Trainer makes: their labels are the TrainJob's patch's
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= meta["labels"].items()
    assert meta["labels"]["torchship.io/job-id"] == JOB_ID
    (node,) = pod["containers"]
    env = {e["name"] for e in node["env"]}
    command = " ".join(node["command"])
    assert set(re.findall(r"\$\((\w+)\)", command)) <= env  # every $(VAR) is set
    assert "--nnodes=$(PET_NNODES)" in command and "--node-rank=$(PET_NODE_RANK)" in command
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert main["spec"]["trainer"]["numNodes"] == 2
    if case == "pretrain-2node":
        assert node["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert main["spec"]["trainer"]["numProcPerNode"] == 8
        assert main["spec"]["suspend"] is True  # Kueue admits it
        assert main["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert meta["annotations"]["prometheus.io/port"] == "9402"
        assert {"name": "run", "persistentVolumeClaim": {"claimName": "ml-runs"}} in pod["volumes"]
        mount = next(m for m in node["volumeMounts"] if m["name"] == "run")
        assert mount["subPath"] == name
        assert pod["volumes"][-1]["persistentVolumeClaim"]["claimName"] == "records-sensitive"
        assert main["spec"]["activeDeadlineSeconds"] == 720 * 60
    else:
        assert "nvidia.com/gpu" not in node["resources"]["limits"]
        assert main["spec"]["trainer"]["numProcPerNode"] == 4
        assert "suspend" not in main["spec"] and "annotations" not in meta
        assert {"name": "run", "emptyDir": {}} in pod["volumes"]


def test_trainjob_carries_every_pod_field_it_can() -> None:
    """Each field of the pod the JobSet runs is in the TrainJob, or named as the runtime's
    (docs/sites-kubernetes.md): a field added to the pod later is never dropped unseen."""
    (replicated,) = multi_node("jobset")[0]["spec"]["replicatedJobs"]
    pod = replicated["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert set(pod) == {"containers", *TRAINER_POD_PATCH, *RUNTIME_POD_FIELDS}
    assert set(container) == {*TRAINER_FIELDS, *TRAINER_CONTAINER_PATCH, *RUNTIME_CONTAINER_FIELDS}
    main = multi_node("trainer")[0]
    _, trained = trainer_pod(main)
    for key in TRAINER_POD_PATCH:
        assert trained[key] == pod[key]
    (node,) = trained["containers"]
    for key in TRAINER_CONTAINER_PATCH:
        assert node[key] == container[key]
    trainer = main["spec"]["trainer"]
    for key, field in TRAINER_FIELDS.items():
        if key != "command":
            assert trainer[field] == container[key]
    rendezvous = ("--nnodes=", "--node-rank=", "--master-addr=", "--master-port=")
    same = [[a for a in c if not a.startswith(rendezvous)]
            for c in (trainer["command"], container["command"])]  # fmt: skip
    assert same[0] == same[1]  # the command, but for the rendezvous: Trainer's PET_* variables


def test_the_closed_schema_refuses_what_a_trainjob_lacks() -> None:
    """What the TrainJob CRD has no field for fails validation, rather than being dropped by
    the API server: the older API's podTemplateOverrides, and a port or pull policy for the
    node container (runtimePatches' ContainerPatch has env, volumeMounts, securityContext)."""
    main = multi_node("trainer")[0]
    validator = crd_validator(TRAINJOB_CRD)
    validator.validate(main)
    old = copy.deepcopy(main)
    old["spec"]["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}]}]
    ports = copy.deepcopy(main)
    patch = ports["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    pod["containers"][0]["ports"] = [{"containerPort": 9402}]
    pull = copy.deepcopy(main)
    pull["spec"]["trainer"]["imagePullPolicy"] = "Always"
    for bad in (old, ports, pull):
        with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
            validator.validate(bad)


def test_trainjob_refusals_and_names() -> None:
    lock = read_lock(HYBRID / "torchship.lock")
    job = job_from_table(CPU_JOB, "/p/job.toml", "p")
    for operator in ("pytorchjob", "kubeflow"):  # "kubeflow": the v1 operator's old name
        (obj, _) = render(job, lock, JOB_ID, OPTS, operator)
        assert obj["kind"] == "PyTorchJob"
    with pytest.raises(UsageError, match="not a way to run several nodes"):
        render(job, lock, JOB_ID, OPTS, "mpi")
    with pytest.raises(UsageError, match="cannot declare its pods' metrics port"):
        render(job, lock, JOB_ID, dataclasses.replace(OPTS, metrics="podmonitor"), "trainer")
    bad = job_from_table({**CPU_JOB, "env": {"PET_NNODES": "4"}}, "/p/job.toml", "p")
    with pytest.raises(UsageError, match="PET_NNODES"):
        render(bad, lock, JOB_ID, OPTS, "trainer")
    table = {k: v for k, v in CPU_JOB.items() if k != "workload"} | {"command": ["x"] * 130}
    long = job_from_table(table, "/p/job.toml", "p")
    with pytest.raises(UsageError, match="at most 128 command items"):
        render(long, lock, JOB_ID, OPTS, "trainer")
    digit = job_from_table({**CPU_JOB, "name": "7b-sft"}, "/p/job.toml", "p")
    assert trainjob_name(digit, JOB_ID) == "job-7b-sft-00000000"  # an RFC 1035 label
    assert render(digit, lock, JOB_ID, OPTS, "jobset")[0]["metadata"]["name"] == "7b-sft-00000000"


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
