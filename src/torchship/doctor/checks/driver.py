"""Driver layer: is the driver new enough for torch's CUDA (and the lock), forward
compatibility, NVSwitch systems' Fabric Manager."""

from __future__ import annotations

import re

from torchship.doctor.checks.base import (
    ERROR,
    MEDIUM,
    WARNING,
    Check,
    Context,
    Finding,
    driver,
    evidence,
    fitting_build,
    inferred,
    targets,
)
from torchship.versions import driver_str, parse_version

# GPUs that sit on NVSwitch baseboards (HGX/DGX): SXM modules; H100/H800 "80GB HBM3", H200 and
# B200 name no form factor (their PCIe/NVL cards say "PCIe" or "NVL")
_NVSWITCH = re.compile(
    r"SXM|\b(?:H100|H800) 80GB HBM3\b|\bH200(?! NVL)\b|\bB[23]00\b", re.IGNORECASE
)


def too_old(ctx: Context) -> tuple[str, tuple[int, ...]] | None:
    """(what needs it, floor) when the driver is below what torch's CUDA or the lock needs."""
    f, drv = ctx.facts, driver(ctx.facts)
    if drv is None:
        return None
    if f.torch_cuda:
        floor = ctx.matrix.driver_floor(int(f.torch_cuda.split(".")[0]))
        if floor and drv < floor:
            return f"torch {f.torch} (CUDA {f.torch_cuda})", floor
    if ctx.lock and ctx.lock.min_driver:
        floor = parse_version(ctx.lock.min_driver)
        if drv < floor:
            return f"the lock ({ctx.lock.torch}, {ctx.lock.variant})", floor
    return None


def driver_too_old(ctx: Context) -> list[Finding]:
    f = ctx.facts
    hit = too_old(ctx)
    if not hit:
        return []
    gpus = targets(ctx)
    if gpus and all(t.gpu and t.gpu.forward_compat for _, t in gpus):
        fix = (
            "upgrade the driver, or install the cuda-compat package (forward compatibility, "
            "data-center GPUs); or use a build for this driver: `torchship resolve --driver "
            + f"{f.driver} ...`"
        )
    else:
        build = fitting_build(ctx, tuple(t for _, t in gpus))
        fix = "upgrade the driver" + (
            f", or install torch {build}: the newest build that runs on driver {f.driver}"
            if build
            else ""
        )
    guessed = inferred(f, "torch_cuda")
    works = f.cuda_available is True  # positive evidence against: CUDA runs on this driver
    note = (
        " (the build is inferred: the report does not name it)"
        if guessed
        else " — yet CUDA is reported available: forward compatibility (data-center GPUs with "
        "cuda-compat), or facts from different machines"
        if works
        else ""
    )
    return [
        Finding(
            "driver-too-old",
            WARNING if guessed or works else ERROR,
            f"{hit[0]} needs driver ≥ {driver_str(hit[1])}; this machine has {f.driver}{note}",
            fix,
            evidence=evidence(f, "driver", "torch", "torch_cuda", "cuda_available"),
            confidence=MEDIUM if guessed or works else "high",
        )
    ]


def forward_compat_unsupported(ctx: Context) -> list[Finding]:
    f = ctx.facts
    compat = [
        p for p in (*f.loaded_libs, *f.library_path_libs) if "/compat/" in p and "libcuda.so" in p
    ]
    geforce = [t for _, t in targets(ctx) if t.is_geforce]
    if not (compat and geforce):
        return []
    return [
        Finding(
            "forward-compat-unsupported",
            ERROR,
            f"{compat[0]} (CUDA forward compatibility) is in use on a {geforce[0].display}: "
            "forward compatibility works only on data-center GPUs (CUDA error 804)",
            "remove the cuda-compat libraries from LD_LIBRARY_PATH (or use a base image whose "
            "CUDA the driver supports) and upgrade the driver instead",
            evidence=(compat[0], *evidence(f, "gpus")),
        )
    ]


def fabric_manager_missing(ctx: Context) -> list[Finding]:
    f = ctx.facts
    sxm = [g for g in f.gpus if _NVSWITCH.search(g.name)]
    if len(sxm) >= 4 and f.cuda_available is False and not too_old(ctx):
        return [
            Finding(
                "fabric-manager-missing",
                WARNING,
                f"{len(sxm)} SXM GPUs and CUDA is unavailable: NVSwitch systems need the "
                "Fabric Manager",
                "check `systemctl status nvidia-fabricmanager`",
                evidence=evidence(f, "gpus", "cuda_available"),
                confidence=MEDIUM,
            )
        ]
    return []


CHECKS = (
    Check(("driver-too-old",), "driver", "facts", driver_too_old),
    Check(("forward-compat-unsupported",), "driver", "facts", forward_compat_unsupported),
    Check(("fabric-manager-missing",), "driver", "facts", fabric_manager_missing),
)
