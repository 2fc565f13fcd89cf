"""CUDA runtime layer: is torch a CUDA build at all?"""

from __future__ import annotations

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
                + (_why_cpu(f.torch, f.arch, f.os) if nvidia else ""),
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
                f"unused{nvcc}{_why_cpu(f.torch, f.arch, f.os)}",
                "install the CUDA build `torchship resolve` chooses for this GPU"
                + (f" (--platform {_platform(f.arch, f.os)})" if _platform(f.arch, f.os) else ""),
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


def _platform(arch: str | None, os_name: str | None) -> str:
    if os_name and "windows" in os_name.lower():
        return "windows-x86_64"
    if arch in ("aarch64", "arm64") and not (os_name and "mac" in os_name.lower()):
        return "linux-aarch64"
    return ""


def _why_cpu(torch: str, arch: str | None, os_name: str | None) -> str:
    """The usual cause, where the platform has one (tools/research/platforms.md §1–2): PyPI's
    Windows wheels are all CPU builds, and its Linux aarch64 wheels were until torch 2.11."""
    platform = _platform(arch, os_name)
    if platform == "windows-x86_64":
        return (
            "; PyPI's Windows wheels are CPU builds: CUDA builds for Windows come from "
            "https://download.pytorch.org/whl/cuXYZ"
        )
    release = torch.split("+", 1)[0].split(".")
    if platform == "linux-aarch64" and len(release) >= 2:
        try:
            old = (int(release[0]), int(release[1])) < (2, 11)
        except ValueError:
            return ""
        if old:
            return (
                "; PyPI's Linux aarch64 wheels are CPU builds before torch 2.11 (what `pip "
                "install torch` gives on GH200/GB200): use torch ≥ 2.11 from PyPI or a CUDA "
                "build from https://download.pytorch.org/whl/cuXYZ"
            )
    return ""


CHECKS = (Check(("cpu-only-build",), "cuda", "facts", cpu_only_build),)
