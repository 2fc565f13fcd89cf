"""The pod every Kubernetes job runs, and what goes with it (pure: plain dicts).

The pod template meets Pod Security "restricted" (runAsNonRoot, no privilege escalation, all
capabilities dropped, seccomp RuntimeDefault) and more: a read-only root filesystem with
writable emptyDirs (/tmp, the run folder), /dev/shm as a memory emptyDir sized from the job, no
service-account token, `nvidia.com/gpu` limits as string quantities, data only from
PersistentVolumeClaims (`pvc://CLAIM[/SUBPATH]`; never hostPath), labels (job id, lock hash,
site). Beside it go a NetworkPolicy (the job's pods reach each other, DNS and the egress the job
declares, nothing else) and, where the site asks, a PodMonitor.

torchship.k8s.render wraps this pod in each kind's object (Job, JobSet, TrainJob, PyTorchJob).
Paths, ports, labels and the /dev/shm rule every site shares are torchship.conventions'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchship.conventions import (
    JOB_ID_ENV,
    JOB_ID_LABEL,
    K8S_LABEL_PREFIX,
    LOCK_HASH_LABEL,
    LOG_FORMAT_ENV,
    METRICS_ADDR_ENV,
    METRICS_PORT_ENV,
    RUN_DIR_ENV,
    RUN_MOUNT,
    SITE_LABEL,
    TRAINING_PORT,
    shm_mib,
)
from torchship.errors import SpecError
from torchship.image.dockerfile import image_tag
from torchship.launch import multinode_torchrun_argv, torchrun_argv, workload_argv
from torchship.lock.model import Lock
from torchship.spec.job import JobSpec

# Pods run as 10001, not the image's user (1000): a UID above the range hosts hand to people
# (checkov CKV_K8S_40), so a process that ever escaped its container owns nothing on the node.
# The image needs no passwd entry for it: HOME is /tmp, USER/LOGNAME are set (getpass, which
# torch's compile cache calls, reads them first), and everything written goes to emptyDirs or
# the checkpoint claim (fsGroup makes them writable).
POD_UID = 10001
TTL_AFTER_FINISHED_S = 3600
LABEL_JOB = K8S_LABEL_PREFIX + JOB_ID_LABEL
LABEL_LOCK = K8S_LABEL_PREFIX + LOCK_HASH_LABEL
LABEL_SITE = K8S_LABEL_PREFIX + SITE_LABEL
LABEL_NAME = "app.kubernetes.io/name"
METRICS_PORT_NAME = "metrics"
SCRAPE_INTERVAL = "15s"
METRICS_MODES = ("annotations", "podmonitor", "off")


@dataclass(frozen=True, slots=True)
class KubeOptions:
    namespace: str = "default"
    site: str = "kubernetes"
    image: str | None = None  # None: the lock's image tag, from `registry`
    registry: str = ""  # e.g. "registry.example.com/team/"
    queue: str | None = None  # a Kueue LocalQueue
    ttl_after_finished_s: int = TTL_AFTER_FINISHED_S
    image_digest: str | None = None  # "sha256:…" of the pushed image: pulled by digest
    checkpoint_claim: str | None = None  # a PVC holding run folders, so a retry resumes
    metrics: str = "annotations"  # how Prometheus finds the pods: annotations | podmonitor | off
    metrics_namespace: str = "monitoring"  # where Prometheus runs: the NetworkPolicy lets it in
    log_format: str = "json"  # TORCHSHIP_LOG_FORMAT in the pods: one JSON object per line


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def dns_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label from a job name: lower case, [a-z0-9-], starts and ends alphanumeric."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    out = "-".join(p for p in out.split("-") if p)[:limit].strip("-")
    return out or "job"


def pvc_volume(job: JobSpec, i: int, path: str) -> tuple[str, str | None]:
    """`pvc://CLAIM[/SUBPATH]` → (claim, subpath). Anything else is refused: no hostPath."""
    if not path.startswith("pvc://") or not path[6:].split("/", 1)[0]:
        raise SpecError(
            job.source,
            f"job.data[{i}].path",
            f"{path!r} is not a PersistentVolumeClaim, and Kubernetes sites never mount host paths",
            "write path = 'pvc://CLAIM' or 'pvc://CLAIM/sub/path' for a Kubernetes site",
        )
    claim, _, sub = path[6:].partition("/")
    return claim, sub or None


def job_labels(job: JobSpec, job_id: str, lock: Lock | None, o: KubeOptions) -> dict[str, str]:
    labels = {LABEL_NAME: dns_name(job.name), LABEL_JOB: job_id, LABEL_SITE: dns_name(o.site)}
    if lock is not None:
        labels[LABEL_LOCK] = lock.short_hash
    if o.queue:
        labels["kueue.x-k8s.io/queue-name"] = o.queue
    return labels


def object_name(job: JobSpec, job_id: str) -> str:
    return f"{dns_name(job.name, 40)}-{job_id[-8:].lower()}"


def _command(job: JobSpec, job_id: str, rendezvous: list[str] | None = None) -> list[str]:
    argv = (  # the image's python; several nodes: the rendezvous through node 0's DNS name
        torchrun_argv("python", job, job_id)
        if rendezvous is None
        else multinode_torchrun_argv("python", job, job_id, rendezvous)
    )
    if job.command is None:
        return [*argv, *workload_argv(job, Path(RUN_MOUNT))]
    return [*argv, "--no-python", *job.command]


def _resources(job: JobSpec) -> dict[str, Any]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if job.cpus:
        requests["cpu"] = limits["cpu"] = f"{job.cpus:g}"
    if job.memory_gib:
        requests["memory"] = limits["memory"] = f"{int(job.memory_gib * 1024)}Mi"
    if job.gpus_per_node:
        limits["nvidia.com/gpu"] = str(job.gpus_per_node)  # a string quantity, as the API wants
    return {"limits": limits, "requests": requests}


def run_volume(name: str, claim: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run folder (summary, metrics, checkpoints): an emptyDir, gone with the pod; or the
    site's checkpoint claim, one sub-folder per job, so a restarted pod resumes from its last
    checkpoint (several nodes need a ReadWriteMany claim)."""
    mount: dict[str, Any] = {"name": "run", "mountPath": RUN_MOUNT}
    if claim is None:
        return {"name": "run", "emptyDir": {}}, mount
    mount["subPath"] = name
    return {"name": "run", "persistentVolumeClaim": {"claimName": claim}}, mount


def pod_spec(
    job: JobSpec,
    job_id: str,
    image: str,
    rendezvous: list[str] | None = None,
    run: tuple[dict[str, Any], dict[str, Any]] | None = None,
    o: KubeOptions | None = None,
) -> dict[str, Any]:
    o = o or KubeOptions()
    volume, run_mount = run or run_volume("", None)
    volumes: list[dict[str, Any]] = [
        {
            "name": "dshm",
            "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_mib(job.memory_gib)}Mi"},
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
        volume,
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        run_mount,
    ]
    for i, d in enumerate(job.data):
        claim, sub = pvc_volume(job, i, d.address("pvc") or d.path)
        name = f"data-{i}"
        volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": d.read_only}}
        )
        mount: dict[str, Any] = {"name": name, "mountPath": d.mount, "readOnly": d.read_only}
        if sub:
            mount["subPath"] = sub
        mounts.append(mount)
    env = {
        JOB_ID_ENV: job_id,
        RUN_DIR_ENV: RUN_MOUNT,
        "PYTHONUNBUFFERED": "1",
        "HOME": "/tmp",
        "USER": "torchship",
        "LOGNAME": "torchship",
        LOG_FORMAT_ENV: o.log_format,
    }
    if o.metrics != "off":  # local rank 0 serves the training series on every pod's IP
        env |= {METRICS_PORT_ENV: str(TRAINING_PORT), METRICS_ADDR_ENV: "0.0.0.0"}
    env |= dict(sorted(job.env.items()))  # the job's own settings win
    container: dict[str, Any] = {
        "name": "train",
        "image": image,
        # Always: the registry checks this pod's pull credentials on every start, so a node's
        # cached copy of a private image is not handed to a pod that may not pull it.
        "imagePullPolicy": "Always",
        "command": _command(job, job_id, rendezvous),
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": _resources(job),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": POD_UID,
            "runAsGroup": POD_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if o.metrics != "off":
        container["ports"] = [
            {"name": METRICS_PORT_NAME, "containerPort": TRAINING_PORT, "protocol": "TCP"}
        ]
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": POD_UID,
            "runAsGroup": POD_UID,
            "fsGroup": POD_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }


def template_meta(labels: dict[str, str], o: KubeOptions) -> dict[str, Any]:
    """A pod template's metadata: the job's labels, and Prometheus' scrape annotations when
    the site finds pods by annotation (the prometheus.io/* convention of Prometheus' own
    example Kubernetes configuration and most Helm charts)."""
    meta: dict[str, Any] = {"labels": labels}
    if o.metrics == "annotations":
        meta["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(TRAINING_PORT),
            "prometheus.io/path": "/metrics",
        }
    return meta


def pod_monitor(meta: dict[str, Any], job_id: str) -> dict[str, Any]:
    """A monitoring.coreos.com/v1 PodMonitor: the Prometheus operator scrapes the job's pods'
    `metrics` port. Its labels are the job's (a Prometheus whose podMonitorSelector is empty,
    or matches app.kubernetes.io/name, picks it up)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {LABEL_JOB: job_id}},
            "podMetricsEndpoints": [
                {"port": METRICS_PORT_NAME, "path": "/metrics", "interval": SCRAPE_INTERVAL}
            ],
        },
    }


def companions(job: JobSpec, job_id: str, meta: dict[str, Any], o: KubeOptions) -> list[Any]:
    """What goes with every job's main object: its NetworkPolicy, and its PodMonitor."""
    scraper = o.metrics_namespace if o.metrics != "off" else None
    out = [network_policy(meta, job_id, job.egress, scraper)]
    if o.metrics == "podmonitor":
        out.append(pod_monitor(meta, job_id))
    return out


def image_for(lock: Lock | None, job: JobSpec, o: KubeOptions) -> str:
    """The lock's tag under the site's registry, `@sha256:…` when the pushed digest is known."""
    if o.image:
        return o.image if not o.image_digest else f"{o.image}@{o.image_digest}"
    if lock is None:
        raise SpecError(
            job.source,
            "job",
            "a Kubernetes site runs the project's image, and there is no torchship.lock",
            "run `torchship lock`, then build and push the image",
        )
    ref = o.registry + image_tag(lock)
    return f"{ref}@{o.image_digest}" if o.image_digest else ref


def network_policy(
    meta: dict[str, Any],
    job_id: str,
    egress: tuple[tuple[str, int | None], ...] = (),
    scraper_namespace: str | None = None,
) -> dict[str, Any]:
    """Only the job's own pods (rendezvous, NCCL: any port between them, as NCCL picks ephemeral
    ones), DNS, and the egress the job declares (`egress = ["CIDR[:PORT]"]`, TCP); in, besides
    the job's pods, Prometheus from `scraper_namespace` to the metrics port and nothing else."""
    ingress: list[dict[str, Any]] = [
        {"from": [{"podSelector": {"matchLabels": {LABEL_JOB: job_id}}}]}
    ]
    if scraper_namespace:
        ingress.append({
            "from": [{"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": scraper_namespace}}}],
            "ports": [{"protocol": "TCP", "port": TRAINING_PORT}],
        })  # fmt: skip
    declared: list[dict[str, Any]] = []
    for cidr, port in egress:
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": cidr}}]}
        if port is not None:
            rule["ports"] = [{"protocol": "TCP", "port": port}]
        declared.append(rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": {LABEL_JOB: job_id}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {LABEL_JOB: job_id}}}]},
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                *declared,
            ],
        },
    }
