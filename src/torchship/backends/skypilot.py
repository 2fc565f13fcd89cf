"""The SkyPilot site: a task for a cloud without Kubernetes (pure rendering; launching is not
built yet): the locked image, the accelerators,
the nodes, and autostop with down, so the VMs are released when the job ends.

    resources: {image_id: docker:<image>, accelerators: {A100: 8}, autostop: {idle_minutes, down}}
    num_nodes, envs, run: torchrun with SkyPilot's node rank and head IP

`torchship plan JOB -o DIR` writes it as `<job>.sky.yaml` with the `sky launch` command beside it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from torchship.errors import UsageError
from torchship.image.dockerfile import image_tag
from torchship.launch import multinode_torchrun_argv, workload_argv
from torchship.lock.model import Lock
from torchship.place.sites import Site
from torchship.spec.job import JobSpec

RUN_DIR = "/tmp/torchship-run"  # inside the container SkyPilot starts from image_id
AUTOSTOP_IDLE_MINUTES = 10
MASTER_PORT = 29500


def accelerator(job: JobSpec, site: Site) -> str:
    """The site's GPU model the job accepts (the first such pool)."""
    wanted = set(job.gpu_models)
    for pool in site.gpus:
        if not wanted or pool.model in wanted or pool.model.lower() in {w.lower() for w in wanted}:
            return pool.model
    raise UsageError(f"{site.name} has none of the job's GPU models ({', '.join(job.gpu_models)})",
                     "place it with `torchship plan`, which checks the models first")  # fmt: skip


def sky_task(job: JobSpec, lock: Lock | None, job_id: str, site: Site) -> dict[str, Any]:
    if lock is None:
        raise UsageError(
            f"{job.source}: a SkyPilot site runs the project's image, and there is no lock",
            "run `torchship lock`, then build and push the image",
        )
    image = site.registry + image_tag(lock)
    argv = multinode_torchrun_argv("python", job, job_id, [
        "--nnodes=${SKYPILOT_NUM_NODES}", "--node-rank=${SKYPILOT_NODE_RANK}",
        "--master-addr=${HEAD_IP}", f"--master-port={MASTER_PORT}",
    ])  # fmt: skip
    tail = workload_argv(job, Path(RUN_DIR)) if job.command is None else ["--no-python",
                                                                          *job.command]  # fmt: skip
    # SkyPilot's variables stay unquoted so the shell expands them; everything else is quoted
    command = " ".join(a if "${" in a else shlex.quote(a) for a in [*argv, *tail])
    resources: dict[str, Any] = {
        "image_id": f"docker:{image}",
        "autostop": {"idle_minutes": AUTOSTOP_IDLE_MINUTES, "down": True},
    }
    if job.gpus_per_node:
        resources["accelerators"] = {accelerator(job, site): job.gpus_per_node}
    if site.region:
        resources["region"] = site.region
    if job.cpus:
        resources["cpus"] = f"{job.cpus:g}+"
    if job.memory_gib:
        resources["memory"] = f"{job.memory_gib:g}+"
    envs = {"TORCHSHIP_JOB_ID": job_id, "TORCHSHIP_RUN_DIR": RUN_DIR, "PYTHONUNBUFFERED": "1",
            **job.env}  # fmt: skip
    run = (
        f'set -e\nHEAD_IP=$(echo "$SKYPILOT_NODE_IPS" | head -n1)\nmkdir -p {RUN_DIR}\n{command}\n'
    )
    return {"name": job.name, "resources": resources, "num_nodes": job.nodes, "envs": envs,
            "run": run}  # fmt: skip


def launch_command(task_file: str, cluster: str) -> list[str]:
    """`sky launch` that tears the cluster down when the job ends (--down) and asks nothing."""
    return ["sky", "launch", "--yes", "--down", "--cluster", cluster, task_file]
