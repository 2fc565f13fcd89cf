"""A run's preflight: the doctor's findings for this machine against the lock, read for the
job at hand, plus the job's own checks (enough GPUs of an accepted model, data present).

A CPU job does not care about the GPU, driver and CUDA layers, nor which CUDA build of the
locked torch is installed; a GPU job cares about all of them. Error findings stop the run
unless the user forces it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torchship.compat.gpus import lookup_gpu
from torchship.compat.matrix import Matrix, load_matrix
from torchship.doctor import diagnose
from torchship.doctor.checks import ERROR, WARNING, Finding
from torchship.doctor.facts import Facts
from torchship.errors import UnknownGPUError
from torchship.lock.model import Lock
from torchship.spec.job import JobSpec

GPU_LAYERS = frozenset({"hardware", "driver", "cuda", "cudnn-nccl"})
# In a container the image (built from the lock) brings CUDA libraries, torch and packages; the
# host contributes only the GPUs and the driver, checked against the lock's driver floor.
IMAGE_LAYERS = frozenset({"cuda", "cudnn-nccl", "torch", "packages", "lock"})
GPU_CODES = frozenset({"gpu-arch-unsupported", "cuda-visible-devices-late", "tf32-numerics"})


def data_path(job: JobSpec, path: str) -> Path:
    """A data path as the local site reads it: relative paths start at the job file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(job.source).resolve().parent / p


def _model(m: Matrix, name: str) -> str | None:
    try:
        t = lookup_gpu(m, name)
    except UnknownGPUError:
        return None
    return t.gpu.name if t.gpu else None


def job_findings(
    job: JobSpec, facts: Facts, m: Matrix, exists: Callable[[Path], bool] = Path.exists
) -> list[Finding]:
    out: list[Finding] = []
    if not facts.torch:
        out.append(
            Finding(
                "torch-missing",
                ERROR,
                "torch is not installed in this environment, so torchrun cannot start the job",
                "install from the lock: `torchship export requirements -o r.txt && "
                "pip install --require-hashes -r r.txt`",
                "job",
            )
        )
    if job.gpus_per_node > len(facts.gpus):
        out.append(
            Finding(
                "not-enough-gpus",
                ERROR,
                f"{job.name} asks for {job.gpus_per_node} GPU(s); this machine shows "
                f"{len(facts.gpus)}",
                "lower gpus_per_node, or run it on a site with more GPUs",
                "job",
            )
        )
    if job.gpu_models and job.gpus_per_node:
        accepted = {_model(m, x) or x for x in job.gpu_models}
        used = facts.gpus[: job.gpus_per_node]
        wrong = sorted({g.name for g in used if (_model(m, g.name) or g.name) not in accepted})
        if wrong:
            out.append(
                Finding(
                    "gpu-model-not-accepted",
                    ERROR,
                    f"{job.name} accepts {', '.join(job.gpu_models)}; this machine has "
                    f"{', '.join(wrong)}",
                    "add the model to gpu_models, or run it on a site that has one",
                    "job",
                )
            )
    for i, d in enumerate(job.data):
        path = d.address("path")
        if path is None or not exists(data_path(job, path)):
            what = f"path {path}" if path else f"{d.path} (no host path among its addresses)"
            out.append(
                Finding(
                    "data-missing",
                    ERROR,
                    f"job.data[{i}].{what} does not exist on this machine",
                    "fix the path, or run the job on the site that holds the data",
                    "job",
                )
            )
    return out


def preflight(
    job: JobSpec,
    lock: Lock | None,
    facts: Facts,
    matrix: Matrix | None = None,
    exists: Callable[[Path], bool] = Path.exists,
    containers: bool = False,
) -> list[Finding]:
    """`containers`: the site runs the job in the project's image, not in this environment."""
    m = matrix or load_matrix()
    cpu = job.gpus_per_node == 0
    found = diagnose(facts, lock, matrix=m, cpu_job=cpu)
    if cpu:
        found = [f for f in found if f.layer not in GPU_LAYERS and f.code not in GPU_CODES]
    if containers:
        found = [f for f in found if f.layer not in IMAGE_LAYERS]
    job_found = job_findings(job, facts, m, exists)
    found += [f for f in job_found if not (containers and f.code == "torch-missing")]
    if lock is None:
        found.append(
            Finding(
                "no-lock",
                WARNING,
                f"no torchship.lock next to {job.source} or above it: the environment is "
                "not checked against a lock",
                "run `torchship lock` in the project folder",
                "lock",
            )
        )
    return found


def blocking(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]
