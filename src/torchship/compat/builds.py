"""The matrix as one platform sees it, prepared once per (matrix, platform) for the resolver.

What no request changes is worked out here once, not once per resolution: each release's view
on the platform and its builds, each build's local version, driver floor and short arch list,
and per compute capability which arch entry of each build the driver would load. These are
per matrix, platform and GPU kind (bounded by the matrix: five platforms, a few dozen
capabilities), never per request, so every request gains from them, distinct ones included.
The caches hold the matrix, which hashes by identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from torchship.compat.archs import CC, Arch, kernel_match
from torchship.compat.matrix import Matrix, Release, Variant
from torchship.versions import Version


@dataclass(frozen=True, slots=True, eq=False)
class Build:
    """One build of a release as a platform has it."""

    rel: Release  # the release as on the platform
    v: Variant
    name: str  # the local version: 2.9.1+cu128
    index: int  # its place among the platform's builds: kernel tables are indexed by it
    floor: Version | None  # the driver floor of its CUDA major (None: CPU, or not known)
    summary: str  # its arch list in short, for reasons


@dataclass(frozen=True, slots=True, eq=False)
class PlatformBuilds:
    """Every release of the matrix on one platform: by torch, its view and builds there (None:
    no wheels there); and every build, in index order."""

    views: dict[str, tuple[Release, tuple[Build, ...]] | None]
    builds: tuple[Build, ...]
    masks: dict[str, int]  # by torch: its builds there as bits (1 << index)
    by_id: dict[int, Release]  # the matrix's releases by id (the matrix keeps them alive)
    # per release of the matrix, in its order: the view there, its builds and their bits
    rows: tuple[tuple[Release, tuple[Build, ...], int] | None, ...]
    cpu: int  # the CPU builds, as bits
    floors: tuple[tuple[Version, int], ...]  # each driver floor and the CUDA builds under it


def summarise(v: Variant) -> str:
    """`sm_50…sm_90 + PTX compute_90`, `sm_80…sm_120, no PTX` or `arch list unknown`."""
    if v.archs is None:
        return "arch list unknown"
    sass = [a for a in v.archs if not a.ptx]
    ptx = [a for a in v.archs if a.ptx]
    span = f"{sass[0].token}…{sass[-1].token}" if len(sass) > 1 else (sass[0].token if sass else "")
    return span + (f" + PTX {', '.join(a.token for a in ptx)}" if ptx else ", no PTX")


@lru_cache(maxsize=64)
def platform_builds(m: Matrix, platform: str) -> PlatformBuilds:
    views: dict[str, tuple[Release, tuple[Build, ...]] | None] = {}
    every: list[Build] = []
    for base in m.releases:
        rel = base.on(platform)
        if rel is None:
            views[base.torch] = None
            continue
        builds = []
        for v in rel.variants:
            floor = None if v.cuda is None else m.driver_floor(v.cuda[0])
            b = Build(rel, v, rel.local_version(v), len(every), floor, summarise(v))
            builds.append(b)
            every.append(b)
        views[base.torch] = (rel, tuple(builds))
    masks = {t: sum(1 << b.index for b in view[1]) for t, view in views.items() if view}
    rows = tuple(
        None if (view := views[r.torch]) is None else (*view, masks[r.torch]) for r in m.releases
    )
    floors: dict[Version, int] = {}
    for b in every:
        if b.floor is not None:
            floors[b.floor] = floors.get(b.floor, 0) | 1 << b.index
    cpu = sum(1 << b.index for b in every if b.v.is_cpu)
    by_id = {id(r): r for r in m.releases}
    return PlatformBuilds(views, tuple(every), masks, by_id, rows, cpu, tuple(floors.items()))


@lru_cache(maxsize=1024)
def kernel_table(m: Matrix, platform: str, cc: CC) -> tuple[Arch | None, ...]:
    """Per build of the platform (by index), the arch entry the driver loads on a GPU of
    capability `cc`; None where nothing runs, the build is the CPU one, or its arch list is
    not known."""
    return tuple(
        None if b.v.archs is None or b.v.is_cpu else kernel_match(b.v.archs, cc)
        for b in platform_builds(m, platform).builds
    )


@lru_cache(maxsize=1024)
def kernel_mask(m: Matrix, platform: str, cc: CC) -> int:
    """The builds of the platform with kernels for `cc`, as bits (1 << index)."""
    return sum(1 << i for i, a in enumerate(kernel_table(m, platform, cc)) if a is not None)
