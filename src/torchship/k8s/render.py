"""Kubernetes objects for a job, rendered as plain dicts (pure; YAML by `to_yaml`).

One node: a batch/v1 Job. Several: a JobSet, or where the site runs Kubeflow, a TrainJob
(Kubeflow Trainer v2) or a PyTorchJob (the legacy v1 training operator). Each wraps the same
pod (torchship.k8s.pod) and comes with the same NetworkPolicy and, where the site asks, a
PodMonitor; finished objects are removed after `ttlSecondsAfterFinished` where the kind has it.

This is the rendering the Kubernetes site (torchship.backends.kubernetes: its options become
KubeOptions there, and it applies through the official client) builds on.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml

from torchship.conventions import K8S_LABEL_PREFIX, RENDEZVOUS_PORT
from torchship.errors import UsageError
from torchship.k8s.pod import (
    DIGEST,
    METRICS_MODES,
    KubeOptions,
    companions,
    dns_name,
    image_for,
    job_labels,
    object_name,
    pod_spec,
    pvc_volume,
    run_volume,
    template_meta,
)
from torchship.lock.model import Lock
from torchship.spec.job import JobSpec

__all__ = ["DIGEST", "LEGACY_OPERATORS", "METRICS_MODES", "OPERATORS", "KubeOptions", "Operator",
           "dns_name", "pvc_volume", "render", "render_jobset", "render_one_node",
           "render_pytorchjob", "render_trainjob", "to_yaml"]  # fmt: skip

# How a site runs several nodes: JobSet; Kubeflow Trainer v2's TrainJob; or the Kubeflow v1
# training operator's PyTorchJob (legacy: Trainer v2 replaces it). "kubeflow", the name the v1
# operator had first, still means it.
Operator = Literal["jobset", "trainer", "pytorchjob", "kubeflow"]
OPERATORS: tuple[Operator, ...] = ("jobset", "trainer", "pytorchjob", "kubeflow")
LEGACY_OPERATORS: dict[str, Operator] = {"kubeflow": "pytorchjob"}


def render_one_node(
    job: JobSpec, lock: Lock | None, job_id: str, o: KubeOptions | None = None
) -> list[dict[str, Any]]:
    """[batch/v1 Job, networking.k8s.io/v1 NetworkPolicy] for a one-node job."""
    o = o or KubeOptions()
    if job.nodes > 1:
        raise UsageError(
            f"{job.source}: job.nodes = {job.nodes}, and a batch/v1 Job is one node",
            "use render(), which makes a JobSet, TrainJob or PyTorchJob for several nodes",
        )
    name = object_name(job, job_id)
    labels = job_labels(job, job_id, lock, o)
    meta = {"name": name, "namespace": o.namespace, "labels": labels}
    job_spec: dict[str, Any] = {
        "backoffLimit": job.retries,
        "ttlSecondsAfterFinished": o.ttl_after_finished_s,
        "template": {
            "metadata": template_meta(labels, o),
            "spec": pod_spec(
                job,
                job_id,
                image_for(lock, job, o),
                None,
                run_volume(name, o.checkpoint_claim),
                o,
            ),
        },
    }
    if job.max_runtime_minutes:
        job_spec["activeDeadlineSeconds"] = int(job.max_runtime_minutes * 60)
    if o.queue:
        job_spec["suspend"] = True  # Kueue admits (unsuspends) it
    main = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}
    return [main, *companions(job, job_id, meta, o)]


MASTER_PORT = RENDEZVOUS_PORT
REPLICATED_JOB = "node"


def render_jobset(
    job: JobSpec, lock: Lock | None, job_id: str, o: KubeOptions | None = None
) -> list[dict[str, Any]]:
    """[jobset.x-k8s.io/v1alpha2 JobSet, NetworkPolicy] for several nodes: one Indexed Job of
    `nodes` pods; JobSet's headless Service (enableDNSHostnames) gives node 0 the name
    `<name>-node-0-0.<name>`, which every node's torchrun uses as its rendezvous."""
    o = o or KubeOptions()
    name = object_name(job, job_id)
    labels = job_labels(job, job_id, lock, o)
    meta = {"name": name, "namespace": o.namespace, "labels": labels}
    master = f"{name}-{REPLICATED_JOB}-0-0.{name}"
    rendezvous = [
        f"--nnodes={job.nodes}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={master}",
        f"--master-port={MASTER_PORT}",
    ]
    pod = pod_spec(
        job, job_id, image_for(lock, job, o), rendezvous, run_volume(name, o.checkpoint_claim), o
    )
    indexed = {
        "parallelism": job.nodes,
        "completions": job.nodes,
        "completionMode": "Indexed",
        "backoffLimit": 0,  # one node failing restarts the whole set (failurePolicy)
        "template": {"metadata": template_meta(labels, o), "spec": pod},
    }
    if job.max_runtime_minutes:
        indexed["activeDeadlineSeconds"] = int(job.max_runtime_minutes * 60)
    spec: dict[str, Any] = {
        "ttlSecondsAfterFinished": o.ttl_after_finished_s,
        "network": {"enableDNSHostnames": True, "subdomain": name},
        "failurePolicy": {"maxRestarts": job.retries},
        "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": indexed}}],
    }
    if o.queue:
        spec["suspend"] = True
    jobset = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": meta,
              "spec": spec}  # fmt: skip
    return [jobset, *companions(job, job_id, meta, o)]


def render_pytorchjob(
    job: JobSpec, lock: Lock | None, job_id: str, o: KubeOptions | None = None
) -> list[dict[str, Any]]:
    """[kubeflow.org/v1 PyTorchJob, NetworkPolicy] for sites with the Kubeflow training
    operator: a Master and nodes-1 Workers. With `nprocPerNode` set, the operator makes their
    Services and gives every pod torchrun's settings as PET_NNODES, PET_NODE_RANK,
    PET_MASTER_ADDR and PET_MASTER_PORT."""
    o = o or KubeOptions()
    name = object_name(job, job_id)
    labels = job_labels(job, job_id, lock, o)
    meta = {"name": name, "namespace": o.namespace, "labels": labels}
    rendezvous = [
        "--nnodes=$(PET_NNODES)",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(PET_MASTER_ADDR)",
        "--master-port=$(PET_MASTER_PORT)",
    ]
    pod = pod_spec(
        job, job_id, image_for(lock, job, o), rendezvous, run_volume(name, o.checkpoint_claim), o
    )
    pod["containers"][0]["name"] = "pytorch"  # the operator finds the container by this name

    def replica(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "Never",
                "template": {"metadata": template_meta(labels, o), "spec": pod}}  # fmt: skip

    run_policy: dict[str, Any] = {
        "backoffLimit": job.retries,
        "ttlSecondsAfterFinished": o.ttl_after_finished_s,
        "cleanPodPolicy": "None",
    }
    if job.max_runtime_minutes:
        run_policy["activeDeadlineSeconds"] = int(job.max_runtime_minutes * 60)
    if o.queue:
        run_policy["suspend"] = True
    spec = {
        "nprocPerNode": str(job.processes_per_node),
        "runPolicy": run_policy,
        "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(job.nodes - 1)},
    }
    obj = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": meta, "spec": spec}
    return [obj, *companions(job, job_id, meta, o)]


# Kubeflow Trainer v2 (trainer.kubeflow.org/v1alpha1; the TrainJob and ClusterTrainingRuntime
# CRDs in tests/data/k8s-crds, kubeflow/trainer at 8c0f5059). A TrainJob names a runtime (a
# JobSet template) and fills in its trainer: `torch-distributed`, the runtime Trainer ships for
# torchrun, has one replicated job and one container, both named "node" (Trainer's
# constants.Node). Trainer names the JobSet after the TrainJob (the ClusterTrainingRuntime
# CRD: "JobSet name and namespace is equal to the TrainJob's") and gives the node container
# torchrun's settings as PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR (`<name>-node-0-0.<name>`)
# and PET_MASTER_PORT (its torch plugin, pkg/constants: names it reserves for itself).
TRAINER_RUNTIME = "torch-distributed"
TRAINER_NODE = "node"
TRAINER_RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                        "PET_MASTER_PORT")  # fmt: skip
TRAINER_MAX_ITEMS = 128  # the CRD's maxItems for trainer.command and trainer.env
# torchship's entry of runtimePatches (keyed by manager; Kueue writes its own entry under
# kueue.x-k8s.io/manager).
TRAINER_MANAGER = K8S_LABEL_PREFIX + "manager"
# The pod's fields a TrainJob sets: the trainer's (image, command, env, resources of the node
# container) and runtimePatches' (PodSpecPatch, ContainerPatch: only these of ours are there).
TRAINER_POD_PATCH = ("securityContext", "volumes")
TRAINER_CONTAINER_PATCH = ("securityContext", "volumeMounts")
TRAINER_FIELDS = {"image": "image", "command": "command", "env": "env",
                  "resources": "resourcesPerNode"}  # fmt: skip
# The rest of our pod has no place in a TrainJob: the runtime's pod template decides it
# (docs/sites-kubernetes.md says what a cluster admin can set there instead).
RUNTIME_POD_FIELDS = ("restartPolicy", "automountServiceAccountToken", "enableServiceLinks")
RUNTIME_CONTAINER_FIELDS = ("name", "imagePullPolicy", "ports")


def trainjob_name(job: JobSpec, job_id: str) -> str:
    """The object name, starting with a letter: a TrainJob's name is an RFC 1035 label (the
    CRD's rule), where other kinds' may start with a digit."""
    name = object_name(job, job_id)
    return name if re.match("[a-z]", name) else f"job-{name}"


def _trainer_limits(job: JobSpec, command: list[str], env: list[dict[str, str]]) -> None:
    """What the TrainJob's API refuses, refused here with the fix: too long a command or
    environment, a name Trainer reserves for torchrun."""
    if len(command) > TRAINER_MAX_ITEMS or len(env) > TRAINER_MAX_ITEMS:
        raise UsageError(
            f"{job.source}: a TrainJob's trainer takes at most {TRAINER_MAX_ITEMS} command "
            f"items and {TRAINER_MAX_ITEMS} environment variables (this job: {len(command)}, "
            f"{len(env)})",
            'shorten job.command or job.env, or use operator = "jobset" for the site',
        )
    reserved = sorted({e["name"] for e in env} & set(TRAINER_RESERVED_ENV))
    if reserved:
        raise UsageError(
            f"{job.source}: job.env sets {', '.join(reserved)}, which Kubeflow Trainer sets "
            "for torchrun itself",
            "remove them from [job.env]: torchship passes the nodes, rank and address",
        )


def render_trainjob(
    job: JobSpec, lock: Lock | None, job_id: str, o: KubeOptions | None = None
) -> list[dict[str, Any]]:
    """[trainer.kubeflow.org/v1alpha1 TrainJob, NetworkPolicy] for sites with Kubeflow
    Trainer v2: the `torch-distributed` runtime's `nodes` pods, filled in with the job's
    image, torchrun command, environment and resources (the trainer), and the rest of the pod
    that the API lets a TrainJob set (runtimePatches): its labels and scrape annotations (so
    the NetworkPolicy selects the pods), the restricted security contexts, volumes and
    mounts."""
    o = o or KubeOptions()
    if o.metrics == "podmonitor":
        raise UsageError(
            "a TrainJob cannot declare its pods' metrics port, which a PodMonitor selects",
            'use prometheus = "annotations" (or operator = "jobset") for the site',
        )
    name = trainjob_name(job, job_id)
    labels = job_labels(job, job_id, lock, o)
    meta = {"name": name, "namespace": o.namespace, "labels": labels}
    rendezvous = [  # Trainer's torch plugin sets these on the node container
        "--nnodes=$(PET_NNODES)",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(PET_MASTER_ADDR)",
        "--master-port=$(PET_MASTER_PORT)",
    ]
    pod = pod_spec(
        job, job_id, image_for(lock, job, o), rendezvous, run_volume(name, o.checkpoint_claim), o
    )
    (container,) = pod["containers"]
    _trainer_limits(job, container["command"], container["env"])
    trainer: dict[str, Any] = {
        "image": container["image"],
        "command": container["command"],
        "env": container["env"],
        "numNodes": job.nodes,
        "numProcPerNode": job.processes_per_node,
        "resourcesPerNode": container["resources"],
    }
    node = {"name": TRAINER_NODE} | {k: container[k] for k in TRAINER_CONTAINER_PATCH}
    pod_patch = {k: pod[k] for k in TRAINER_POD_PATCH} | {"containers": [node]}
    patch = {"manager": TRAINER_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
        "replicatedJobs": [{"name": TRAINER_NODE, "template": {"spec": {"template": {
            "metadata": template_meta(labels, o), "spec": pod_patch}}}}]}}}}  # fmt: skip
    spec: dict[str, Any] = {
        "runtimeRef": {
            "name": TRAINER_RUNTIME,
            "kind": "ClusterTrainingRuntime",
            "apiGroup": "trainer.kubeflow.org",
        },
        "trainer": trainer,
        "runtimePatches": [patch],
    }
    if job.max_runtime_minutes:
        spec["activeDeadlineSeconds"] = int(job.max_runtime_minutes * 60)
    if o.queue:
        spec["suspend"] = True  # Kueue admits (unsuspends) it
    obj = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": meta,
           "spec": spec}  # fmt: skip
    return [obj, *companions(job, job_id, meta, o)]


def render(
    job: JobSpec,
    lock: Lock | None,
    job_id: str,
    o: KubeOptions | None = None,
    operator: str = "jobset",
) -> list[dict[str, Any]]:
    """The objects for a job: a batch/v1 Job for one node; for several, a JobSet, a TrainJob
    (operator "trainer": Kubeflow Trainer v2) or a PyTorchJob (operator "pytorchjob", or its
    old name "kubeflow": the Kubeflow v1 training operator)."""
    if job.nodes == 1:
        return render_one_node(job, lock, job_id, o)
    operator = LEGACY_OPERATORS.get(operator, operator)
    if operator == "trainer":
        return render_trainjob(job, lock, job_id, o)
    if operator == "pytorchjob":
        return render_pytorchjob(job, lock, job_id, o)
    if operator != "jobset":
        raise UsageError(f"{operator!r} is not a way to run several nodes",
                         f"one of: {', '.join(OPERATORS[:3])}")  # fmt: skip
    return render_jobset(job, lock, job_id, o)


class _PlainDumper(yaml.SafeDumper):
    """No `&id001` anchors: every object reads on its own, as `kubectl` users expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    """Multi-line strings (a SkyPilot task's `run`) as literal blocks, readable as written."""
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_PlainDumper.add_representer(str, _str)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(
        objects, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=100
    )
