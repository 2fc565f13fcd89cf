"""A stand-in for SkyPilot's `sky` CLI where SkyPilot and a cloud are absent: the subset
torchship calls (launch, queue -o json, cancel, down), with SkyPilot 0.14's flags, output
shapes and exit codes (read from its source: sky/client/cli/command.py,
sky/schemas/api/responses.py ClusterJobRecord, sky/exceptions.py JobExitCode).

The "cluster" is this machine: `launch` starts a detached skylet process that runs the task's
`run` script once per node (SKYPILOT_NUM_NODES, SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS set as
SkyPilot sets them, every node on 127.0.0.1), so the script and its torchrun rendezvous really
run. Like SkyPilot, the job outlives the `sky launch` client, and `--down` removes the
cluster (and its job table) once the job ends. State lives in $FAKE_SKY_HOME.

A real cluster has addresses of its own; these all share 127.0.0.1, so each fake cluster's
script gets a free port in place of its fixed --master-port: the clusters of concurrent test
runs would otherwise meet on one rendezvous port.

    FAKE_SKY_PROVISION_S   seconds launch spends "provisioning" (default 0.2)
    FAKE_SKY_DOWN_AFTER_S  seconds after the job ends before --down removes the cluster (0.5)
    FAKE_SKY_FAIL          "provision": launch fails before any cluster exists (exit 1)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HOME = Path(os.environ.get("FAKE_SKY_HOME", "/tmp/fake-sky"))
TERMINAL = {"SUCCEEDED", "FAILED", "FAILED_SETUP", "CANCELLED"}
EXIT = {"SUCCEEDED": 0, "FAILED": 100, "FAILED_SETUP": 100, "CANCELLED": 103}


def cluster_file(name: str) -> Path:
    return HOME / "clusters" / f"{name}.json"


def load(name: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(cluster_file(name).read_text())
    except (OSError, ValueError):
        return None
    return data


def save(c: dict[str, Any]) -> None:
    path = cluster_file(c["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(c))
    os.replace(tmp, path)


def set_job(name: str, **fields: Any) -> None:
    c = load(name)
    if c is not None:
        c["jobs"][-1].update(fields)
        save(c)


def launch(a: argparse.Namespace) -> int:
    task = yaml.safe_load(Path(a.entrypoint).read_text())
    name = a.cluster
    print(f"Considered resources (1 node): {task.get('resources')}", flush=True)
    print(f"Launching a new cluster '{name}'. Proceed? [Y/n]: Y", flush=True)
    time.sleep(float(os.environ.get("FAKE_SKY_PROVISION_S", "0.2")))
    if os.environ.get("FAKE_SKY_FAIL") == "provision":
        print("sky.exceptions.ResourcesUnavailableError: Failed to provision all possible "
              "launchable resources.", file=sys.stderr, flush=True)  # fmt: skip
        return 1
    log = HOME / f"{name}.job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    job = {"job_id": 1, "job_name": task.get("name", "sky-cmd"), "username": "user",
           "user_hash": "abcd1234", "submitted_at": time.time(), "start_at": None,
           "end_at": None, "resources": "1x[CPU:1+]", "status": "PENDING",
           "log_path": str(log), "metadata": {}, "links": {}}  # fmt: skip
    save({"name": name, "status": "UP", "to_down": a.down, "jobs": [job], "skylet": None})
    print(f"✓ Cluster launched: {name}.", flush=True)
    with open(log, "ab") as out:
        skylet = subprocess.Popen([sys.executable, __file__, "_skylet", name, a.entrypoint],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    c = load(name) or {}
    c["skylet"] = skylet.pid
    save(c)
    print(f"⚙︎ Job submitted, ID: 1\n├── Waiting for task resources on {task.get('num_nodes', 1)} "
          "node.", flush=True)  # fmt: skip
    if a.detach_run:
        return 0
    return tail(name, log)


def tail(name: str, log: Path) -> int:
    """Stream the job's log until it ends; exit as `sky logs --follow` does."""
    with open(log, encoding="utf-8", errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                print(line, end="", flush=True)
                continue
            c = load(name)
            status = c["jobs"][-1]["status"] if c else "FAILED"
            if status in TERMINAL:
                sys.stdout.write(f.read())
                print(f"✓ Job finished (status: {status}).", flush=True)
                return EXIT[status]
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def skylet(name: str, entrypoint: str) -> int:
    """Run the task on every "node" of this cluster, record how it ended, --down after."""
    task = yaml.safe_load(Path(entrypoint).read_text())
    n = int(task.get("num_nodes") or 1)
    env = {**os.environ, **{k: str(v) for k, v in (task.get("envs") or {}).items()},
           "SKYPILOT_NUM_NODES": str(n), "SKYPILOT_NODE_IPS": "\n".join(["127.0.0.1"] * n),
           "SKYPILOT_TASK_ID": f"sky-{name}-1", "GLOO_SOCKET_IFNAME": "lo"}  # fmt: skip
    set_job(name, status="RUNNING", start_at=time.time())
    run = re.sub(r"--master-port=\d+", f"--master-port={free_port()}", task["run"])
    nodes = [subprocess.Popen(["bash", "-c", run], start_new_session=True,
                              env={**env, "SKYPILOT_NODE_RANK": str(rank)})
             for rank in range(n)]  # fmt: skip
    cancelled: list[int] = []

    def on_term(signum: int, _frame: object) -> None:
        cancelled.append(signum)
        for p in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    codes = [p.wait() for p in nodes]
    status = "CANCELLED" if cancelled else ("SUCCEEDED" if not any(codes) else "FAILED")
    print(f"Job {status} (node exit codes {codes})", flush=True)
    set_job(name, status=status, end_at=time.time())
    c = load(name)
    if c and c.get("to_down"):
        time.sleep(float(os.environ.get("FAKE_SKY_DOWN_AFTER_S", "0.5")))
        cluster_file(name).unlink(missing_ok=True)
    return 0


def queue(a: argparse.Namespace) -> int:
    records = {}
    print("Fetching job queue for: " + ", ".join(a.clusters))
    for name in a.clusters:
        c = load(name)
        if c is None:
            print(f"Failed to get the job queue for cluster '{name}'.\n  sky.exceptions."
                  f"ClusterDoesNotExist: Cluster '{name}' does not exist.")  # fmt: skip
            continue
        records[name] = c["jobs"]
    if a.output == "json":
        print(json.dumps(records, indent=2))
    return 0


def cancel(a: argparse.Namespace) -> int:
    c = load(a.cluster)
    if c is None:
        print(f"Usage: sky cancel [OPTIONS] CLUSTER [JOBS]...\n\nError: Cluster '{a.cluster}' "
              "does not exist.", file=sys.stderr)  # fmt: skip
        return 2
    if c["jobs"][-1]["status"] not in TERMINAL and c.get("skylet"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(c["skylet"], signal.SIGTERM)
        deadline = time.time() + 30
        while time.time() < deadline and (load(a.cluster) or {"jobs": [{"status": "CANCELLED"}]}
                                          )["jobs"][-1]["status"] not in TERMINAL:  # fmt: skip
            time.sleep(0.05)
    print(f"Cancelled job ID(s): 1 on cluster {a.cluster}")
    return 0


def down(a: argparse.Namespace) -> int:
    for name in a.clusters:
        c = load(name)
        if c is None:
            print(f"Cluster(s) not found: {name}.")
            continue
        if c.get("skylet") and c["jobs"][-1]["status"] not in TERMINAL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c["skylet"], signal.SIGKILL)
        cluster_file(name).unlink(missing_ok=True)
        print(f"Terminating cluster {name}...done.")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["_skylet"]:
        return skylet(argv[1], argv[2])
    p = argparse.ArgumentParser(prog="sky")
    sub = p.add_subparsers(dest="command", required=True)
    la = sub.add_parser("launch")
    la.add_argument("entrypoint")
    la.add_argument("-c", "--cluster", required=True)
    la.add_argument("-y", "--yes", action="store_true")
    la.add_argument("--down", action="store_true")
    la.add_argument("-d", "--detach-run", action="store_true")
    q = sub.add_parser("queue")
    q.add_argument("clusters", nargs="*")
    q.add_argument("-o", "--output", choices=("table", "json"), default="table")
    ca = sub.add_parser("cancel")
    ca.add_argument("cluster")
    ca.add_argument("-a", "--all", action="store_true")
    ca.add_argument("-y", "--yes", action="store_true")
    do = sub.add_parser("down")
    do.add_argument("clusters", nargs="+")
    do.add_argument("-y", "--yes", action="store_true")
    a = p.parse_args(argv)
    if a.command in ("launch", "cancel", "down") and not a.yes:
        print("Proceed? [Y/n]: Aborted!", file=sys.stderr)  # no terminal: the prompt fails
        return 1
    return {"launch": launch, "queue": queue, "cancel": cancel, "down": down}[a.command](a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
