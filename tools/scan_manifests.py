"""Scanner counts for Kubernetes manifests, side by side.

    python tools/scan_manifests.py [--checkov PATH] NAME=YAML ...

For each file: checkov's Kubernetes checks (failed / passed, failed ids), kubernetes-validate
(strict, 1.33: objects it rejects), and what neither checks: Pod Security "restricted"
violations per pod template, hostPath volumes, NodePort Services, and whether a NetworkPolicy
comes with the pods. checkov does not look inside custom resources (JobSet, PyTorchJob, Volcano
Job), so their pod templates are scanned as batch/v1 Jobs. checkov lives in a venv of its own:
`python -m venv /tmp/ckv && /tmp/ckv/bin/pip install checkov`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

K8S_VERSION = "1.33.0"
CORE_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet",
              "Service", "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding",
              "ClusterRole", "ClusterRoleBinding", "PersistentVolumeClaim"}  # fmt: skip
# Pod Security Standards, restricted: the volume types it allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}  # fmt: skip


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod an object makes, whatever its kind."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    name = f"{kind}/{(obj.get('metadata') or {}).get('name', '?')}"
    if kind == "Pod":
        yield name, spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield name, spec["template"]["spec"]
    elif kind == "CronJob":
        yield name, spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "JobSet":
        for r in spec["replicatedJobs"]:
            yield f"{name}/{r['name']}", r["template"]["spec"]["template"]["spec"]
    elif kind == "PyTorchJob":
        for role, r in spec["pytorchReplicaSpecs"].items():
            yield f"{name}/{role}", r["template"]["spec"]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What Pod Security "restricted" (Kubernetes 1.33) rejects in a pod spec, one code each."""
    out = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if kinds - RESTRICTED_VOLUMES:
            out.append(f"volume:{next(iter(kinds - RESTRICTED_VOLUMES))}")
    containers = [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]
    for c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append("privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append("allowPrivilegeEscalation")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append("capabilities.drop-ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append("capabilities.add")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append("runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append("runAsUser=0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append("seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append("hostPort")
    return out


def as_scannable(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Core objects as they are; a custom resource's pod templates as batch/v1 Jobs: they are
    run-to-completion pods, which checkov (rightly) spares the liveness and readiness probe
    checks that a bare Pod or a Deployment gets."""
    out = []
    for obj in objects:
        if obj.get("kind") in CORE_KINDS:
            out.append(obj)
            continue
        for where, pod in pod_templates(obj):
            name = where.replace("/", "-").lower()
            meta = {"name": name, "namespace": obj.get("metadata", {}).get("namespace", "default")}
            spec = {"template": {"spec": pod}}
            out.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec})
    return out


def checkov(exe: str, objects: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "objects.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        argv = [exe, "--skip-download", "--quiet", "--compact", "--framework", "kubernetes"]
        argv += ["-o", "json", "-f", str(path)]
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    data = json.loads(out.stdout or "{}")
    data = data[0] if isinstance(data, list) else data
    summary = data.get("summary", {})
    failed = [c["check_id"] for c in data.get("results", {}).get("failed_checks", [])]
    return int(summary.get("passed", 0)), int(summary.get("failed", 0)), sorted(failed)


def api_rejections(objects: list[dict[str, Any]]) -> int:
    import kubernetes_validate

    bad = 0
    for obj in objects:
        if obj.get("kind") not in CORE_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError:
            bad += 1
    return bad


def scan(exe: str, path: Path) -> dict[str, Any]:
    objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
    pods = [(w, p) for o in objects for w, p in pod_templates(o)]
    violations = sorted({v for _, p in pods for v in restricted_violations(p)})
    passed, failed, ids = checkov(exe, as_scannable(objects))
    return {
        "checkov_passed": passed,
        "checkov_failed": failed,
        "checkov_ids": ids,
        "api_rejected": api_rejections(objects),
        "pods": len(pods),
        "restricted": violations,
        "host_path": sum(1 for _, p in pods for v in p.get("volumes") or [] if "hostPath" in v),
        "node_port": sum(
            1
            for o in objects
            if o.get("kind") == "Service" and (o.get("spec") or {}).get("type") == "NodePort"
        ),
        "network_policy": any(o.get("kind") == "NetworkPolicy" for o in objects),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--checkov", default=shutil.which("checkov") or "/tmp/ckv/bin/checkov")
    p.add_argument("files", nargs="+", metavar="NAME=YAML")
    args = p.parse_args()
    print("| manifests | checkov failed / passed | failed checks | API rejects (strict) | "
          "pods not restricted: why | hostPath | NodePort | NetworkPolicy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for item in args.files:
        name, _, file = item.partition("=")
        r = scan(args.checkov, Path(file))
        ids = ", ".join(f"{i}" for i in sorted(set(r["checkov_ids"]))) or "—"
        why = ", ".join(r["restricted"]) or "—"
        print(f"| {name} | {r['checkov_failed']} / {r['checkov_passed']} | {ids} | "
              f"{r['api_rejected']} | {why} | {r['host_path']} | {r['node_port']} | "
              f"{'yes' if r['network_policy'] else 'no'} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
