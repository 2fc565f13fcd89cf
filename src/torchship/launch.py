"""How a job is launched, whatever the site: torchrun's arguments, the reference workload's
arguments, the environment. Shared by every site that runs torchrun (imports nothing from
them); the names and paths it uses are torchship.conventions'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchship.conventions import (
    CHECKPOINT_DIR_ENV,
    CHECKPOINTS,
    JOB_ID_ENV,
    LOCAL_RENDEZVOUS,
    METRICS_FILE,
    RUN_DIR_ENV,
    SUMMARY_FILE,
)
from torchship.errors import SpecError
from torchship.spec.job import JobSpec
from torchship.workload.config import ArgError, args_from_table


def torchrun_argv(python: str, job: JobSpec, job_id: str) -> list[str]:
    # c10d rendezvous on the loopback address with a free port (":0"): several local jobs can
    # run at once, and it works in a container without a network (no hostname lookup).
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc-per-node={job.processes_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={LOCAL_RENDEZVOUS}",
        f"--rdzv-id={job_id}",
        f"--max-restarts={job.retries}",
    ]


def checkpoint_dir(job: JobSpec, run: Path, here: bool = False) -> Path:
    """Where the job's checkpoints go; unset: the run folder's `checkpoints` (per run).

    `here` (a site on the machine that read the job file: local): checkpoint_dir, a relative
    one resolved against the job file's folder, so a re-run of the same job file resumes.
    Elsewhere an absolute checkpoint_dir is kept (shared by every submission) and a relative
    one lives in the run folder: the job file's folder is not on that site."""
    if here and job.checkpoint_path is not None:
        return job.checkpoint_path
    if job.checkpoint_dir and Path(job.checkpoint_dir).expanduser().is_absolute():
        return Path(job.checkpoint_dir).expanduser()
    return run / (job.checkpoint_dir or CHECKPOINTS)


def workload_argv(job: JobSpec, run: Path, here: bool = False) -> list[str]:
    table: dict[str, Any] = {
        **job.workload_args,
        "checkpoint_dir": str(checkpoint_dir(job, run, here)),
        "summary": str(run / SUMMARY_FILE),
        "metrics": str(run / METRICS_FILE),
    }
    try:
        return ["-m", "torchship.workload", *args_from_table(table)]
    except ArgError as e:
        raise SpecError(job.source, f"job.workload_args.{e.key}", str(e), e.hint) from None


def job_env(job: JobSpec, job_id: str, run: Path, here: bool = False) -> dict[str, str]:
    env = {
        JOB_ID_ENV: job_id,
        RUN_DIR_ENV: str(run),
        CHECKPOINT_DIR_ENV: str(checkpoint_dir(job, run, here)),
        "PYTHONUNBUFFERED": "1",
        # gloo binds to the address the hostname resolves to; a one-node job talks over loopback
        "GLOO_SOCKET_IFNAME": "lo",
    }
    if job.cpus:
        env["OMP_NUM_THREADS"] = str(max(1, int(job.cpus // job.processes_per_node)))
    return {**env, **job.env}


def multinode_torchrun_argv(
    python: str, job: JobSpec, job_id: str, rendezvous: list[str]
) -> list[str]:
    """torchrun's arguments for several nodes: the one-node rendezvous (`--nnodes=1`, c10d on
    loopback) replaced by `rendezvous` (nodes, node rank, master address and port)."""
    argv = [a for a in torchrun_argv(python, job, job_id)
            if not a.startswith(("--nnodes=", "--rdzv-"))]  # fmt: skip
    argv[3:3] = rendezvous  # after `python -m torch.distributed.run`
    return argv
