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
                f"torch {f.torch} is probably a CPU-only build ({f.sources['torch_build']})",
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
                f"unused{nvcc}",
                "install the CUDA build `torchship resolve` chooses for this GPU",
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


CHECKS = (Check(("cpu-only-build",), "cuda", "facts", cpu_only_build),)
