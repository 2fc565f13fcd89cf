"""The resolver: a pure function (request, matrix) -> Resolution that explains itself.

For every torch release the request admits and every build ("variant") of it, the checks below
run in order; a variant that fails any of them is rejected with the first failure's stable code
and every failure's reason. `compatible` lists what installs and runs natively on all targets;
the choice among them is the user's CUDA pin, else PyPI's default build when it is compatible,
else the newest CUDA. Codes are documented in docs/resolver.md; never rename one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, NamedTuple

from packaging.specifiers import SpecifierSet

from torchship.compat.archs import (
    CC,
    TEGRA,
    Arch,
    driver_str,
    kernel_match,
    version_str,
)
from torchship.compat.archs import (
    Version as NumVersion,
)
from torchship.compat.builds import (
    Build,
    kernel_mask,
    kernel_table,
    platform_builds,
    summarise,
)
from torchship.compat.extensions import problems as extension_problems
from torchship.compat.gpus import GPUTarget, gpu_display
from torchship.compat.matrix import (
    PYPI_INDEX,
    PYTORCH_INDEX,
    Companion,
    Matrix,
    Release,
    Variant,
)
from torchship.compat.platforms import INFO, LINUX_X86_64, checked_on, possible
from torchship.compat.request import Request

# Stable rejection codes.
VARIANT_NOT_BUILT = "variant-not-built"
VARIANT_UNVERIFIED = "variant-unverified"
PYTHON_UNAVAILABLE = "python-unavailable"
GLIBC_TOO_OLD = "glibc-too-old"
DOMAIN_LIBRARY_UNAVAILABLE = "domain-library-unavailable"
EXTENSION_UNPAIRED = "extension-unpaired"
ARCH_UNSUPPORTED = "arch-unsupported"
ARCH_UNVERIFIED = "arch-unverified"
DRIVER_TOO_OLD = "driver-too-old"
FORWARD_COMPAT_ONLY = "forward-compat-only"
DRIVER_TOO_OLD_FOR_PTX = "driver-too-old-for-ptx"
CPU_BUILD = "cpu-build"
NOT_REQUESTED = "cuda-not-requested"
PLATFORM_UNAVAILABLE = "platform-unavailable"
DRIVER_TOO_NEW = "driver-too-new"

JETSON_INDEX = "https://pypi.jetson-ai-lab.io"  # NVIDIA's Jetson builds (platforms.md §4)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A build the resolver turned down, with a stable code and the reason in words."""

    variant: str
    code: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"variant": self.variant, "code": self.code, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen build and what follows from it."""

    release: Release
    variant: Variant
    forward_compat: bool
    min_driver: NumVersion | None
    base_image: str
    index_url: str

    @property
    def local_version(self) -> str:
        return self.release.local_version(self.variant)

    def to_json(self) -> dict[str, Any]:
        return _choice_json(self.release, self.variant, self.forward_compat, self.min_driver)


def _choice_json(
    rel: Release, v: Variant, forward_compat: bool, min_driver: NumVersion | None
) -> dict[str, Any]:
    """A chosen build's `detail` in the JSON contract (Choice.to_json, without the Choice)."""
    return _detail_json(_detail_template(rel, v), forward_compat, min_driver)


def _detail_template(rel: Release, v: Variant) -> dict[str, Any]:
    """A build's `detail`, with what depends on the request (min_driver, forward_compat) left
    to _detail_json, and the lists as tuples (a template is shared: never handed out)."""
    return {
        "torch": rel.torch,
        "variant": v.name,
        "cuda": None if v.cuda is None else v.cuda_str,
        "arch_list": v.arch_tokens(),
        "arch_confidence": v.arch_confidence,
        "min_driver": None,
        "cudnn": v.cudnn,
        "nccl": v.nccl,
        "glibc_min": version_str(rel.glibc_min) if rel.manylinux else None,
        "forward_compat": False,
        "pypi_default": v.name == rel.pypi_default,
        "platform": rel.platform,
        "platform_tag": rel.platform_tag or None,
        "macos_min": None if rel.macos_min is None else version_str(rel.macos_min),
        "macos_min_python": tuple((py, version_str(v)) for py, v in rel.macos_min_python),
    }


@lru_cache(maxsize=4096)
def _build_template(b: Build) -> dict[str, Any]:
    """_detail_template of a build of the matrix (per build: a Build hashes by identity)."""
    return _detail_template(b.rel, b.v)


def _detail_json(
    template: dict[str, Any], forward_compat: bool, min_driver: NumVersion | None
) -> dict[str, Any]:
    """The `detail` object from a template: a copy (its keys in the contract's order), with new
    lists and dicts each time (the caller may change them)."""
    d = dict(template)
    d["arch_list"] = list(template["arch_list"])
    d["min_driver"] = None if min_driver is None else _driver_text(min_driver)
    d["forward_compat"] = forward_compat
    d["macos_min_python"] = dict(template["macos_min_python"]) or None
    return d


@lru_cache(maxsize=4096)
def _driver_text(v: NumVersion) -> str:
    """driver_str, once per driver version: reasons and warnings print a few over and over."""
    return driver_str(v)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The resolver's answer for one platform: the build chosen, or every rejection."""

    ok: bool
    compatible: tuple[str, ...]
    chosen: Choice | None
    rejected: tuple[Rejection, ...]
    forward_compatible: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    targets: tuple[GPUTarget, ...] = field(default=())
    request: Request | None = field(default=None, compare=False, repr=False)
    matrix: Matrix | None = field(default=None, compare=False, repr=False)

    @property
    def base_image(self) -> str | None:
        return None if self.chosen is None else self.chosen.base_image

    @property
    def index_url(self) -> str | None:
        return None if self.chosen is None else self.chosen.index_url

    def to_json(self, suggestions: tuple[str, ...] = ()) -> dict[str, Any]:
        """The JSON contract; `suggestions` come from compat.explain (only on failure)."""
        return {
            "ok": self.ok,
            "compatible": list(self.compatible),
            "chosen": None if self.chosen is None else self.chosen.local_version,
            "base_image": self.base_image,
            "index_url": self.index_url,
            "rejected": [r.to_json() for r in self.rejected],
            "forward_compatible": list(self.forward_compatible),
            "detail": None if self.chosen is None else self.chosen.to_json(),
            "targets": [{"gpu": t.label, "cc": f"{t.cc[0]}.{t.cc[1]}"} for t in self.targets],
            "warnings": list(self.warnings),
            "suggestions": list(suggestions),
        }


class _Verdict(NamedTuple):  # a NamedTuple: made once per build judged, at half the cost
    failures: tuple[tuple[str, str], ...]  # (code, reason), most fundamental first
    forward_compat: bool  # runs only through cuda-compat (data-center GPUs)
    ptx_jit: bool  # some GPU runs only through PTX JIT

    @property
    def ok(self) -> bool:
        return not self.failures


def _check_install(req: Request, m: Matrix, rel: Release) -> tuple[tuple[str, str], ...]:
    """What keeps every build of `rel` from installing (the same for each: judged once)."""
    if req.python is None and req.glibc is None and not req.domain_libraries:
        return ()
    out: list[tuple[str, str]] = []
    if req.python is not None and req.python not in rel.python:
        out.append(
            (
                PYTHON_UNAVAILABLE,
                f"torch {rel.torch} has no wheel for Python {req.python} "
                f"(has {', '.join(rel.python)})",
            )
        )
    if req.glibc is not None and rel.manylinux and req.glibc < rel.glibc_min:
        out.append(
            (
                GLIBC_TOO_OLD,
                f"torch {rel.torch} wheels are {rel.manylinux} and need glibc ≥ "
                f"{version_str(rel.glibc_min)}; the target has {version_str(req.glibc)}",
            )
        )
    for lib in req.domain_libraries:
        problem = companion_problem(req, m, rel, lib)
        if problem:
            out.append((DOMAIN_LIBRARY_UNAVAILABLE, problem))
    return tuple(out)


def companions_for(req: Request, m: Matrix, rel: Release, lib: str) -> tuple[Companion, ...]:
    """The releases of `lib` that install beside this torch for the request: they accept the
    torch, match the user's pin, and have a wheel for the Python that Requires-Python admits
    (oldest first)."""
    pin = SpecifierSet(dict(req.domain_pins).get(lib, ""))
    return tuple(
        c
        for c in m.companions_of(lib)
        if not c.yanked
        and c.accepts(rel.version)
        and pin.contains(c.version, prereleases=True)
        and (req.python is None or (c.has_wheel_for(req.python)
                                    and c.runs_on(req.python, req.python_patch)))
    )  # fmt: skip


def companion_problem(req: Request, m: Matrix, rel: Release, lib: str) -> str | None:
    """Why no release of `lib` installs beside torch `rel` for the request, or None."""
    rows = m.companions_of(lib)
    if not rows:  # a matrix without the companions' data: only the exact pairs are known
        pairs = rel.torchvision if lib == "torchvision" else rel.torchaudio
        return None if pairs else f"no {lib} release is paired with torch {rel.torch}"
    if companions_for(req, m, rel, lib):
        return None
    accepting = [c for c in rows if not c.yanked and c.accepts(rel.version)]
    if not accepting:
        return f"no {lib} release accepts torch {rel.torch}"
    pin = dict(req.domain_pins).get(lib, "")
    pinned = [c for c in accepting if SpecifierSet(pin).contains(c.version, prereleases=True)]
    if not pinned:
        wanted = [c for c in rows if SpecifierSet(pin).contains(c.version, prereleases=True)]
        needs = ", ".join(f"{c.version} needs torch {c.torch}" for c in wanted[-3:])
        return f"{lib}{pin} does not install beside torch {rel.torch}" + (
            f" ({needs})" if needs else f" (no {lib} release matches {pin})"
        )
    newest = pinned[-1]
    py = req.python or ""
    if not newest.has_wheel_for(py):
        return (f"{lib} {newest.version} (for torch {rel.torch}) has no wheel for Python {py} "
                f"(has {', '.join(newest.python)})")  # fmt: skip
    return (f"{lib} {newest.version} (for torch {rel.torch}) requires Python "
            f"{newest.requires_python}: {req.python_patch or py} is excluded")  # fmt: skip


@lru_cache(maxsize=16384)
def _no_kernels(label: str, bare: bool, cc: CC, build: str, summary: str) -> str:
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


_Kinds = tuple[tuple[str, bool, bool], ...]  # per GPU: label, cuda-compat serves it, GeForce


def _gpu_kinds(req: Request) -> _Kinds:
    """What the driver's reasons say of the request's GPUs."""
    return tuple([(t.label, t.gpu is not None and t.gpu.forward_compat, t.is_geforce)
                  for t in req.gpus])  # fmt: skip


def _check_driver(
    req: Request, m: Matrix, v: Variant, ptx: bool, too_new: str | None, kinds: _Kinds
) -> tuple[list[tuple[str, str]], bool]:
    """`kinds`: _gpu_kinds(req), worked out by the caller once per request."""
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
                        f"{_driver_text(needed)} (CUDA {v.cuda_str} toolkit driver); "
                        f"target has {_driver_text(driver)}",
                    )
                ], False
        return [], False
    found, fc = _below_floor(m, v.name, v.cuda, driver, kinds, req.allow_forward_compat)
    return list(found), fc


@lru_cache(maxsize=4096)
def _below_floor(
    m: Matrix, name: str, cuda: NumVersion, driver: NumVersion, gpus: _Kinds,
    allow_forward_compat: bool,
) -> tuple[tuple[tuple[str, str], ...], bool]:  # fmt: skip
    """_check_driver for a driver below the floor of the variant `name` (of CUDA `cuda`):
    per variant, driver and the GPUs' labels and kinds (`gpus`: each one's label, whether
    cuda-compat serves it, whether it is a GeForce), formatted once rather than per build
    judged."""
    floor = m.driver_floor(cuda[0])
    need = _driver_text(floor) if floor else "?"
    base = f"{name} needs driver ≥ {need} (CUDA {cuda[0]}.x); target has {_driver_text(driver)}"
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
def _lowest_ceiling(m: Matrix) -> float:
    """The oldest last driver branch of any GPU (no driver at or below it is too new)."""
    return min((b for _, b in m.driver_ceilings), default=float("inf"))


@lru_cache(maxsize=1024)
def _ceiling(m: Matrix, cc: CC) -> int | None:
    """m.driver_ceiling, once per GPU kind."""
    return m.driver_ceiling(cc)


def _too_new(req: Request, m: Matrix, driver: NumVersion | None) -> str | None:
    """A GPU that this driver no longer supports (a V100 under R590): no build runs."""
    if driver is None or not req.gpus or driver[0] <= _lowest_ceiling(m):
        return None
    for t in req.gpus:
        if t.cc in TEGRA:
            continue
        last = _ceiling(m, t.cc)
        if last is not None and driver[0] > last:
            return (
                f"{t.display} is supported up to the R{last} driver branch; driver "
                f"{_driver_text(driver)} ignores it (install an R{last} driver)"
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
            f"{v.name} needs CUDA {v.cuda[0]}: a Jetson with driver {_driver_text(driver)} "
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


_OK = _Verdict((), False, False)


@lru_cache(maxsize=1024)
def _kernels(m: Matrix, platform: str, cc: CC) -> tuple[tuple[Arch | None, ...], int, int]:
    """A GPU kind's kernel table on the platform, and as bits the builds with kernels for it
    and those running it from SASS (no PTX JIT). Per matrix, platform and capability."""
    table = kernel_table(m, platform, cc)
    sass = sum(1 << i for i, a in enumerate(table) if a is not None and not a.ptx)
    return table, kernel_mask(m, platform, cc), sass


@lru_cache(maxsize=4096)
def _floor_bits(m: Matrix, platform: str, driver: NumVersion) -> int:
    """The platform's CUDA builds (as bits) whose driver floor `driver` meets."""
    return sum(bits for f, bits in platform_builds(m, platform).floors if driver >= f)


@lru_cache(maxsize=64)
def _plain(m: Matrix, platform: str) -> int:
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
        self.too_new = too_new = None if driver is None else _too_new(req, m, driver)
        # the builds that may fit (bits): those with kernels for every GPU and a driver floor
        # the target's driver meets, unless cuda-compat may stand in for the driver; only to
        # pass over what certainly fails unjudged (fits), never to judge
        allowed = sass = (1 << len(found.builds)) - 1
        tegra = fc = bool(req.gpus)
        kernels = []
        for t in req.gpus:
            table, mask, runs = _kernels(m, platform, t.cc)
            kernels.append(table)
            allowed &= mask
            sass &= runs
            tegra = tegra and t.cc in TEGRA
            fc = fc and t.gpu is not None and t.gpu.forward_compat
        self.kernels = kernels
        self.tegra = tegra
        runs = sass  # the builds judge's driver check lets through as they are
        if driver is not None:
            floors = 0 if too_new or tegra else _floor_bits(m, platform, driver)
            runs &= floors
            if not tegra and not (fc and req.allow_forward_compat):
                allowed &= found.cpu | floors  # none when the driver is too new
        self.allowed = allowed
        # the builds that certainly fit when nothing keeps their release from installing:
        # judge answers them at once (the CPU builds, and the plain CUDA builds every GPU runs
        # from SASS on a driver at or above their floor); the rest are judged in full
        self.clean = 0 if req.extension_pins else found.cpu | runs & _plain(m, platform)
        self.kinds: _Kinds | None = None  # the GPUs as driver reasons say them, when needed
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

    def judge(self, b: Build, install: tuple[tuple[str, str], ...]) -> _Verdict:
        """`install`: _check_install(req, m, b.rel), the same for every build of a release."""
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
            return _Verdict(tuple(failures), False, False) if failures else _OK
        if v.archs is None:
            if req.gpus:
                failures.append(
                    (
                        ARCH_UNVERIFIED,
                        f"the arch list of {b.name} is not known, so kernels for "
                        f"{self.displays()} cannot be confirmed",
                    )
                )
            return _Verdict(tuple(failures), False, False) if failures else _OK
        ptx = False
        for t, table in zip(req.gpus, self.kernels, strict=True):
            a = table[b.index] if b.index >= 0 else kernel_match(v.archs, t.cc)
            if a is None:
                failures.append(
                    (ARCH_UNSUPPORTED, _no_kernels(t.label, t.gpu is None, t.cc, v.name, b.summary))
                )
            elif a.ptx:
                ptx = True
        fc = False
        driver = req.driver
        if driver is not None and not (  # the common case of _check_driver, without a call
            not self.too_new and not self.tegra and not ptx
            and b.floor is not None and driver >= b.floor
        ):  # fmt: skip
            if self.kinds is None:
                self.kinds = _gpu_kinds(req)
            dfail, fc = _check_driver(req, self.m, v, ptx, self.too_new, self.kinds)
            failures += dfail
        if v.uncertain and not failures:
            failures.append((VARIANT_UNVERIFIED, f"{b.name} is not confirmed to exist"))
        if not failures and not fc and not ptx:
            return _OK
        return _Verdict(tuple(failures), fc, ptx)

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
        if _check_install(req, self.m, rel):  # no build of the release installs
            return []
        return [b.name for b in builds if allowed >> b.index & 1 and not self.judge(b, ()).failures]


def _pinned(req: Request, v: Variant) -> bool:
    pin = req.cuda
    if not INFO[req.platform].nvidia:  # a Mac: its CPU/MPS build, whatever the CUDA pin
        return v.is_cpu
    if pin == "auto" and not req.gpus and req.gpus_elsewhere:
        return True  # no GPU of the fleet is here (a Windows laptop): PyPI's build is chosen
    if pin == "auto":
        return not v.is_cpu
    if pin == "cpu":
        return v.is_cpu
    if v.cuda is None:
        return False
    return v.cuda_str == pin or str(v.cuda[0]) == pin


def _pin_label(pin: str) -> str:
    return "cpu" if pin == "cpu" else "cu" + pin.replace(".", "")


def matching_releases(m: Matrix, torch: SpecifierSet) -> tuple[Release, ...]:
    """The releases a torch specifier admits, newest first (SpecifierSet.contains is slow)."""
    return _matching(m, str(torch))  # its text: cheaper to hash than a new SpecifierSet


@lru_cache(maxsize=4096)
def _matching(m: Matrix, torch: str) -> tuple[Release, ...]:
    spec = SpecifierSet(torch)  # the same set: its text lists every specifier
    return tuple(r for r in reversed(m.releases) if spec.contains(r.version, prereleases=True))


def base_image(m: Matrix, v: Variant, driver: NumVersion | None, python: str | None) -> str:
    """The smallest base that works: `nvidia/cuda:*-base` (the wheels bring their CUDA libs).

    Its CUDA minor is lowered to what the target driver reports, within the same major, so that
    the image's NVIDIA_REQUIRE_CUDA guard does not refuse a GeForce host whose driver is older
    than the wheel's toolkit but new enough by minor-version compatibility (NOTES.md §5.7).
    """
    if v.cuda is None:
        py = (python or "3.12").rstrip("t")
        return m.cpu_image.format(python=py)  # official python images are multi-arch
    return _cuda_base(m, v.cuda[:2], driver)


@lru_cache(maxsize=4096)
def _cuda_base(m: Matrix, cuda: NumVersion, driver: NumVersion | None) -> str:
    """base_image of a CUDA build (per matrix, CUDA major.minor and driver)."""
    want = cuda
    if driver is not None:
        dc = m.driver_cuda(driver)
        if dc is not None and dc[0] == want[0] and dc[:2] < want:
            want = dc[:2]
    img = m.cuda_image(want) or m.cuda_images[-1]
    return img.tag("base")


def _min_driver(m: Matrix, req: Request, v: Variant, ptx: bool) -> NumVersion | None:
    if v.cuda is None:
        return None
    floor = m.driver_floor(v.cuda[0])
    if ptx:
        floor = max(floor or (0,), m.toolkit_driver(v.cuda) or (0,))
    for t in req.gpus:
        if t.gpu is not None and t.gpu.min_driver is not None:
            floor = max(floor or (0,), t.gpu.min_driver)
    return floor


_Fit = tuple[Release, Variant, _Verdict, Build]  # a compatible build, judged


def _choose(req: Request, m: Matrix, ok: list[_Fit]) -> _Fit | None:
    if len(ok) == 1:  # one build fits: the choice is whether the pin admits it
        return ok[0] if _pinned(req, ok[0][1]) else None
    eligible = [c for c in ok if _pinned(req, c[1])]
    if not eligible:
        return None
    first = eligible[0][0]
    if all(c[0] is first for c in eligible):  # one release (an exact torch): no comparing
        same = eligible
    else:
        newest = max(c[0].version for c in eligible)
        same = [c for c in eligible if c[0].version == newest]
    for c in same:
        if c[1].name == c[0].pypi_default:
            return c
    return max(same, key=lambda c: c[1].cuda or (0,))


@lru_cache(maxsize=256)
def _mps_warning(platform: str, macos: NumVersion | None) -> str:
    floor = f" and macOS ≥ {version_str(macos)}" if macos else ""
    return f"{platform}: the CPU build with Apple's MPS backend{floor}; no CUDA"


def _warnings(
    req: Request, rel: Release, v: Variant, verdict: _Verdict, min_driver: NumVersion | None,
    index_url: str,
) -> list[str]:  # fmt: skip
    """The warnings for the chosen build `v` of `rel` (its minimum driver and index given)."""
    out: list[str] = []
    if v.mps:
        out.append(_mps_warning(rel.platform, rel.macos_floor(req.python)))
    if rel.platform.startswith("windows") and not v.is_cpu:
        out.append(
            f"{rel.platform}: PyPI's Windows wheels are CPU builds; {v.name} comes from {index_url}"
        )
    if req.extension_pins:
        out += [
            p.text
            for p in extension_problems(req.extension_pins, rel, v)
            if p.severity == "warning"
        ]
    if v.is_cpu and req.gpus:
        out.append("cuda = 'cpu': the build will not use the target GPUs")
    if not req.gpus and req.gpus_elsewhere and INFO[rel.platform].nvidia:
        out.append(
            f"no GPU target is checked on {rel.platform}: {', '.join(req.gpus_elsewhere)} "
            f"usually run elsewhere in the fleet, so PyPI's build ({v.name}) is chosen here; "
            "to check a GPU here too, add its architecture (sm_90) as a target"
        )
    elif not v.is_cpu and not req.gpus:
        out.append("no GPU targets given: kernels were not checked; add targets.gpus")
    if not v.is_cpu and req.driver is None:
        out.append(
            f"no driver target given: {v.name} needs driver ≥ "
            f"{_driver_text(min_driver or (0,))}; add targets.driver"
        )
    if req.gpus and v.arch_confidence not in ("high", "n/a") and v.archs is not None:
        out.append(
            f"the arch list of {rel.local_version(v)} is {v.arch_confidence}-confidence "
            f"({v.arch_source}); verify with torch.cuda.get_arch_list()"
        )
    if verdict.ptx_jit:
        out.append(
            f"a target runs only through PTX JIT of {rel.local_version(v)}: slow first start"
        )
    if verdict.forward_compat:
        out.append(
            f"{v.name} runs on driver {_driver_text(req.driver or (0,))} only with the "
            f"cuda-compat-{v.cuda_str.replace('.', '-')} package (forward compatibility)"
        )
    for t in req.gpus:
        g = t.gpu
        if g is not None and g.min_driver and req.driver is not None and req.driver < g.min_driver:
            out.append(
                f"{t.display} needs driver ≥ {_driver_text(g.min_driver)}"
                + (" (third-party sources)" if g.min_driver_uncertain else "")
            )
    return out


class _Outcome(NamedTuple):
    """What a resolution finds, before it is made a Resolution or its JSON."""

    compatible: list[str]
    forward_compatible: list[str]
    rejected: list[Any]  # each made by the caller's `reject`
    picked: _Fit | None
    min_driver: NumVersion | None
    base_image: str
    index_url: str
    warnings: list[str]
    judge: Judge
    torch: str  # the text of the request's torch specifier (caches key on it)


def _resolve(
    req: Request, m: Matrix, release: str | None, reject: Callable[[str, str, str], Any]
) -> _Outcome:
    """The resolver proper; `reject(variant, code, reason)` makes each rejection (a Rejection,
    or its JSON without the Rejection)."""
    compatible: list[str] = []
    fwd: list[str] = []
    rejected: list[Any] = []
    ok: list[_Fit] = []
    judge = Judge(req, m)
    torch = str(req.torch)  # as matching_releases, once: compat.explain keys on it too
    views = judge.builds.views  # the matrix's releases (all _matching gives) by torch
    skip_cpu = req.cuda != "cpu" and bool(req.gpus)
    for base in _matching(m, torch):
        view = views[base.torch]
        if view is None:
            rejected.append(reject(*_not_on_platform(req, m, base)))
            continue
        rel, builds = view
        install = _check_install(req, m, rel)
        for b in builds:
            if skip_cpu and b.v.cuda is None:  # a CPU build
                continue
            verdict = judge.judge(b, install)
            if not verdict.failures:
                compatible.append(b.name)
                ok.append((rel, b.v, verdict, b))
                if verdict.forward_compat:
                    fwd.append(b.name)
            else:
                failures = verdict.failures
                reason = failures[0][1] if len(failures) == 1 else "; ".join(r for _, r in failures)
                rejected.append(reject(b.name, failures[0][0], reason))
                if verdict.forward_compat and len(failures) == 1:
                    fwd.append(b.name)  # fits every target once cuda-compat is installed
        if req.cuda != "auto" and not any(_pinned(req, v) for v in rel.variants):
            rejected.append(reject(*_not_built(req, m, rel)))
    picked = _choose(req, m, [c for c in ok if release is None or c[0].torch == release])
    if picked is None:
        return _Outcome(compatible, fwd, rejected, None, None, "", "", [], judge, torch)
    rel, v, verdict, _ = picked
    min_driver = _min_driver(m, req, v, verdict.ptx_jit)
    image = base_image(m, v, req.driver, req.python) if INFO[rel.platform].os == "linux" else ""
    index = PYPI_INDEX if v.name == rel.pypi_default else f"{PYTORCH_INDEX}/{v.name}"
    warnings = _warnings(req, rel, v, verdict, min_driver, index)
    return _Outcome(
        compatible, fwd, rejected, picked, min_driver, image, index, warnings, judge, torch
    )


def resolve(req: Request, m: Matrix, release: str | None = None) -> Resolution:
    """Resolve `req` against the matrix, on `req.platform`. Pure; never raises on an impossible
    request. `release`: choose only among that torch release's builds (a fleet's common one)."""
    out = _resolve(req, m, release, Rejection)
    choice = None
    if out.picked is not None:
        rel, v, verdict, _ = out.picked
        choice = Choice(rel, v, verdict.forward_compat, out.min_driver, out.base_image,
                        out.index_url)  # fmt: skip
    return Resolution(
        ok=choice is not None,
        compatible=tuple(out.compatible),
        chosen=choice,
        rejected=tuple(out.rejected),
        forward_compatible=tuple(out.forward_compatible),
        warnings=tuple(out.warnings),
        targets=req.gpus,
        request=req,
        matrix=m,
    )


def _rejection_json(variant: str, code: str, reason: str) -> dict[str, str]:
    return {"variant": variant, "code": code, "reason": reason}  # as Rejection.to_json


def resolution_json(req: Request, m: Matrix) -> tuple[dict[str, Any], _Outcome]:
    """`resolve(req, m).to_json()` without the Resolution (no suggestions: the caller adds
    them), and what the resolver found, for compat.explain to reuse."""
    out = _resolve(req, m, None, _rejection_json)
    picked = out.picked
    detail = None
    if picked is not None:
        detail = _detail_json(_build_template(picked[3]), picked[2].forward_compat, out.min_driver)
    return {
        "ok": picked is not None,
        "compatible": out.compatible,
        "chosen": None if picked is None else picked[3].name,
        "base_image": None if picked is None else out.base_image,
        "index_url": None if picked is None else out.index_url,
        "rejected": out.rejected,
        "forward_compatible": out.forward_compatible,
        "detail": detail,
        "targets": [{"gpu": t.label, "cc": f"{t.cc[0]}.{t.cc[1]}"} for t in req.gpus],
        "warnings": out.warnings,
        "suggestions": [],
    }, out


@lru_cache(maxsize=64)
def _on_platform(m: Matrix, platform: str) -> tuple[str, ...]:
    """The releases with wheels for `platform`, oldest first."""
    return tuple(r.torch for r in m.releases if r.on(platform) is not None)


def _not_on_platform(req: Request, m: Matrix, rel: Release) -> tuple[str, str, str]:
    have = _on_platform(m, req.platform)
    if not rel.platforms_known:
        why = f"the matrix has not measured torch {rel.torch}'s wheels for {req.platform}"
    elif have:
        why = (
            f"torch {rel.torch} has no wheels for {req.platform} on PyPI "
            f"(it has them for {have[0]}–{have[-1]})"
        )
    else:
        why = f"no torch release has wheels for {req.platform} on PyPI"
    return rel.torch, PLATFORM_UNAVAILABLE, why


def _not_built(req: Request, m: Matrix, rel: Release) -> tuple[str, str, str]:
    label = _pin_label(req.cuda)
    have = ", ".join(v.name for v in rel.variants)
    views = (r.on(rel.platform) for r in m.releases)
    built = [r.torch for r in views if r is not None and any(_pinned(req, v) for v in r.variants)]
    span = (
        f"; CUDA {req.cuda} builds exist for torch {built[0]}–{built[-1]}"
        if built
        else f"; no torch release was built for CUDA {req.cuda}"
    )
    where = "" if rel.platform == LINUX_X86_64 else f" for {rel.platform}"
    return (
        f"{rel.torch}+{label}",
        VARIANT_NOT_BUILT,
        f"torch {rel.torch} has no CUDA {req.cuda} build{where} (it has {have}){span}",
    )


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """One torch release, judged for the request: its best build there, or why none runs."""

    torch: str
    build: str | None  # the build the resolver would pick in this release
    code: str = ""  # why not, when build is None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"torch": self.torch, "ok": self.build is not None, "build": self.build,
                "code": self.code or None, "reason": self.reason or None}  # fmt: skip


def per_release(req: Request, m: Matrix) -> tuple[ReleaseRow, ...]:
    """Each release the request's torch range admits, newest first, with the build the
    resolver picks in it or the reason none runs: the answer to "which torch runs here", one
    row per release rather than one per build."""
    rows = []
    for rel in matching_releases(m, req.torch):
        res = resolve(replace(req, torch=SpecifierSet(f"=={rel.torch}")), m)
        if res.chosen is not None:
            rows.append(ReleaseRow(rel.torch, res.chosen.local_version))
            continue
        view = rel.on(req.platform) or rel
        default = f"{rel.torch}+{view.pypi_default}"  # what `pip install torch` would give
        why = next((r for r in res.rejected if r.variant == default), None)
        why = why or (res.rejected[0] if res.rejected else Rejection(default, "no-build", ""))
        rows.append(ReleaseRow(rel.torch, None, why.code, why.reason))
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class FleetResolution:
    """One answer per platform of the fleet, all on one torch release (the newest that has a
    build running on every platform), so that the lock pins one torch everywhere."""

    platforms: tuple[tuple[str, Resolution], ...]
    torch: str | None  # the release chosen on every platform
    problem: str = ""  # why no release runs on every platform

    @property
    def ok(self) -> bool:
        return self.torch is not None and all(r.ok for _, r in self.platforms)

    @property
    def primary(self) -> Resolution:
        return self.platforms[0][1]

    def on(self, platform: str) -> Resolution | None:
        return next((r for p, r in self.platforms if p == platform), None)

    def to_json(self, suggestions: tuple[str, ...] = ()) -> dict[str, Any]:
        """The primary platform's answer in today's fields, and every platform's beside it."""
        each = [r.to_json() for _, r in self.platforms]  # the primary's made once, not twice
        out = {**each[0], "suggestions": list(suggestions)}
        out["ok"] = self.ok
        out["platform"] = self.platforms[0][0]
        out["platforms"] = [
            {"platform": p, **j, "suggestions": None}
            for (p, _), j in zip(self.platforms, each, strict=True)
        ]
        out["fleet"] = {"torch": self.torch, "problem": self.problem or None}
        return out


def platform_request(req: Request, platform: str) -> Request:
    """The request as one platform of the fleet sees it: the GPUs that are checked there."""
    fleet = req.platforms
    if len(fleet) == 1:  # checked_on for a fleet of one: wherever the GPU can be
        gpus = tuple([t for t in req.gpus if platform in possible(t.gpu)])
    else:
        gpus = tuple([t for t in req.gpus if checked_on(t.gpu, platform, fleet)])
    if platform == req.platform and len(gpus) == len(req.gpus) and not req.gpus_elsewhere:
        return req  # as it is (dataclasses.replace costs a tenth of a resolution)
    elsewhere = tuple(t.label for t in req.gpus if t not in gpus)
    return replace(req, platform=platform, gpus=gpus, gpus_elsewhere=elsewhere)


def resolve_fleet(req: Request, m: Matrix) -> FleetResolution:
    """Resolve for every platform of `req.platforms` on one common torch release. Pure."""
    reqs = [(p, platform_request(req, p)) for p in req.platforms]
    if len(reqs) == 1:
        p, r = reqs[0]
        res = resolve(r, m)
        return FleetResolution(((p, res),), res.chosen.release.torch if res.chosen else None)
    rows = {p: {row.torch: row for row in per_release(r, m)} for p, r in reqs}
    common = next(
        (t for t in (rel.torch for rel in matching_releases(m, req.torch))
         if all(rows[p][t].build for p, _ in reqs)),
        None,
    )  # fmt: skip
    answers = tuple((p, resolve(r, m, release=common)) for p, r in reqs)
    problem = ""
    if common is None:
        spans = []
        for p, _ in reqs:
            runs = [t for t, row in rows[p].items() if row.build]
            spans.append(f"{p}: {runs[-1]}–{runs[0]}" if runs else f"{p}: none")
        problem = "no torch release runs on every platform (" + "; ".join(spans) + ")"
    return FleetResolution(answers, common, problem)


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One torch release across the fleet: its build on each platform, or why none runs."""

    torch: str
    rows: tuple[tuple[str, ReleaseRow], ...]

    @property
    def ok(self) -> bool:
        return all(r.build for _, r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "torch": self.torch,
            "ok": self.ok,
            "platforms": {p: r.to_json() for p, r in self.rows},
        }


def per_release_fleet(req: Request, m: Matrix) -> tuple[FleetRow, ...]:
    """`per_release` for every platform of the fleet, newest release first."""
    names = req.platforms
    tables = [per_release(platform_request(req, p), m) for p in names]
    return tuple(
        FleetRow(same[0].torch, tuple(zip(names, same, strict=True)))
        for same in zip(*tables, strict=True)
    )
