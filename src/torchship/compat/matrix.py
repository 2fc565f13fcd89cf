"""The compatibility matrix: typed, frozen, loaded once from packaged JSON.

Schema (data/matrix.json, `schema_version` 1) is documented in docs/matrix.md. Every fact carries
a source id (a key of `sources`) and facts that were not measured are flagged `uncertain` or carry
an `arch_confidence` below "high", so the resolver can say when it relies on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
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
    # the same release on the other platforms PyPI has wheels for (linux-x86_64 is this one)
    platforms: tuple[tuple[str, Release], ...] = ()
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
        for name, view in self.platforms:
            if name == platform:
                return view
        return None

    def local_version(self, variant: Variant) -> str:
        return f"{self.torch}+{variant.name}"


@dataclass(frozen=True, slots=True)
class GPU:
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


def _variant(d: dict[str, Any], where: str) -> Variant:
    arch = d.get("arch")
    cuda = d.get("cuda")
    return Variant(
        name=_req(d, "name", where),
        cuda=parse_version(cuda) if cuda else None,
        status=d.get("status", ""),
        archs=tuple(parse_arch(a) for a in arch) if arch is not None else None,
        arch_source=d.get("arch_source", ""),
        arch_confidence=d.get("arch_confidence", "unknown"),
        cudnn=d.get("cudnn"),
        nccl=d.get("nccl"),
        uncertain=bool(d.get("uncertain", False)),
        mps=bool(d.get("mps", False)),
    )


def _platform_view(base: Release, name: str, d: dict[str, Any], where: str) -> Release:
    """The release as one more platform's wheels make it (matrix `releases[i].platforms`)."""
    glibc = d.get("glibc_min")
    macos = d.get("macos_min")
    variants = tuple(
        _variant(v, f"{where}.variants[{i}]") for i, v in enumerate(_req(d, "variants", where))
    )
    if name.startswith("macos"):  # every macOS build is the CPU one with Apple's MPS backend
        variants = tuple(replace(v, mps=True) if v.is_cpu else v for v in variants)
    return Release(
        torch=base.torch,
        version=base.version,
        python=tuple(_req(d, "python", where)),
        glibc_min=parse_version(glibc) if glibc else (0, 0),
        manylinux=d.get("tag", "") if glibc else "",
        pypi_default=_req(d, "pypi_default", where),
        pypi_default_pins=(),
        torchvision=base.torchvision,
        torchaudio=base.torchaudio,
        notes=tuple(d.get("notes", ())),
        variants=variants,
        platform=name,
        platform_tag=d.get("tag", ""),
        macos_min=parse_version(macos) if macos else None,
        macos_min_python=tuple(
            (py, parse_version(v)) for py, v in sorted(d.get("macos_min_python", {}).items())
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
    base = Release(
        torch=torch,
        version=version,
        python=tuple(_req(d, "python", where)),
        glibc_min=parse_version(_req(d, "glibc_min", where)),
        manylinux=d.get("manylinux", ""),
        pypi_default=_req(d, "pypi_default", where),
        pypi_default_pins=tuple(sorted(d.get("pypi_default_pins", {}).items())),
        torchvision=tuple(d.get("torchvision", ())),
        torchaudio=tuple(d.get("torchaudio", ())),
        notes=tuple(d.get("notes", ())),
        variants=variants,
        platform_tag=d.get("manylinux", ""),
    )
    if "platforms" not in d:
        return base
    views = tuple(
        (name, _platform_view(base, name, p, f"{where}.platforms.{name}"))
        for name, p in d["platforms"].items()
    )
    return replace(base, platforms=views, platforms_known=True)


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
        min_driver=parse_version(md) if md else None,
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


def parse_matrix(data: dict[str, Any]) -> Matrix:
    """Validate and convert matrix JSON; raises MatrixError naming the bad field."""
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
        toolkits = tuple(
            sorted((parse_version(t["cuda"]), parse_version(t["driver"])) for t in data["toolkits"])
        )
        return Matrix(
            schema_version=version,
            generated_at=data.get("generated_at", ""),
            sources=dict(data.get("sources", {})),
            driver_floors={
                int(f["cuda_major"]): parse_version(f["min_driver"]) for f in data["driver_floors"]
            },
            toolkits=toolkits,
            forward_compat_segments=frozenset(data["forward_compat"]["segments"]),
            cuda_images=tuple(
                CudaImage(parse_version(i["cuda"]), tuple(i["ubuntu"]), i["cudnn_tag"])
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
                (int(b["branch"]), b["kind"], tuple(parse_version(c) for c in b["compat"]))
                for b in data["forward_compat"].get("branches", ())
            ),
        )
    except (KeyError, TypeError, ValueError, InvalidSpecifier) as e:
        raise MatrixError(f"matrix is malformed: {e!r}", "regenerate the matrix") from None


@cache
def load_matrix() -> Matrix:
    """The packaged matrix (parsed once per process)."""
    text = resources.files("torchship.compat").joinpath("data/matrix.json").read_text("utf-8")
    return parse_matrix(json.loads(text))
