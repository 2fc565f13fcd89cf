"""Hardware layer: can this process see the GPUs at all (visibility, containers, MIG)?"""

from __future__ import annotations

from torchship.doctor.checks.base import (
    ERROR,
    MEDIUM,
    WARNING,
    Check,
    Context,
    Finding,
    evidence,
)
from torchship.doctor.checks.driver import too_old

_CONTAINER_FIX = (
    "start it with GPU access: --gpus all (docker), --device nvidia.com/gpu=all (podman, CDI), "
    "or an nvidia.com/gpu resource limit"
)


def no_gpu_visible(ctx: Context) -> list[Finding]:
    f = ctx.facts
    out = []
    cvd = f.env.get("CUDA_VISIBLE_DEVICES")
    if (
        cvd is not None
        and cvd.strip() in ("", "-1", "none", "NoDevFiles")
        and (f.gpus or f.is_cuda_build)
    ):
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU",
                "unset CUDA_VISIBLE_DEVICES or list the GPUs to use (e.g. 0,1)",
                evidence=evidence(f, "env:CUDA_VISIBLE_DEVICES"),
            )
        )
    nvd = f.env.get("NVIDIA_VISIBLE_DEVICES")
    if f.container and nvd is not None and nvd.strip() in ("", "void", "none"):
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"NVIDIA_VISIBLE_DEVICES={nvd!r}: the container runtime gives this container "
                "no GPU",
                "run with --gpus all (docker), a CDI device (podman) or an nvidia.com/gpu limit",
                evidence=evidence(f, "env:NVIDIA_VISIBLE_DEVICES"),
            )
        )
    caps = f.env.get("NVIDIA_DRIVER_CAPABILITIES")
    if caps is not None and not {"compute", "all"} & {c.strip() for c in caps.split(",")}:
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"NVIDIA_DRIVER_CAPABILITIES={caps!r} lacks 'compute': CUDA cannot be used in "
                "this container",
                "set NVIDIA_DRIVER_CAPABILITIES=compute,utility",
                evidence=evidence(f, "env:NVIDIA_DRIVER_CAPABILITIES"),
            )
        )
    probed = f.origin.startswith("probe")
    if (
        f.container
        and probed
        and not f.device_nodes
        and not f.driver
        and (f.is_cuda_build or (ctx.lock and ctx.lock.gpus))
    ):
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"this {f.container} container has no NVIDIA device nodes (/dev/nvidia*) and no "
                "driver",
                _CONTAINER_FIX,
                evidence=(f"container = {f.container}", "no /dev/nvidia* device nodes"),
            )
        )
    if f.driver and not f.gpus and probed:
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"driver {f.driver} is loaded but shows no GPU",
                "check `nvidia-smi`; the GPU may have fallen off the bus (dmesg | grep -i xid)",
                evidence=evidence(f, "driver"),
            )
        )
    no_gpu_container = "container-no-gpus" in f.sources and f.cuda_available is False
    if no_gpu_container and not out:
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                "the container was started without GPU access (no --gpus, --runtime=nvidia or "
                "CDI device), and CUDA is not available in it",
                _CONTAINER_FIX,
                evidence=(f.sources["container-no-gpus"], *evidence(f, "cuda_available")),
            )
        )
    if f.is_cuda_build and f.gpus and f.cuda_available is False and not too_old(ctx) and not out:
        out.append(
            Finding(
                "no-gpu-visible",
                WARNING,
                f"torch {f.torch} cannot use the {len(f.gpus)} GPU(s) here "
                "(torch.cuda.is_available() is False), and what was given does not say why",
                "run `torchship doctor` on that machine, or paste the program's error output "
                "(`torchship doctor --report`)",
                evidence=evidence(f, "torch", "gpus", "cuda_available"),
                confidence=MEDIUM,
                fallback=True,
            )
        )
    if not f.driver and not f.container and ctx.lock and ctx.lock.gpus and probed:
        names = ", ".join(g.name for g in ctx.lock.gpus)
        out.append(
            Finding(
                "no-gpu-visible",
                WARNING,
                f"this machine has no NVIDIA driver; the lock targets {names}",
                "run on a target machine, or lock with cuda = 'cpu' for CPU",
            )
        )
    return out


def mig_device_visibility(ctx: Context) -> list[Finding]:
    f = ctx.facts
    mig = [g for g in f.gpus if (g.mig_mode or "").lower() == "enabled"]
    cvd = f.env.get("CUDA_VISIBLE_DEVICES") or ""
    if not mig or "MIG-" in cvd:
        return []
    names = ", ".join(f"GPU {g.index}" for g in mig)
    return [
        Finding(
            "mig-device-visibility",
            WARNING,
            f"MIG is enabled on {names}: a CUDA process sees at most one MIG instance, "
            "and none unless it is named",
            "set CUDA_VISIBLE_DEVICES to MIG UUIDs from `nvidia-smi -L` (MIG-...), one per process",
            evidence=(f.sources.get("mig_mode", f"mig_mode = Enabled ({f.origin})"),),
        )
    ]


CHECKS = (
    Check(("no-gpu-visible",), "hardware", "facts", no_gpu_visible),
    Check(("mig-device-visibility",), "hardware", "facts", mig_device_visibility),
)
