"""Judging one build of torch for one request (part of the resolver, pure): kernels for every
GPU (SASS of the same major, or PTX to JIT), the driver (torchship.compat.drivers), what keeps
its release from installing (torchship.compat.install), extension pins. A Judge works out what
depends on the request alone once, and passes over, unformatted, what certainly fails."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from torchship.compat.archs import CC, TEGRA, Arch, kernel_match
from torchship.compat.archs import Version as NumVersion
from torchship.compat.builds import Build, kernel_mask, kernel_table, platform_builds, summarise
from torchship.compat.codes import (
    ARCH_UNSUPPORTED,
    ARCH_UNVERIFIED,
    EXTENSION_UNPAIRED,
    JETSON_INDEX,
    VARIANT_UNVERIFIED,
)
from torchship.compat.drivers import Kinds, check_driver, gpu_kinds, too_new_for
from torchship.compat.extensions import problems as extension_problems
from torchship.compat.gpus import gpu_display
from torchship.compat.install import install_problems
from torchship.compat.matrix import Matrix, Release
from torchship.compat.request import Request


class Verdict(NamedTuple):  # a NamedTuple: made once per build judged, at half the cost
    failures: tuple[tuple[str, str], ...]  # (code, reason), most fundamental first
    forward_compat: bool  # runs only through cuda-compat (data-center GPUs)
    ptx_jit: bool  # some GPU runs only through PTX JIT

    @property
    def ok(self) -> bool:
        return not self.failures


@lru_cache(maxsize=16384)
def no_kernels(label: str, bare: bool, cc: CC, build: str, summary: str) -> str:
    """Why a GPU (`label`; a bare architecture when `bare`) has no kernels in a build (per GPU
    kind and build: formatted once)."""
    display = gpu_display(label, bare, cc)
    why = f"{display} has no kernels in {build} ({summary})"
    if cc in TEGRA:
        why += (
            "; a Jetson runs only code built for exactly its capability: NVIDIA's "
            f"Jetson builds are on {JETSON_INDEX}"
        )
    return why


_OK = Verdict((), False, False)


@lru_cache(maxsize=1024)
def gpu_kernels(m: Matrix, platform: str, cc: CC) -> tuple[tuple[Arch | None, ...], int, int]:
    """A GPU kind's kernel table on the platform, and as bits the builds with kernels for it
    and those running it from SASS (no PTX JIT). Per matrix, platform and capability."""
    table = kernel_table(m, platform, cc)
    sass = sum(1 << i for i, a in enumerate(table) if a is not None and not a.ptx)
    return table, kernel_mask(m, platform, cc), sass


@lru_cache(maxsize=4096)
def floor_bits(m: Matrix, platform: str, driver: NumVersion) -> int:
    """The platform's CUDA builds (as bits) whose driver floor `driver` meets."""
    return sum(bits for f, bits in platform_builds(m, platform).floors if driver >= f)


@lru_cache(maxsize=64)
def plain_bits(m: Matrix, platform: str) -> int:
    """The platform's CUDA builds (as bits) that a GPU running them from SASS, on a driver at
    or above their floor, takes as they are: their arch list is known and they are confirmed
    to exist."""
    return sum(
        1 << b.index
        for b in platform_builds(m, platform).builds
        if not b.v.is_cpu and b.v.archs is not None and not b.v.uncertain
    )


class Judge:
    """Judges the builds of releases for one request: what depends on the request alone (the
    kernel tables of its GPUs, a driver too new for one, whether every GPU is a Jetson) is
    worked out once, what depends on a release once per release."""

    __slots__ = (
        "allowed", "builds", "clean", "kernels", "kinds", "m", "names", "req", "tegra", "too_new"
    )  # fmt: skip

    def __init__(self, req: Request, m: Matrix) -> None:
        self.req = req
        self.m = m
        platform = req.platform
        self.builds = found = platform_builds(m, platform)
        driver = req.driver
        self.too_new = too_new = None if driver is None else too_new_for(req, m, driver)
        # the builds that may fit (bits): those with kernels for every GPU and a driver floor
        # the target's driver meets, unless cuda-compat may stand in for the driver; only to
        # pass over what certainly fails unjudged (fits), never to judge
        allowed = sass = (1 << len(found.builds)) - 1
        tegra = fc = bool(req.gpus)
        kernels = []
        for t in req.gpus:
            table, mask, runs = gpu_kernels(m, platform, t.cc)
            kernels.append(table)
            allowed &= mask
            sass &= runs
            tegra = tegra and t.cc in TEGRA
            fc = fc and t.gpu is not None and t.gpu.forward_compat
        self.kernels = kernels
        self.tegra = tegra
        runs = sass  # the builds judge's driver check lets through as they are
        if driver is not None:
            floors = 0 if too_new or tegra else floor_bits(m, platform, driver)
            runs &= floors
            if not tegra and not (fc and req.allow_forward_compat):
                allowed &= found.cpu | floors  # none when the driver is too new
        self.allowed = allowed
        # the builds that certainly fit when nothing keeps their release from installing:
        # judge answers them at once (the CPU builds, and the plain CUDA builds every GPU runs
        # from SASS on a driver at or above their floor); the rest are judged in full
        self.clean = 0 if req.extension_pins else found.cpu | runs & plain_bits(m, platform)
        self.kinds: Kinds | None = None  # the GPUs as driver reasons say them, when needed
        self.names: str | None = None  # the GPUs as arch reasons list them, when needed

    def displays(self) -> str:
        """The request's GPUs, as reasons list them (worked out on the first that does)."""
        if self.names is None:
            self.names = ", ".join([t.display for t in self.req.gpus])
        return self.names

    def view(self, base: Release) -> tuple[Release, tuple[Build, ...]] | None:
        """`base` as on the request's platform, with its builds; None without wheels there."""
        if self.builds.by_id.get(id(base)) is base:  # one of the matrix's releases
            return self.builds.views[base.torch]
        rel = base.on(self.req.platform)  # a release from outside the matrix: judged as is
        if rel is None:
            return None
        floors = (None if v.cuda is None else self.m.driver_floor(v.cuda[0]) for v in rel.variants)
        return rel, tuple(
            Build(rel, v, rel.local_version(v), -1, f, summarise(v))
            for v, f in zip(rel.variants, floors, strict=True)
        )

    def judge(self, b: Build, install: tuple[tuple[str, str], ...]) -> Verdict:
        """`install`: install_problems(req, m, b.rel), the same for every build of a release."""
        if not install and b.index >= 0 and self.clean >> b.index & 1:
            return _OK
        req, rel, v = self.req, b.rel, b.v
        failures = list(install)
        if req.extension_pins:
            failures += [
                (EXTENSION_UNPAIRED, p.text)
                for p in extension_problems(req.extension_pins, rel, v)
                if p.severity == "error"
            ]
        if v.is_cpu:
            return Verdict(tuple(failures), False, False) if failures else _OK
        if v.archs is None:
            if req.gpus:
                failures.append(
                    (
                        ARCH_UNVERIFIED,
                        f"the arch list of {b.name} is not known, so kernels for "
                        f"{self.displays()} cannot be confirmed",
                    )
                )
            return Verdict(tuple(failures), False, False) if failures else _OK
        ptx = False
        for t, table in zip(req.gpus, self.kernels, strict=True):
            a = table[b.index] if b.index >= 0 else kernel_match(v.archs, t.cc)
            if a is None:
                failures.append(
                    (ARCH_UNSUPPORTED, no_kernels(t.label, t.gpu is None, t.cc, v.name, b.summary))
                )
            elif a.ptx:
                ptx = True
        fc = False
        driver = req.driver
        if driver is not None and not (  # the common case of check_driver, without a call
            not self.too_new and not self.tegra and not ptx
            and b.floor is not None and driver >= b.floor
        ):  # fmt: skip
            if self.kinds is None:
                self.kinds = gpu_kinds(req)
            dfail, fc = check_driver(req, self.m, v, ptx, self.too_new, self.kinds)
            failures += dfail
        if v.uncertain and not failures:
            failures.append((VARIANT_UNVERIFIED, f"{b.name} is not confirmed to exist"))
        if not failures and not fc and not ptx:
            return _OK
        return Verdict(tuple(failures), fc, ptx)

    def fits(self, i: int) -> list[str]:
        """The builds of the matrix's `i`-th release (as on the platform) that fit every
        target, in matrix order; judged as the resolver judges them, but passing over first,
        unformatted, what certainly fails: a release without wheels for the Python or without
        a build holding kernels for every GPU, a build whose driver floor is above the target's
        with no cuda-compat to fall back on."""
        row = self.builds.rows[i]
        if row is None:
            return []
        rel, builds, mask = row
        allowed = self.allowed
        if mask & allowed == 0:
            return []
        req = self.req
        if req.python is not None and req.python not in rel.python:
            return []
        if install_problems(req, self.m, rel):  # no build of the release installs
            return []
        return [b.name for b in builds if allowed >> b.index & 1 and not self.judge(b, ()).failures]
