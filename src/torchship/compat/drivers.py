"""What the target's NVIDIA driver allows a CUDA build (part of the resolver, pure): the CUDA
major's driver floor, the toolkit's driver for PTX JIT, forward compatibility through
cuda-compat on data-center GPUs and the branches NVIDIA supports it on, the last branch that
still drives an old GPU, and a Jetson's JetPack. The reasons for a driver below a floor, the
commonest, are formatted once per driver, variant and kind of GPU (below_floor's cache); the
rarer ones (PTX JIT, Jetson, a driver too new) on each call."""

from __future__ import annotations

from functools import lru_cache

from torchship.compat.archs import CC, TEGRA, driver_str
from torchship.compat.archs import Version as NumVersion
from torchship.compat.codes import (
    DRIVER_TOO_NEW,
    DRIVER_TOO_OLD,
    DRIVER_TOO_OLD_FOR_PTX,
    FORWARD_COMPAT_ONLY,
)
from torchship.compat.matrix import Matrix, Variant
from torchship.compat.request import Request


@lru_cache(maxsize=4096)
def driver_text(v: NumVersion) -> str:
    """driver_str, once per driver version: reasons and warnings print a few over and over."""
    return driver_str(v)


Kinds = tuple[tuple[str, bool, bool], ...]  # per GPU: label, cuda-compat serves it, GeForce


def gpu_kinds(req: Request) -> Kinds:
    """What the driver's reasons say of the request's GPUs."""
    return tuple([(t.label, t.gpu is not None and t.gpu.forward_compat, t.is_geforce)
                  for t in req.gpus])  # fmt: skip


def check_driver(
    req: Request, m: Matrix, v: Variant, ptx: bool, too_new: str | None, kinds: Kinds
) -> tuple[list[tuple[str, str]], bool]:
    """`kinds`: gpu_kinds(req), worked out by the caller once per request."""
    assert v.cuda is not None
    driver = req.driver
    if driver is None:
        return [], False
    if too_new:
        return [(DRIVER_TOO_NEW, too_new)], False
    if req.gpus and all(t.cc in TEGRA for t in req.gpus):
        return _check_jetson_driver(v, driver), False
    floor = m.driver_floor(v.cuda[0])
    if floor is not None and driver >= floor:
        if ptx:
            needed = m.toolkit_driver(v.cuda)
            if needed is not None and driver < needed:
                return [
                    (
                        DRIVER_TOO_OLD_FOR_PTX,
                        f"a GPU needs PTX JIT from {v.name}, which needs driver ≥ "
                        f"{driver_text(needed)} (CUDA {v.cuda_str} toolkit driver); "
                        f"target has {driver_text(driver)}",
                    )
                ], False
        return [], False
    found, fc = below_floor(m, v.name, v.cuda, driver, kinds, req.allow_forward_compat)
    return list(found), fc


@lru_cache(maxsize=4096)
def below_floor(
    m: Matrix, name: str, cuda: NumVersion, driver: NumVersion, gpus: Kinds,
    allow_forward_compat: bool,
) -> tuple[tuple[tuple[str, str], ...], bool]:  # fmt: skip
    """check_driver for a driver below the floor of the variant `name` (of CUDA `cuda`):
    per variant, driver and the GPUs' labels and kinds (`gpus`: each one's label, whether
    cuda-compat serves it, whether it is a GeForce), formatted once rather than per build
    judged."""
    floor = m.driver_floor(cuda[0])
    need = driver_text(floor) if floor else "?"
    base = f"{name} needs driver ≥ {need} (CUDA {cuda[0]}.x); target has {driver_text(driver)}"
    ineligible = [(label, geforce) for label, fc, geforce in gpus if not fc]
    if gpus and not ineligible:
        unsupported = _compat_unsupported(m, cuda, driver)
        if unsupported:
            return ((DRIVER_TOO_OLD, f"{base}; {unsupported}"),), False
        fc = (
            f"{base}: runs only with the cuda-compat-{cuda[0]}-{cuda[1]} package "
            "(forward compatibility, data-center GPUs)"
        )
        if allow_forward_compat:
            return (), True
        return ((FORWARD_COMPAT_ONLY, fc),), True
    if ineligible:
        names = ", ".join(label for label, _ in ineligible)
        kind = "GeForce" if any(geforce for _, geforce in ineligible) else "non-data-center"
        base += f"; forward compatibility is not available on {kind} GPUs ({names})"
    return ((DRIVER_TOO_OLD, base),), False


@lru_cache(maxsize=16)
def lowest_ceiling(m: Matrix) -> float:
    """The oldest last driver branch of any GPU (no driver at or below it is too new)."""
    return min((b for _, b in m.driver_ceilings), default=float("inf"))


@lru_cache(maxsize=1024)
def ceiling(m: Matrix, cc: CC) -> int | None:
    """m.driver_ceiling, once per GPU kind."""
    return m.driver_ceiling(cc)


def too_new_for(req: Request, m: Matrix, driver: NumVersion | None) -> str | None:
    """A GPU that this driver no longer supports (a V100 under R590): no build runs."""
    if driver is None or not req.gpus or driver[0] <= lowest_ceiling(m):
        return None
    for t in req.gpus:
        if t.cc in TEGRA:
            continue
        last = ceiling(m, t.cc)
        if last is not None and driver[0] > last:
            return (
                f"{t.display} is supported up to the R{last} driver branch; driver "
                f"{driver_text(driver)} ignores it (install an R{last} driver)"
            )
    return None


def _check_jetson_driver(v: Variant, driver: NumVersion) -> list[tuple[str, str]]:
    """A Jetson's driver number is its board support package's (540.4.0 on JetPack 6), not a
    desktop branch: JetPack 7 (R38+, driver 580 on) brings CUDA 13, earlier ones CUDA 12."""
    assert v.cuda is not None
    cuda_major = 13 if driver[0] >= 580 else 12
    if v.cuda[0] <= cuda_major:
        return []
    return [
        (
            DRIVER_TOO_OLD,
            f"{v.name} needs CUDA {v.cuda[0]}: a Jetson with driver {driver_text(driver)} "
            f"(JetPack 6 or older) has CUDA {cuda_major}; JetPack 7 brings CUDA 13",
        )
    ]


def _compat_unsupported(m: Matrix, cuda: NumVersion, driver: NumVersion) -> str | None:
    """Why NVIDIA does not support the cuda-compat package of CUDA `cuda` on the driver's
    branch (forward-compatibility table, per branch), or None."""
    if not m.compat_branches:
        return None
    package = f"cuda-compat-{cuda[0]}-{cuda[1]}"
    found = m.compat_branch(driver[0])
    if found is None:
        ok = [f"R{b}" for b, _, cudas in m.compat_branches if cuda[:2] in cudas]
        return (
            f"{package} does not support driver branch R{driver[0]} (NVIDIA supports it on "
            f"{', '.join(ok) or 'no branch'}; feature branches and others are not)"
        )
    kind, cudas = found
    if cuda[:2] not in cudas:
        return f"{package} is not supported on the R{driver[0]} {kind} branch"
    return None


def min_driver_for(m: Matrix, req: Request, v: Variant, ptx: bool) -> NumVersion | None:
    if v.cuda is None:
        return None
    floor = m.driver_floor(v.cuda[0])
    if ptx:
        floor = max(floor or (0,), m.toolkit_driver(v.cuda) or (0,))
    for t in req.gpus:
        if t.gpu is not None and t.gpu.min_driver is not None:
            floor = max(floor or (0,), t.gpu.min_driver)
    return floor
