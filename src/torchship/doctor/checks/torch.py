"""torch layer: kernels for these GPUs, device visibility inside the process, /dev/shm, TF32."""

from __future__ import annotations

from torchship.compat.archs import Arch, kernel_match
from torchship.doctor.checks.base import (
    ERROR,
    HIGH,
    INFO,
    MEDIUM,
    SHM_ADVISED,
    SHM_DOCKER_DEFAULT,
    WARNING,
    Check,
    Context,
    Finding,
    arch_span,
    evidence,
    fitting_build,
    inferred,
    targets,
    torch_archs,
)


def _missing_kernels(ctx: Context, archs: tuple[Arch, ...], source: str) -> list[Finding]:
    out = []
    guessed = inferred(ctx.facts, "torch_cuda")
    for g, t in targets(ctx):
        if kernel_match(archs, t.cc) is not None:
            continue
        build = fitting_build(ctx, (t,))
        fix = (
            f"install torch {build}: the newest build with kernels for {t.sm} that this driver runs"
            if build
            else f"no torch build covers {t.sm}; see `torchship resolve --gpu '{t.label}'`"
        )
        note = f" ({source})" if "inferred" in source else ""
        out.append(
            Finding(
                "gpu-arch-unsupported",
                WARNING if guessed else ERROR,
                f"torch {ctx.facts.torch} has no kernels for GPU {g.index} {t.display}: "
                f"built for {arch_span(archs)}{note}",
                fix,
                evidence=evidence(ctx.facts, "torch", "gpus", "torch_cuda"),
                confidence=MEDIUM if guessed else HIGH,
            )
        )
    return out


def gpu_arch_unsupported(ctx: Context) -> list[Finding]:
    archs, source = torch_archs(ctx)
    if not (ctx.facts.is_cuda_build and archs):
        return []
    out = _missing_kernels(ctx, archs, source)
    hit = ctx.hit("gpu-arch-unsupported")
    if not out and hit and hit.signature.id == "no-kernel-image" and targets(ctx):
        out.append(
            Finding(
                "gpu-arch-unsupported",
                ERROR,
                f"CUDA reports 'no kernel image is available' although torch's arch list "
                f"({arch_span(archs)}) covers the GPUs: a custom CUDA extension was not built "
                "for this GPU",
                "rebuild the extension with this GPU in TORCH_CUDA_ARCH_LIST (e.g. "
                "TORCH_CUDA_ARCH_LIST='8.6' pip install --no-build-isolation ...)",
                evidence=(hit.evidence, *evidence(ctx.facts, "torch", "gpus")),
            )
        )
    return out


def cuda_visible_devices_late(ctx: Context) -> list[Finding]:
    f = ctx.facts
    cvd = f.env.get("CUDA_VISIBLE_DEVICES")
    if cvd is None or f.torch_device_count is None or not cvd.strip():
        return []
    wanted = len([d for d in cvd.split(",") if d.strip()])
    if f.torch_device_count <= wanted:
        return []
    return [
        Finding(
            "cuda-visible-devices-late",
            WARNING,
            f"CUDA_VISIBLE_DEVICES lists {wanted} device(s) but torch sees "
            f"{f.torch_device_count}: it was set after CUDA initialised",
            "set CUDA_VISIBLE_DEVICES before the process starts (or before "
            "the first torch.cuda call), not inside the training script",
            evidence=evidence(f, "env:CUDA_VISIBLE_DEVICES", "torch_device_count"),
        )
    ]


def shm_too_small(ctx: Context) -> list[Finding]:
    """A small /dev/shm is a risk (warning); the failure itself is a signature (error)."""
    f = ctx.facts
    size = f.shm_bytes
    if size is None or size >= SHM_ADVISED:
        return []
    mib = f"{size / 2**20:.0f} MiB"
    small = size <= SHM_DOCKER_DEFAULT
    guessed = inferred(f, "shm_bytes")
    return [
        Finding(
            "shm-too-small",
            INFO if guessed else WARNING,
            f"/dev/shm is {mib}"
            + (
                ": DataLoader workers and NCCL's shared-memory transport need more"
                if small
                else ": large batches with several DataLoader workers may not fit"
            ),
            "run the container with --shm-size=16g or --ipc=host "
            "(Kubernetes: a memory-backed emptyDir at /dev/shm)",
            evidence=evidence(f, "shm_bytes"),
            confidence=MEDIUM if guessed else HIGH,
        )
    ]


def tf32_numerics(ctx: Context) -> list[Finding]:
    f = ctx.facts
    ampere = [t for _, t in targets(ctx) if t.cc >= (8, 0)]
    overrides = {
        k: v
        for k, v in f.env.items()
        if k in ("NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
    }
    if overrides:
        return [
            Finding(
                "tf32-numerics",
                WARNING,
                "TF32 is forced by the environment ("
                + ", ".join(f"{k}={v}" for k, v in overrides.items())
                + "): float32 results differ from machines without it",
                "unset it, or set it on every machine",
                evidence=evidence(f, *(f"env:{k}" for k in overrides)),
            )
        ]
    if not ampere or not f.torch or f.build != "cuda":
        return []
    matmul = f.tf32_matmul
    if matmul is None:
        matmul = _torch_before(f.torch, (1, 12))  # TF32 matmul was on by default in 1.7-1.11
    cudnn = f.tf32_cudnn if f.tf32_cudnn is not None else True
    used = [n for n, on in (("matmul", matmul), ("cuDNN convolutions", cudnn)) if on]
    if not used:
        return []
    return [
        Finding(
            "tf32-numerics",
            INFO,
            f"{' and '.join(used)} run in TF32 on "
            f"{ampere[0].display} ({'measured' if f.tf32_matmul is not None else 'torch default'}):"
            " float32 results differ (~1e-3 relative) from pre-Ampere GPUs and CPUs",
            "for bitwise comparisons set torch.backends.cuda.matmul.allow_tf32 = False and "
            "torch.backends.cudnn.allow_tf32 = False on every machine",
            evidence=evidence(f, "torch", "gpus"),
        )
    ]


def _torch_before(version: str, floor: tuple[int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("+", maxsplit=1)[0].split(".")[:2])
    except ValueError:
        return False
    return parts < floor


CHECKS = (
    Check(("gpu-arch-unsupported",), "torch", "facts", gpu_arch_unsupported),
    Check(("cuda-visible-devices-late",), "torch", "machine", cuda_visible_devices_late),
    Check(("shm-too-small",), "torch", "facts", shm_too_small),
    Check(("tf32-numerics",), "torch", "facts", tf32_numerics),
)
