"""`torchship init`: write a commented spec; with --detect, this host's driver and GPUs as targets.

Detection never assumes: what was found is written with its source, and what was not found is
written as a comment saying so, so the user sees exactly what the resolver will check.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchship._atomic import write_text_atomic
from torchship.compat.gpus import lookup_gpu
from torchship.compat.matrix import Matrix
from torchship.doctor import probe
from torchship.errors import UnknownGPUError, UsageError
from torchship.spec.load import SPEC_FILE


@dataclass(frozen=True, slots=True)
class Detected:
    driver: probe.Fact | None
    gpus: tuple[str, ...]  # target names: canonical model, else sm_XY
    notes: tuple[str, ...] = field(default=())  # what was found and how, one comment line each


def detect(
    matrix: Matrix,
    driver: Callable[[], probe.Fact | None] = probe.driver_version,
    gpus: Callable[[], list[probe.ProbedGPU]] = probe.gpus,
) -> Detected:
    """This host's driver and GPUs, each named as the matrix knows it, with its source."""
    d = driver()
    notes = [f"driver {d.value} (from {d.source})" if d else "no NVIDIA driver found on this host"]
    names: list[str] = []
    for g in gpus():
        try:
            name = lookup_gpu(matrix, g.name).label
        except UnknownGPUError:
            if g.cc is None:
                notes.append(
                    f"GPU {g.name!r} (from {g.source}) is unknown and has no compute "
                    "capability: add it to targets.gpus by hand"
                )
                continue
            name = "sm_" + g.cc.replace(".", "")
        notes.append(f"GPU {g.name} -> {name} (from {g.source})")
        if name not in names:
            names.append(name)
    if not names:
        notes.append("no NVIDIA GPU found on this host")
    return Detected(d, tuple(names), tuple(notes))


def _quote_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def render_spec(name: str, torch: str, python: str, detected: Detected | None = None) -> str:
    """The commented torchship.toml that `init` writes (pure)."""
    if detected is None:
        targets = (
            '# The oldest NVIDIA driver in your fleet (nvidia-smi shows it), e.g. "580.65.06".\n'
            '# driver = "580.65.06"\n'
            '# GPU models or architectures: "H100", "A100", "RTX 4090", "L4", "sm_90".\n'
            "gpus = []\n"
        )
    else:
        found = "".join(f"# detected: {n}\n" for n in detected.notes)
        driver = (
            f'driver = "{detected.driver.value}"\n'
            if detected.driver
            else '# driver = "580.65.06"  # none detected: set the oldest driver of your fleet\n'
        )
        targets = found + driver + f"gpus = {_quote_list(detected.gpus)}\n"
    return f'''# The environment as code. `torchship lock` resolves it into torchship.lock.
name = "{name}"

# A torch version ("2.9.1") or a PEP 440 range (">=2.7,<2.10"); the newest that fits is chosen.
torch = "{torch}"

# "auto" picks the CUDA build that runs on every target (PyPI's default when it fits);
# or pin one: "12.8", "13.0"; or "cpu".
cuda = "auto"

# The Python the image and the lock are built for; "3.13t" for free-threaded.
python = "{python}"

# Everything else, as PEP 508 requirements. torchvision/torchaudio without a version get the
# release paired with the chosen torch.
packages = [
    # "numpy>=2",
    # "torchvision",
]

[targets]
# What the environment must run on. Nothing is assumed: unset targets are not checked.
{targets}# The oldest glibc in your fleet; torch >= 2.7 wheels need 2.28.
# glibc = "2.31"
# Accept CUDA forward compatibility (cuda-compat) on data-center GPUs with an older driver.
allow_forward_compat = false

[image]
jupyter = false
ssh = false
# Build CUDA extensions (uses a -devel base image).
cuda_extensions = false
# Debian packages for the runtime image.
system_packages = []
'''


def default_python(matrix: Matrix, torch: str) -> str:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    rel = matrix.release(torch)
    if rel is None or here in rel.python:
        return here
    plain = [p for p in rel.python if not p.endswith("t")]
    return plain[-1]


def write_spec(folder: Path, text: str, force: bool) -> Path:
    path = folder / SPEC_FILE
    if path.exists() and not force:
        raise UsageError(f"{path} already exists", "pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
