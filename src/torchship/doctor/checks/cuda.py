"""CUDA runtime layer: is torch a CUDA build at all?"""

from __future__ import annotations

from torchship.compat.platforms import LINUX_AARCH64, WINDOWS_X86_64
from torchship.doctor.checks.base import (
    ERROR,
    INFO,
    MEDIUM,
    WARNING,
    Check,
    Context,
    Finding,
    evidence,
    inferred,
    targets,
)
from torchship.doctor.facts import Facts, platform_of


def cpu_only_build(ctx: Context) -> list[Finding]:
    """A CPU build is an error only where GPUs are here and the build is known to be CPU."""
    f = ctx.facts
    if not f.torch or f.build != "cpu":
        return []
    nvcc = f" (the host's nvcc {f.host_nvcc} is not used by torch)" if f.host_nvcc else ""
    why = evidence(f, "torch", "torch_build", "gpus")
    nvidia = targets(ctx)  # GPUs CUDA could use: an Intel or AMD display adapter is not one
    if inferred(f, "torch_build"):
        return [
            Finding(
                "cpu-only-build",
                WARNING if nvidia else INFO,
                f"torch {f.torch} is probably a CPU-only build ({f.sources['torch_build']})"
                + (_why_cpu(ctx) if nvidia else ""),
                "check with `python -c 'import torch; print(torch.__version__, "
                "torch.version.cuda)'`",
                evidence=why,
                confidence=MEDIUM,
            )
        ]
    if nvidia:
        return [
            Finding(
                "cpu-only-build",
                ERROR,
                f"torch {f.torch} is a CPU-only build; the {len(nvidia)} NVIDIA GPU(s) here are "
                f"unused{nvcc}{_why_cpu(ctx)}",
                "install the CUDA build `torchship resolve` chooses for this GPU"
                + (f" (--platform {_platform(f)})" if _platform(f) else ""),
                evidence=why,
            )
        ]
    return [
        Finding(
            "cpu-only-build",
            INFO,
            f"torch {f.torch} is a CPU-only build: it uses no CUDA{nvcc}",
            "nothing to do on a machine without GPUs",
            evidence=why,
        )
    ]


def _platform(f: Facts) -> str:
    """The platform torchship resolves for, where the facts say it ("" when they do not)."""
    os_name = platform_of(f)
    if os_name == "windows":
        return WINDOWS_X86_64
    return LINUX_AARCH64 if os_name == "linux" and f.arch in ("aarch64", "arm64") else ""


def _why_cpu(ctx: Context) -> str:
    """The usual cause, where the platform has one: PyPI's build of this torch there is the
    CPU one (every Windows wheel; Linux aarch64 wheels before torch 2.11), from the matrix."""
    f = ctx.facts
    platform = _platform(f)
    base = ctx.matrix.release((f.torch or "").split("+", 1)[0])
    view = base.on(platform) if base is not None and platform else None
    if view is None or view.pypi_default != "cpu":
        return ""
    if platform == WINDOWS_X86_64:
        return (
            "; PyPI's Windows wheels are CPU builds: CUDA builds for Windows come from "
            "https://download.pytorch.org/whl/cuXYZ"
        )
    return (
        "; PyPI's Linux aarch64 wheels are CPU builds before torch 2.11 (what `pip "
        "install torch` gives on GH200/GB200): use torch ≥ 2.11 from PyPI or a CUDA "
        "build from https://download.pytorch.org/whl/cuXYZ"
    )


CHECKS = (Check(("cpu-only-build",), "cuda", "facts", cpu_only_build),)
