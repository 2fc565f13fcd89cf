"""Facts every site shares, stated once, below every backend: where torchship keeps its files,
the run folder's layout, the paths a container sees, the ports, the job's environment names,
the /dev/shm sizing rule and the label prefixes.

Backends (torchship.backends.*), Kubernetes rendering (torchship.k8s), the launch arguments
(torchship.launch), the supervisor, the monitor and the workload import these; this module
imports nothing of torchship, so anything may import it. Changing a value here changes what
every site renders: the golden files (tests/golden) say so at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# --- where torchship keeps its files -------------------------------------------------------

HOME_ENV = "TORCHSHIP_HOME"  # the data dir, when set (jobs.db, runs/, sites.toml, clusters.json)


def data_dir() -> Path:
    """$TORCHSHIP_HOME when set, else the user's data dir (platformdirs)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home)
    from platformdirs import user_data_dir

    return Path(user_data_dir("torchship", appauthor=False))


# --- the run folder: <data dir>/runs/<job id>/ on the machine that started the job ---------

RUNS = "runs"
LOG = "log"  # everything the job printed (the supervisor sends it there)
REQUEST_FILE = "request.json"  # the plan, as applied
SUPERVISOR_FILE = "supervisor.json"  # the supervisor's pid and start: written when it starts
EXIT_FILE = "exit.json"  # how the job ended, written atomically by its supervisor
SUMMARY_FILE = "summary.json"  # the reference workload's summary
METRICS_FILE = "metrics.jsonl"  # the reference workload's steps, one JSON line each
GPU_FILE = "gpus.jsonl"  # the supervisor's GPU samples, one JSON line per GPU per sample
CHECKPOINTS = "checkpoints"  # a job's checkpoints, unless its checkpoint_dir says otherwise


def run_dir(home: Path, job_id: str) -> Path:
    """A job's run folder under the data dir `home`."""
    return home / RUNS / job_id


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a run-folder file, or None when it is missing or not (yet) whole."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- inside a container --------------------------------------------------------------------

RUN_MOUNT = "/torchship/run"  # the job's run folder, as a docker or Kubernetes container sees it
WORKSPACE = "/workspace"  # a command job's folder (docker) and the image's working directory
IMAGE_UID = 1000  # the rendered images' non-root user (the Dockerfile's ARG UID)

# --- ports ---------------------------------------------------------------------------------

# torchrun's static rendezvous on node 0 for several nodes (torch.distributed.run's default
# --master-port, so a hand-run torchrun on the same nodes agrees).
RENDEZVOUS_PORT = 29500
# One node: c10d on the loopback address with a port the OS picks, so several jobs can run on
# one machine and a container without a network works (no hostname lookup).
LOCAL_RENDEZVOUS = "127.0.0.1:0"
# The workload's training metrics, served by local rank 0: beside dcgm-exporter's 9400 and
# torchship's node exporter's 9401, so all three can run on one node.
TRAINING_PORT = 9402

# --- the job's environment -----------------------------------------------------------------

JOB_ID_ENV = "TORCHSHIP_JOB_ID"  # also how the supervisor and the exporter find its processes
RUN_DIR_ENV = "TORCHSHIP_RUN_DIR"
CHECKPOINT_DIR_ENV = "TORCHSHIP_CHECKPOINT_DIR"
METRICS_PORT_ENV = "TORCHSHIP_METRICS_PORT"  # set: local rank 0 serves training metrics there
METRICS_ADDR_ENV = "TORCHSHIP_METRICS_ADDR"  # the address it binds (default 127.0.0.1)
LOG_FORMAT_ENV = "TORCHSHIP_LOG_FORMAT"  # "json": one JSON object per log line

# --- /dev/shm ------------------------------------------------------------------------------

SHM_DEFAULT_MIB = 8192  # a job that gives no memory_gib
SHM_MIN_MIB = 1024
SHM_MAX_MIB = 16384


def shm_mib(memory_gib: float | None) -> int:
    """/dev/shm for a job, in MiB: half its memory, 1–16 GiB (8 GiB when it says none).
    DataLoader workers pass batches through it and NCCL its buffers; the engines' 64 MB default
    breaks both ("bus error", NCCL "unhandled system error"). A docker site gives it in whole
    GiB (`--shm-size=Ng`, rounded down), Kubernetes as a memory emptyDir's sizeLimit."""
    if not memory_gib:
        return SHM_DEFAULT_MIB
    return int(max(SHM_MIN_MIB, min(SHM_MAX_MIB, memory_gib * 1024 // 2)))


# --- labels --------------------------------------------------------------------------------

# Containers and images: OCI annotation keys are reverse DNS (io.torchship.lock-hash is also
# the label `torchship image build` writes). Kubernetes: label keys are DNS prefix + "/" name.
CONTAINER_LABEL_PREFIX = "io.torchship."
K8S_LABEL_PREFIX = "torchship.io/"
JOB_ID_LABEL = "job-id"
LOCK_HASH_LABEL = "lock-hash"
SITE_LABEL = "site"
