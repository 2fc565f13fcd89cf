"""The compatibility matrix: typed, frozen, loaded once from packaged JSON.

Schema (data/matrix.json, `schema_version` 1) is documented in docs/matrix.md. Every fact carries
a source id (a key of `sources`) and facts that were not measured are flagged `uncertain` or carry
an `arch_confidence` below "high", so the resolver can say when it relies on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from torchship.compat.archs import Arch, parse_arch, parse_version
from torchship.compat.archs import Version as NumVersion
from torchship.errors import MatrixError

SCHEMA_VERSION = 1
PYPI_INDEX = "https://pypi.org/simple"
PYTORCH_INDEX = "https://download.pytorch.org/whl"


@dataclass(frozen=True, slots=True)
class Variant:
    """One build of a torch release: `cu128`, `cpu`, ..."""

    name: str
    cuda: NumVersion | None  # (12, 8); None for cpu
    status: str
    archs: tuple[Arch, ...] | None  # None: not known
    arch_source: str
    arch_confidence: str
    cudnn: str | None
    nccl: str | None
    uncertain: bool
    mps: bool = False  # a macOS build: CPU and Apple's Metal (MPS)

    @property
    def is_cpu(self) -> bool:
        return self.cuda is None

    @property
    def cuda_str(self) -> str:
        return "cpu" if self.cuda is None else f"{self.cuda[0]}.{self.cuda[1]}"

    def arch_tokens(self) -> tuple[str, ...]:
        return tuple(a.token for a in self.archs or ())


@dataclass(frozen=True, slots=True)
class Release:
    """One torch release in the matrix: its Pythons, builds (variants), companions and floors."""

    torch: str
    version: Version
    python: tuple[str, ...]
    glibc_min: NumVersion
    manylinux: str
    pypi_default: str
    pypi_default_pins: tuple[tuple[str, str], ...]
    torchvision: tuple[str, ...]
    torchaudio: tuple[str, ...]
    notes: tuple[str, ...]
    variants: tuple[Variant, ...]
    platform: str = "linux-x86_64"
    platform_tag: str = ""  # the wheels' platform tag there: "win_amd64", "macosx_14_0_arm64"
    macos_min: NumVersion | None = None
    macos_min_python: tuple[tuple[str, NumVersion], ...] = ()  # ("3.14", (14, 0)): higher floors
    # the same release on the other platforms PyPI has wheels for (linux-x86_64 is this one),
    # each made when first asked for (`on`, `platforms`)
    views: PlatformViews | None = field(default=None, repr=False, compare=False)
    platforms_known: bool = False  # the matrix measured the other platforms for this release

    def variant(self, name: str) -> Variant | None:
        for v in self.variants:
            if v.name == name:
                return v
        return None

    def macos_floor(self, python: str | None) -> NumVersion | None:
        """The oldest macOS the wheel for `python` installs on (None off macOS)."""
        return dict(self.macos_min_python).get(python or "", self.macos_min)

    def on(self, platform: str) -> Release | None:
        """This release as installed on `platform` (its builds, Pythons, tags); None when it
        has no wheels there."""
        if platform == self.platform:
            return self
        return None if self.views is None else self.views.get(platform)

    @property
    def platforms(self) -> tuple[tuple[str, Release], ...]:
        """Every other platform's view, in the matrix's order."""
        if self.views is None:
            return ()
        return tuple((name, self.views.view(name)) for name in self.views.names)

    def local_version(self, variant: Variant) -> str:
        return f"{self.torch}+{variant.name}"


class PlatformViews:
    """A release's tables for its other platforms (matrix `releases[i].platforms`), each made
    into a Release when first asked for, then that one every time (the resolver keys on
    identity). Most locks are for one platform, and the 92 views of the 28 releases hold 202 of
    the matrix's 304 builds (issue 20)."""

    __slots__ = ("_built", "_shared", "_tables", "_where", "names")

    def __init__(self, shared: dict[str, Any], tables: dict[str, Any], where: str) -> None:
        self._shared, self._tables, self._where = shared, tables, where
        self.names = tuple(tables)
        self._built: dict[str, Release] = {}

    def get(self, name: str) -> Release | None:
        return self.view(name) if name in self._tables else None

    def view(self, name: str) -> Release:
        built = self._built.get(name)
        if built is None:
            made = _platform_view(self._shared, name, self._tables[name], f"{self._where}.{name}")
            built = self._built.setdefault(name, made)  # one object, whichever thread was first
        return built


@dataclass(frozen=True, slots=True)
class GPU:
    """A GPU model the matrix knows: its names and compute capability."""

    name: str
    aliases: tuple[str, ...]
    cc: tuple[int, int]
    architecture: str
    segment: str  # datacenter | workstation | consumer | jetson
    forward_compat: bool
    min_driver: NumVersion | None
    min_driver_uncertain: bool
    platforms: tuple[str, ...] = ()  # the only platforms it is ever on (GB200: linux-aarch64)


IMAGE_FLAVORS = ("base", "runtime", "devel", "cudnn-runtime", "cudnn-devel")


@dataclass(frozen=True, slots=True)
class CudaImage:
    """One nvidia/cuda release. Tag scheme: `<X.Y.Z>-<flavor>-ubuntu<U>`, where the cuDNN
    flavors are `cudnn8-…` up to 12.2.2, `cudnn9-…` for 12.3.2 and `cudnn-…` from 12.4.1 on."""

    cuda: NumVersion  # full release, (12, 8, 1)
    ubuntu: tuple[str, ...]
    cudnn_tag: str  # "cudnn8" | "cudnn9" | "cudnn"

    def tag(self, flavor: str = "base", ubuntu: str | None = None) -> str:
        if flavor not in IMAGE_FLAVORS:
            raise ValueError(f"unknown nvidia/cuda flavor {flavor!r}; one of {IMAGE_FLAVORS}")
        os_version = ubuntu or self.ubuntu[-1]
        if os_version not in self.ubuntu:
            raise ValueError(
                f"nvidia/cuda {'.'.join(map(str, self.cuda))} has no Ubuntu {os_version}"
            )
        part = flavor.replace("cudnn", self.cudnn_tag, 1)
        return f"nvidia/cuda:{'.'.join(map(str, self.cuda))}-{part}-ubuntu{os_version}"


@dataclass(frozen=True, slots=True, eq=False)  # identity hash: caches key on the matrix
class Matrix:
    """The compatibility matrix (compat/data/matrix.json), as read and checked."""

    schema_version: int
    generated_at: str
    sources: dict[str, str]
    driver_floors: dict[int, NumVersion]  # CUDA major -> minimum driver (minor-version compat)
    toolkits: tuple[tuple[NumVersion, NumVersion], ...]  # (CUDA release, bundled driver), sorted
    forward_compat_segments: frozenset[str]
    cuda_images: tuple[CudaImage, ...]
    cpu_image: str
    gpus: tuple[GPU, ...]
    releases: tuple[Release, ...]  # oldest first
    # torchvision / torchaudio releases: the torch each accepts and the Pythons it has
    # wheels for (Linux x86_64), oldest first
    companions: tuple[tuple[str, tuple[Companion, ...]], ...] = ()
    # GPUs below a capability are ignored by drivers after a branch: ((7, 5), 580) means a
    # GPU of capability < 7.5 (Maxwell, Pascal, Volta) runs on R580 at most
    driver_ceilings: tuple[tuple[tuple[int, int], int], ...] = ()
    # driver branch -> (kind, the CUDA minors whose cuda-compat package supports it)
    compat_branches: tuple[tuple[int, str, tuple[NumVersion, ...]], ...] = ()

    def driver_ceiling(self, cc: tuple[int, int]) -> int | None:
        """The last driver branch that supports a GPU of this capability, or None."""
        found = [branch for below, branch in self.driver_ceilings if cc < below]
        return min(found) if found else None

    def compat_branch(self, branch: int) -> tuple[str, tuple[NumVersion, ...]] | None:
        """The kind (LTSB, PB) of a driver branch cuda-compat supports, and its packages."""
        return next(((k, c) for b, k, c in self.compat_branches if b == branch), None)

    def companions_of(self, name: str) -> tuple[Companion, ...]:
        return next((rows for lib, rows in self.companions if lib == name), ())

    def release(self, torch: str) -> Release | None:
        for r in self.releases:
            if r.torch == torch:
                return r
        return None

    def driver_floor(self, cuda_major: int) -> NumVersion | None:
        return self.driver_floors.get(cuda_major)

    def driver_cuda(self, driver: NumVersion) -> NumVersion | None:
        """The newest CUDA release whose toolkit driver is <= `driver` (what nvidia-smi shows)."""
        best: NumVersion | None = None
        for cuda, bundled in self.toolkits:
            if bundled <= driver:
                best = cuda
        return best

    def cuda_image(self, cuda: NumVersion) -> CudaImage | None:
        """The newest nvidia/cuda release of CUDA major.minor <= `cuda`, in the same major."""
        same = [i for i in self.cuda_images if i.cuda[0] == cuda[0] and i.cuda[:2] <= cuda[:2]]
        return max(same, key=lambda i: i.cuda) if same else None

    def toolkit_driver(self, cuda_minor: NumVersion) -> NumVersion | None:
        """The driver bundled with the GA release of CUDA major.minor."""
        for cuda, bundled in self.toolkits:
            if cuda[:2] == cuda_minor[:2]:
                return bundled
        return None


def parse_cc_pair(text: str) -> tuple[int, int]:
    major, minor = (int(p) for p in str(text).split("."))
    return major, minor


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise MatrixError(f"matrix {where}: missing {key!r}", "regenerate the matrix")
    return d[key]


# The matrix repeats a few values hundreds of times: its 304 builds list 1,124 arch tokens, 11
# of them distinct, and name a dozen CUDA releases. Each is parsed once per process (the
# objects are frozen): with the views made on first use, loading the matrix went from ~77 M
# to ~26 M instructions (callgrind; ~28 to ~9 ms on two busy cores), which `torchship lock`
# pays before it can start uv (issue 20).
@cache
def _archs(tokens: tuple[str, ...]) -> tuple[Arch, ...]:
    return tuple(parse_arch(a) for a in tokens)


@cache
def _version(text: str) -> NumVersion:
    return parse_version(text)


def _variant(d: dict[str, Any], where: str, mps: bool = False) -> Variant:
    """One build; `mps`: a macOS CPU build, which Apple's Metal backend comes with."""
    arch = d.get("arch")
    cuda = d.get("cuda")
    return Variant(
        name=_req(d, "name", where),
        cuda=_version(cuda) if cuda else None,
        status=d.get("status", ""),
        archs=_archs(tuple(arch)) if arch is not None else None,
        arch_source=d.get("arch_source", ""),
        arch_confidence=d.get("arch_confidence", "unknown"),
        cudnn=d.get("cudnn"),
        nccl=d.get("nccl"),
        uncertain=bool(d.get("uncertain", False)),
        mps=bool(d.get("mps", False)) or (mps and not cuda),
    )


def _platform_view(shared: dict[str, Any], name: str, d: dict[str, Any], where: str) -> Release:
    """The release as one more platform's wheels make it (matrix `releases[i].platforms`)."""
    try:
        return _view(shared, name, d, where)
    except (KeyError, TypeError, ValueError) as e:  # as parse_matrix says it
        raise MatrixError(f"matrix is malformed: {e!r}", "regenerate the matrix") from None


def _view(shared: dict[str, Any], name: str, d: dict[str, Any], where: str) -> Release:
    glibc = d.get("glibc_min")
    macos = d.get("macos_min")
    mps = name.startswith("macos")  # every macOS build is the CPU one with Apple's MPS backend
    variants = tuple(
        _variant(v, f"{where}.variants[{i}]", mps=mps)
        for i, v in enumerate(_req(d, "variants", where))
    )
    return Release(
        **shared,
        python=tuple(_req(d, "python", where)),
        glibc_min=_version(glibc) if glibc else (0, 0),
        manylinux=d.get("tag", "") if glibc else "",
        pypi_default=_req(d, "pypi_default", where),
        pypi_default_pins=(),
        notes=tuple(d.get("notes", ())),
        variants=variants,
        platform=name,
        platform_tag=d.get("tag", ""),
        macos_min=_version(macos) if macos else None,
        macos_min_python=tuple(
            (py, _version(v)) for py, v in sorted(d.get("macos_min_python", {}).items())
        ),
    )


def _release(d: dict[str, Any], where: str) -> Release:
    torch = _req(d, "torch", where)
    try:
        version = Version(torch)
    except InvalidVersion as e:
        raise MatrixError(f"matrix {where}.torch: {e}", "regenerate the matrix") from None
    variants = tuple(
        _variant(v, f"{where}.variants[{i}]") for i, v in enumerate(_req(d, "variants", where))
    )
    torchvision, torchaudio = tuple(d.get("torchvision", ())), tuple(d.get("torchaudio", ()))
    views = None
    if "platforms" in d:  # what each view shares with the release
        shared = {
            "torch": torch,
            "version": version,
            "torchvision": torchvision,
            "torchaudio": torchaudio,
        }
        views = PlatformViews(shared, dict(d["platforms"]), f"{where}.platforms")
    return Release(
        torch=torch,
        version=version,
        python=tuple(_req(d, "python", where)),
        glibc_min=_version(_req(d, "glibc_min", where)),
        manylinux=d.get("manylinux", ""),
        pypi_default=_req(d, "pypi_default", where),
        pypi_default_pins=tuple(sorted(d.get("pypi_default_pins", {}).items())),
        torchvision=torchvision,
        torchaudio=torchaudio,
        notes=tuple(d.get("notes", ())),
        variants=variants,
        platform_tag=d.get("manylinux", ""),
        views=views,
        platforms_known=views is not None,
    )


def _gpu(d: dict[str, Any], where: str) -> GPU:
    cc_major, cc_minor = (int(p) for p in str(_req(d, "cc", where)).split("."))
    md = d.get("min_driver")
    return GPU(
        name=_req(d, "name", where),
        aliases=tuple(d.get("aliases", ())),
        cc=(cc_major, cc_minor),
        architecture=d.get("architecture", ""),
        segment=_req(d, "segment", where),
        forward_compat=bool(d.get("forward_compat", False)),
        min_driver=_version(md) if md else None,
        min_driver_uncertain=bool(d.get("min_driver_uncertain", False)),
        platforms=tuple(d.get("platforms", ())),
    )


@dataclass(frozen=True, slots=True)
class Companion:
    """A release of torchvision or torchaudio, as its wheels declare it."""

    name: str
    version: str
    torch: SpecifierSet  # the torch it accepts ("==2.5.1", ">=2.14.0")
    requires_python: SpecifierSet
    python: tuple[str, ...]  # "3.12", "3.13t"; ("py3",): one wheel for every Python
    yanked: bool

    def accepts(self, torch: Version) -> bool:
        return self.torch.contains(torch, prereleases=True)

    def has_wheel_for(self, python: str) -> bool:
        """A wheel for "3.13" / "3.13t" (a py3-none wheel serves a free-threaded one too)."""
        return self.python == ("py3",) or python in self.python

    def runs_on(self, python: str, patch: str | None) -> bool:
        """Requires-Python admits the interpreter (`!=3.14.1` needs its patch to judge)."""
        full = patch or f"{python.rstrip('t')}.0"
        if patch is None:  # without a patch level, a minor is out only if no patch of it is in
            return any(
                self.requires_python.contains(f"{python.rstrip('t')}.{n}") for n in range(0, 20)
            )
        return self.requires_python.contains(full)


def _companion(lib: str, c: dict[str, Any]) -> Companion:
    return Companion(
        name=lib,
        version=c["version"],
        torch=SpecifierSet(c["torch"]),
        requires_python=SpecifierSet(c.get("requires_python", "")),
        python=tuple(c["python"]),
        yanked=bool(c.get("yanked")),
    )


def _companions(data: dict[str, Any]) -> tuple[tuple[str, tuple[Companion, ...]], ...]:
    rows = data.get("companions", {})
    return tuple((lib, tuple(_companion(lib, c) for c in cs)) for lib, cs in rows.items())


def parse_matrix(data: dict[str, Any], *, lazy: bool = False) -> Matrix:
    """Validate and convert matrix JSON; raises MatrixError naming the bad field. `lazy`: each
    release's views of other platforms are made (and checked) when first used instead."""
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MatrixError(
            f"matrix schema_version {version!r} is not {SCHEMA_VERSION}",
            "upgrade torchship or regenerate the matrix with tools/gen_matrix.py",
        )
    try:
        releases = tuple(
            sorted(
                (_release(r, f"releases[{i}]") for i, r in enumerate(data["releases"])),
                key=lambda r: r.version,
            )
        )
        if not lazy:  # every view made now, so that a bad one is refused here
            for r in releases:
                r.platforms  # noqa: B018
        toolkits = tuple(
            sorted((_version(t["cuda"]), _version(t["driver"])) for t in data["toolkits"])
        )
        return Matrix(
            schema_version=version,
            generated_at=data.get("generated_at", ""),
            sources=dict(data.get("sources", {})),
            driver_floors={
                int(f["cuda_major"]): _version(f["min_driver"]) for f in data["driver_floors"]
            },
            toolkits=toolkits,
            forward_compat_segments=frozenset(data["forward_compat"]["segments"]),
            cuda_images=tuple(
                CudaImage(_version(i["cuda"]), tuple(i["ubuntu"]), i["cudnn_tag"])
                for i in data["images"]["cuda"]
            ),
            cpu_image=data["images"]["cpu"],
            gpus=tuple(_gpu(g, f"gpus[{i}]") for i, g in enumerate(data["gpus"])),
            releases=releases,
            companions=_companions(data),
            driver_ceilings=tuple(
                (parse_cc_pair(c["cc_below"]), int(c["last_branch"]))
                for c in data.get("driver_ceilings", ())
            ),
            compat_branches=tuple(
                (int(b["branch"]), b["kind"], tuple(_version(c) for c in b["compat"]))
                for b in data["forward_compat"].get("branches", ())
            ),
        )
    except (KeyError, TypeError, ValueError, InvalidSpecifier) as e:
        raise MatrixError(f"matrix is malformed: {e!r}", "regenerate the matrix") from None


# Beside this module: importlib.resources would find it as well, but its reader imports
# zipfile (~6 ms, 10 on two busy cores) before `torchship lock` can start uv (issue 20), and
# torchship is never imported from a zip archive.
MATRIX_FILE = Path(__file__).parent / "data" / "matrix.json"


@cache
def load_matrix() -> Matrix:
    """The packaged matrix (parsed once per process; a platform's views when first used:
    tests/unit/test_matrix_data.py parses every one)."""
    return parse_matrix(json.loads(MATRIX_FILE.read_text("utf-8")), lazy=True)
