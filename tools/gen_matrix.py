"""Refresh what PyPI can tell into src/torchship/compat/data/matrix.json.

    python tools/gen_matrix.py                  # refresh every release in the matrix, write it
    python tools/gen_matrix.py --check          # exit 1 if a refresh would change anything
    python tools/gen_matrix.py --releases 2.13.0 --dry-run
    python tools/gen_matrix.py --check --platforms macos-arm64 --no-arch

From PyPI, per torch release (Linux x86_64 wheels, the release's top level):
  - Python tags (cp311, cp313t ...) and the manylinux tag -> `python`, `glibc_min`
  - the default build: `torch/version.py` inside the wheel (`__version__ = '2.9.1+cu128'`)
  - its pins (nvidia-cudnn-*, nvidia-nccl-*, cuda-toolkit, triton): the wheel's METADATA
  - torchvision / torchaudio paired releases: their METADATA's `torch==X` requirement, and
    (`companions`) every release's torch specifier, Requires-Python and Python tags
And per release, for each other platform PyPI has wheels for (`platforms`: linux-aarch64,
windows-x86_64, macos-arm64, macos-x86_64; `--platforms` picks some):
  - its wheels' Python tags and platform tag -> `python`, `tag`, `glibc_min` / `macos_min`
    (`*_min_python`: the Pythons whose wheels need a newer floor, as macOS 2.7-2.10 cp313t/cp314)
  - the build PyPI serves there: the cp311 wheel's `torch/version.py` -> `pypi_default`, and for
    a CUDA build (aarch64 2.11+) the CUDA_ARCH_FLAGS in torch/lib/libtorch_python.so (about half
    of it, ~6-8 MB of ranges a wheel; cached per wheel sha256 in --cache, skipped by --no-arch)
  - the download.pytorch.org builds, which cannot be read from here, declared from their build
    script and RELEASE.md (AARCH64_INDEX_ARCH, declared_variants; tools/research/platforms.md)
Wheels are not downloaded whole: the zip's central directory and the two members are read with
HTTP range requests (a few MB per ~900 MB wheel), because the index here serves no PEP 658
`.metadata` files. Facts PyPI cannot tell (arch lists of non-default builds, driver floors, GPU
compute capabilities) are left alone; see tools/import_reference.py and docs/matrix.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MATRIX = Path(__file__).resolve().parents[1] / "src/torchship/compat/data/matrix.json"
SIMPLE = "https://pypi.org/simple/{name}/"
Fetch = Callable[[str, int | None, int | None], bytes]
"""fetch(url, start, end): bytes start..end inclusive; start=None,end=N: the last N bytes."""

_WHEEL_RE = re.compile(
    r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(-(?P<build>\d[^-]*))?-(?P<py>cp\d+)-(?P<abi>cp\d+t?|abi3|none)-"
    r"(?P<plat>[^.]+)\.whl$"
)


def http_fetch(url: str, start: int | None, end: int | None) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "torchship-gen-matrix"})
    if start is None and end is not None:
        req.add_header("Range", f"bytes=-{end}")
    elif start is not None:
        req.add_header("Range", f"bytes={start}-{'' if end is None else end}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        data: bytes = resp.read()
        return data


def simple_files(name: str, fetch: Fetch = http_fetch) -> list[dict[str, Any]]:
    url = SIMPLE.format(name=name)
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    if fetch is http_fetch:
        with urllib.request.urlopen(req, timeout=60) as resp:
            files: list[dict[str, Any]] = json.load(resp)["files"]
            return files
    return list(json.loads(fetch(url, 0, None))["files"])


# --- reading members of a remote zip --------------------------------------------------------


def _central_directory(url: str, fetch: Fetch) -> tuple[bytes, int]:
    tail = fetch(url, None, 65536 + 22)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0:
        raise ValueError(f"{url}: no end-of-central-directory record")
    cd_size, cd_offset = struct.unpack("<II", tail[i + 12 : i + 20])
    if cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:  # zip64
        j = tail.rfind(b"PK\x06\x06")
        if j < 0:
            raise ValueError(f"{url}: zip64 record missing")
        cd_size, cd_offset = struct.unpack("<QQ", tail[j + 40 : j + 56])
    return fetch(url, cd_offset, cd_offset + cd_size - 1), cd_offset


def _entries(cd: bytes) -> dict[str, tuple[int, int, int]]:
    """name -> (method, compressed size, local header offset)."""
    out: dict[str, tuple[int, int, int]] = {}
    pos = 0
    while cd[pos : pos + 4] == b"PK\x01\x02":
        (method,) = struct.unpack("<H", cd[pos + 10 : pos + 12])
        (csize,) = struct.unpack("<I", cd[pos + 20 : pos + 24])
        nlen, xlen, clen = struct.unpack("<HHH", cd[pos + 28 : pos + 34])
        (offset,) = struct.unpack("<I", cd[pos + 42 : pos + 46])
        name = cd[pos + 46 : pos + 46 + nlen].decode("utf-8", "replace")
        extra = cd[pos + 46 + nlen : pos + 46 + nlen + xlen]
        if offset == 0xFFFFFFFF or csize == 0xFFFFFFFF:
            csize, offset = _zip64_extra(extra, csize, offset)
        out[name] = (method, csize, offset)
        pos += 46 + nlen + xlen + clen
    return out


def _zip64_extra(extra: bytes, csize: int, offset: int) -> tuple[int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack("<HH", extra[pos : pos + 4])
        if tag == 1:
            vals = list(struct.unpack(f"<{size // 8}Q", extra[pos + 4 : pos + 4 + size]))
            # order: uncompressed, compressed, offset -- each present only if the 32-bit one is full
            if csize == 0xFFFFFFFF:
                vals.pop(0)  # uncompressed size comes first when present
                csize = vals.pop(0)
            if offset == 0xFFFFFFFF:
                offset = vals[-1]
            return csize, offset
        pos += 4 + size
    return csize, offset


def read_members(
    url: str, wanted: Callable[[str], bool], fetch: Fetch = http_fetch
) -> dict[str, str]:
    """The text of the zip members whose names satisfy `wanted`, via range requests."""
    cd, _ = _central_directory(url, fetch)
    out: dict[str, str] = {}
    for name, (method, csize, offset) in _entries(cd).items():
        if not wanted(name):
            continue
        head = fetch(url, offset, offset + 29)
        nlen, xlen = struct.unpack("<HH", head[26:30])
        start = offset + 30 + nlen + xlen
        raw = fetch(url, start, start + csize - 1) if csize else b""
        data = zlib.decompress(raw, -15) if method == 8 else raw
        out[name] = data.decode("utf-8", "replace")
    return out


def scan_member(
    url: str,
    wanted: Callable[[str], bool],
    find: Callable[[bytes], list[str] | None],
    fetch: Fetch = http_fetch,
    chunk: int = 1 << 21,
) -> list[str] | None:
    """`find` over the bytes of the first zip member whose name satisfies `wanted`, fetched a
    chunk at a time and inflated as they come; stops at the first window where `find` answers
    (the arch flags of libtorch_python.so sit about halfway in, so half the member is read).
    Windows overlap by 4 KiB; None when no member or no window answers."""
    cd, _ = _central_directory(url, fetch)
    entry = next((e for n, e in _entries(cd).items() if wanted(n)), None)
    if entry is None:
        return None
    method, csize, offset = entry
    head = fetch(url, offset, offset + 29)
    nlen, xlen = struct.unpack("<HH", head[26:30])
    start = offset + 30 + nlen + xlen
    inflate = zlib.decompressobj(-15) if method == 8 else None
    tail = b""
    for pos in range(start, start + csize, chunk):
        raw = fetch(url, pos, min(pos + chunk, start + csize) - 1)
        window = tail + (inflate.decompress(raw) if inflate else raw)
        if (hit := find(window)) is not None:
            return hit
        tail = window[-4096:]
    return None


# --- facts from one release -------------------------------------------------------------------


def x86_wheels(
    files: list[dict[str, Any]], version: str
) -> list[tuple[re.Match[str], dict[str, Any]]]:
    out = []
    for f in files:
        m = _WHEEL_RE.match(f["filename"])
        if (
            m
            and m["ver"] == version
            and "x86_64" in m["plat"]
            and "linux" in m["plat"]
            and not f.get("yanked")
        ):
            out.append((m, f))
    return out


def python_tags(wheels: list[tuple[re.Match[str], dict[str, Any]]]) -> list[str]:
    tags = set()
    for m, _ in wheels:
        digits = m["py"][2:]
        tags.add((int(digits[1:]), m["abi"].endswith("t")))
    return [f"3.{minor}{'t' if ft else ''}" for minor, ft in sorted(tags)]


def glibc_of(wheels: list[tuple[re.Match[str], dict[str, Any]]]) -> tuple[str, str]:
    plats = {m["plat"] for m, _ in wheels}
    if any("manylinux_2_28" in p for p in plats):
        return "2.28", "manylinux_2_28"
    return "2.17", "manylinux1"


def parse_requires(metadata: str) -> dict[str, str]:
    """Requires-Dist pins that decide the CUDA stack (nvidia-*, cuda-*, triton)."""
    pins: dict[str, str] = {}
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].split(";")[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)\s*\(?([^)]*)\)?$", req)
        if m and re.match(r"^(nvidia-|cuda-|triton)", m.group(1)):
            pins[m.group(1)] = m.group(2).replace(" ", "")
    return pins


def parse_version_py(text: str) -> str | None:
    m = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
    return m.group(1) if m else None


def release_facts(
    version: str, files: list[dict[str, Any]], fetch: Fetch = http_fetch
) -> dict[str, Any]:
    wheels = x86_wheels(files, version)
    if not wheels:
        raise ValueError(f"torch {version}: no Linux x86_64 wheel on PyPI")
    glibc, manylinux = glibc_of(wheels)
    _, f = next(((m, f) for m, f in wheels if m["py"] == "cp311"), wheels[0])
    members = read_members(
        f["url"], lambda n: n.endswith(".dist-info/METADATA") or n == "torch/version.py", fetch
    )
    meta = next((t for n, t in members.items() if n.endswith("METADATA")), "")
    local = parse_version_py(members.get("torch/version.py", "")) or ""
    pins = parse_requires(meta)
    default = local.split("+", 1)[1] if "+" in local else None
    return {
        "python": python_tags(wheels),
        "glibc_min": glibc,
        "manylinux": manylinux,
        "pypi_default": default,
        "pypi_default_pins": pins,
        "cudnn": _pin(pins, "nvidia-cudnn-cu"),
        "nccl": _pin(pins, "nvidia-nccl-cu"),
    }


def _pin(pins: dict[str, str], prefix: str) -> str | None:
    for k, v in pins.items():
        if k.startswith(prefix) and v.startswith("=="):
            return v[2:]
    return None


# --- other platforms: linux-aarch64, windows-x86_64, macos-arm64, macos-x86_64 -------------

PLATFORMS = ("linux-aarch64", "windows-x86_64", "macos-arm64", "macos-x86_64")
PLATFORM_SOURCE = "pypi_platform_files + torch/version.py of the PyPI wheel"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torchship-gen-matrix"
Wheel = tuple[re.Match[str], dict[str, Any]]
ArchOf = Callable[[dict[str, Any]], list[str] | None]
"""arch_of(a simple-index file of a CUDA wheel): its CUDA_ARCH_FLAGS tokens; None: not measured."""

PLATFORM_SOURCES = {
    "pypi_platform_files": "https://pypi.org/simple/torch/ (Accept: "
    "application/vnd.pypi.simple.v1+json): each release's manylinux aarch64, win_amd64 and "
    "macosx wheels -> python, tag, glibc_min / macos_min; torch/version.py of the cp311 wheel "
    "(`__version__` +suffix, `cuda`) -> pypi_default, read by HTTP range requests from "
    "files.pythonhosted.org (tools/gen_matrix.py)",
    "arch_measured_platforms": "Measured: the CUDA_ARCH_FLAGS string (= "
    "torch.cuda.get_arch_list()) in torch/lib/libtorch_python.so of the PyPI CUDA wheels of "
    "platforms other than Linux x86_64 (linux-aarch64 2.11+, cp311), read by HTTP range "
    "requests from files.pythonhosted.org (tools/gen_matrix.py, cached per wheel sha256)",
    "aarch64_ci_build": "https://github.com/pytorch/pytorch/blob/main/.ci/aarch64_linux/"
    "aarch64_ci_build.sh (commit 0fb2b95): TORCH_CUDA_ARCH_LIST of the download.pytorch.org "
    "aarch64 builds, 12.6 '8.0;9.0', 12.8 '8.0;9.0;10.0;12.0', 13.0 '8.0;9.0;10.0;11.0;12.0+PTX' "
    "(the value changed across commits: one lists 12.9 '8.0;9.0;10.0;11.0;12.0;12.1')",
    "release_md_aarch64": "https://github.com/pytorch/pytorch/pull/182849 (RELEASE.md, 2.12): "
    "'Linux aarch64 builds' rows 12.6.3: 8.0, 9.0; 13.0.2 / 13.2.1: 8.0, 9.0, 10.0, 11.0, "
    "12.0+PTX (the PyPI aarch64 wheels, measured, have no PTX)",
    "aarch64_cuda_pypi": "https://github.com/pytorch/test-infra/pull/7871 (2.11): 'For "
    "manylinux aarch64 builds use CUDA 13.0 instead of the CPU'; the aarch64 CPU build stays on "
    "download.pytorch.org/whl/cpu",
    "release_md_windows": "https://github.com/pytorch/pytorch/pull/175253 and "
    "https://github.com/pytorch/pytorch/pull/182849 (RELEASE.md): one arch table for 'Linux x86 "
    "and Windows builds', PTX 'linux builds only' (cu130/cu132); PyPI serves Windows CPU wheels "
    "only, CUDA ones are on download.pytorch.org (https://github.com/pytorch/pytorch.github.io/"
    "pull/757)",
}

# The download.pytorch.org aarch64 CUDA builds: that host is not reachable from here, so their
# arch lists are declared from the build script and RELEASE.md (tools/research/platforms.md §1).
# Both say +PTX for CUDA 13 where the PyPI cu130/cu132 aarch64 wheels (measured) have none.
_SM_80_120 = ["sm_80", "sm_90", "sm_100", "sm_110", "sm_120", "compute_120"]
_CI = "aarch64_ci_build"
AARCH64_INDEX_ARCH: dict[str, tuple[list[str], str]] = {
    "cu126": (["sm_80", "sm_90"], f"{_CI} (12.6: '8.0;9.0'); release_md_aarch64"),
    "cu128": (["sm_80", "sm_90", "sm_100", "sm_120"], f"{_CI} (12.8: '8.0;9.0;10.0;12.0')"),
    "cu130": (_SM_80_120, f"{_CI} (13.0: '8.0;9.0;10.0;11.0;12.0+PTX'); release_md_aarch64"),
    "cu132": (_SM_80_120, "release_md_aarch64 (13.2.1: 8.0, 9.0, 10.0, 11.0, 12.0+PTX)"),
}
WINDOWS_ARCH_SOURCE = (
    "release_md_windows (one table for 'Linux x86 and Windows builds', PTX 'linux builds only'): "
    "the linux-x86_64 list without PTX; not measured"
)
CONFIDENCE = ("unknown", "low", "medium-low", "medium", "medium-high", "high")

_MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def platform_of(tag: str) -> tuple[str, tuple[int, int] | None] | None:
    """A wheel's platform tag -> (the matrix's platform name, the tag's floor: glibc on Linux,
    macOS on macOS); None for Linux x86_64 (the release's top level) and tags without a name."""
    if m := re.fullmatch(r"manylinux_(\d+)_(\d+)_aarch64", tag):
        return "linux-aarch64", (int(m[1]), int(m[2]))
    if (m := re.fullmatch(r"(manylinux\d+)_aarch64", tag)) and m[1] in _MANYLINUX_LEGACY:
        return "linux-aarch64", _MANYLINUX_LEGACY[m[1]]
    if tag == "win_amd64":
        return "windows-x86_64", None
    if m := re.fullmatch(r"macosx_(\d+)_(\d+)_(arm64|x86_64)", tag):
        return f"macos-{m[3]}", (int(m[1]), int(m[2]))
    return None


def platform_wheels(files: list[dict[str, Any]], version: str) -> dict[str, list[Wheel]]:
    """A release's wheels (not yanked) by platform name, Linux x86_64 left out."""
    out: dict[str, list[Wheel]] = {}
    for f in files:
        m = _WHEEL_RE.match(f["filename"])
        if m and m["ver"] == version and not f.get("yanked") and (p := platform_of(m["plat"])):
            out.setdefault(p[0], []).append((m, f))
    return out


def _floor(m: re.Match[str]) -> tuple[int, int]:
    plat = platform_of(m["plat"])
    return (plat[1] if plat else None) or (0, 0)


def floors(wheels: list[Wheel]) -> tuple[str | None, dict[str, str]]:
    """(the oldest OS floor some Python's wheel installs on, {python: floor} for the Pythons
    whose wheels need a newer one): torch 2.7-2.10 built macOS cp313t/cp314 for macOS 14 only."""
    per_python: dict[str, tuple[int, int]] = {}
    for m, f in wheels:
        py = python_tags([(m, f)])[0]
        per_python[py] = min(per_python.get(py, _floor(m)), _floor(m))  # pip takes either
    low = min(per_python.values())
    if low == (0, 0):
        return None, {}
    return f"{low[0]}.{low[1]}", {py: f"{v[0]}.{v[1]}" for py, v in per_python.items() if v > low}


def pick_wheel(wheels: list[Wheel]) -> dict[str, Any]:
    """The wheel pip installs on CPython 3.11 (the highest build tag: 2.0.0's aarch64 `-1`
    re-upload, 2.10.0's macOS `-2`), else on the newest CPython that has one."""

    def rank(w: Wheel) -> tuple[bool, bool, int, int]:
        m = w[0]
        build = int(re.match(r"\d*", m["build"] or "")[0] or 0)  # type: ignore[index]
        return m["py"] == "cp311", not m["abi"].endswith("t"), int(m["py"][3:]), build

    return max(wheels, key=rank)[1]


def parse_version_cuda(text: str) -> str | None:
    """`cuda` of torch/version.py (`cuda: Optional[str] = '13.0'`); None for `None`."""
    m = re.search(r"""^cuda\s*(?::[^=\n]*)?=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
    return m[1] if m else None


def pypi_build(version_py: str) -> tuple[str, str | None]:
    """(build name, CUDA version) from a wheel's torch/version.py: the `+suffix` of
    `__version__` (`2.13.0+cu130`), else `cpu` when `cuda` is None (aarch64 <= 2.5, macOS)."""
    local, cuda = parse_version_py(version_py) or "", parse_version_cuda(version_py)
    if "+" in local:
        return local.split("+", 1)[1], cuda
    return ("cpu" if cuda is None else "cu" + cuda.replace(".", "")), cuda


_ARCH_FLAGS_RE = re.compile(rb"\x00((?:sm|compute)_\d+[af]?(?: (?:sm|compute)_\d+[af]?)*)\x00")


def parse_arch_flags(blob: bytes) -> list[str] | None:
    """The CUDA_ARCH_FLAGS string compiled into libtorch_python (what torch.cuda.get_arch_list()
    returns): a NUL-delimited run of `sm_XY` / `compute_XY` tokens; None when the bytes hold
    none."""
    m = _ARCH_FLAGS_RE.search(blob)
    return m[1].decode().split() if m else None


def _is_torch_python(name: str) -> bool:
    return re.fullmatch(r"torch/lib/(lib)?torch_python\.(so|dll)", name) is not None


def cached_arch(cache: Path | None, fetch: Fetch = http_fetch, measure: bool = True) -> ArchOf:
    """arch_of(file): the wheel's arch flags, from `cache` (a JSON per wheel sha256) or measured
    by ranges (10-14 MB a wheel, about half of libtorch_python) and stored there; with
    `measure=False`, None for a wheel not in the cache."""

    def arch_of(f: dict[str, Any]) -> list[str] | None:
        sha = f.get("hashes", {}).get("sha256")
        path = cache / f"arch-{sha}.json" if cache and sha else None
        if path and path.exists():
            return list(json.loads(path.read_text())["arch"])
        if not measure:
            return None
        arch = scan_member(f["url"], _is_torch_python, parse_arch_flags, fetch)
        if arch is None:
            raise ValueError(f"{f['filename']}: no CUDA_ARCH_FLAGS in libtorch_python")
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"wheel": f["filename"], "arch": arch}) + "\n")
        return arch

    return arch_of


def pypi_variant(
    platform: str, version: str, name: str, cuda: str | None, arch: list[str] | None
) -> dict[str, Any]:
    """The build PyPI serves on `platform`, as measured."""
    if cuda is None:
        cpu = "cpu (MPS)" if platform.startswith("macos") else "cpu"
        return {"name": name, "cuda": None, "arch": [], "arch_source": cpu,
                "arch_confidence": "n/a", "index": "pypi"}  # fmt: skip
    ptx = [a for a in arch or () if a.startswith("compute_")]
    source = (
        f"arch_measured_platforms (CUDA_ARCH_FLAGS of the PyPI {version} {platform} wheel), "
        + (f"PTX {','.join(ptx)}" if ptx else "no PTX")
    )
    if arch is None:
        source = "not measured (gen_matrix.py --no-arch, not in the cache)"
    return {"name": name, "cuda": cuda, "arch": arch, "arch_source": source,
            "arch_confidence": "unknown" if arch is None else "high", "index": "pypi"}  # fmt: skip


def declared_variants(
    platform: str, pypi: dict[str, Any], x86_variants: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The download.pytorch.org builds of `platform` other than PyPI's, declared: on aarch64 the
    CUDA variants the release also has on Linux x86_64 and AARCH64_INDEX_ARCH knows; on Windows
    every CUDA variant of Linux x86_64 with its SASS list (RELEASE.md: one table for both, PTX
    Linux only); and the cpu build when PyPI's is CUDA (aarch64 2.11+)."""
    out: list[dict[str, Any]] = []
    for v in x86_variants:
        if v["cuda"] is None or v["name"] == pypi["name"]:
            continue
        if platform == "linux-aarch64" and v["name"] in AARCH64_INDEX_ARCH:
            arch, source = AARCH64_INDEX_ARCH[v["name"]]
            out.append({"name": v["name"], "cuda": v["cuda"], "arch": list(arch),
                        "arch_source": f"{source}; not measured",
                        "arch_confidence": "medium", "index": "pytorch"})  # fmt: skip
        elif platform == "windows-x86_64":
            sass = None if v["arch"] is None else [a for a in v["arch"] if a.startswith("sm_")]
            conf = min("medium", v["arch_confidence"], key=_rank)
            out.append({"name": v["name"], "cuda": v["cuda"], "arch": sass,
                        "arch_source": WINDOWS_ARCH_SOURCE, "arch_confidence": conf,
                        "index": "pytorch"})  # fmt: skip
    if pypi["cuda"] is not None and not platform.startswith("macos"):
        out.append({"name": "cpu", "cuda": None, "arch": [],
                    "arch_source": "cpu (cpu_index; aarch64_cuda_pypi)"
                    if platform == "linux-aarch64" else "cpu (cpu_index)",
                    "arch_confidence": "n/a", "index": "pytorch"})  # fmt: skip
    return out


def _rank(confidence: str) -> int:
    return CONFIDENCE.index(confidence) if confidence in CONFIDENCE else 0


def platform_facts(
    platform: str,
    version: str,
    wheels: list[Wheel],
    x86_variants: list[dict[str, Any]],
    arch_of: ArchOf,
    fetch: Fetch = http_fetch,
) -> dict[str, Any]:
    """One release's `platforms[platform]` entry: the tags of its PyPI wheels, the build PyPI
    serves there (torch/version.py of one wheel, its arch flags when CUDA) and the declared
    download.pytorch.org builds."""
    f = pick_wheel(wheels)
    text = read_members(f["url"], lambda n: n == "torch/version.py", fetch).get("torch/version.py")
    if not text:
        raise ValueError(f"{f['filename']}: no torch/version.py")
    name, cuda = pypi_build(text)
    tag = max(wheels, key=lambda w: _floor(w[0]))[0]["plat"]  # the one admitting every wheel
    low, newer = floors(wheels)
    out: dict[str, Any] = {"python": python_tags(wheels), "tag": tag}
    key = "glibc_min" if platform.startswith("linux") else "macos_min"
    if low is not None:
        out[key] = low
    if newer:  # only where some Pythons need a newer floor than `key`
        out[f"{key}_python"] = newer
    out |= {"pypi_default": name, "source": PLATFORM_SOURCE}
    pypi = pypi_variant(platform, version, name, cuda, arch_of(f) if cuda else [])
    out["variants"] = [pypi, *declared_variants(platform, pypi, x86_variants)]
    return out


# A companion's wheel: compiled per CPython (cp39) or one pure tag for all (py3-none).
_COMPANION_RE = re.compile(
    r"^(?P<name>[^-]+)-(?P<ver>[^-+]+)(\+[^-]+)?(-\d[^-]*)?-(?P<py>cp\d+|py3)-"
    r"(?P<abi>cp\d+t?|abi3|none)-(?P<plat>[^.]+)\.whl$"
)


COMPANIONS_SOURCE = (
    "PyPI torchvision/torchaudio Linux x86_64 wheels: the torch of Requires-Dist (any "
    "specifier), Requires-Python and the Python tags, read with HTTP range requests of "
    ".dist-info/METADATA (tools/gen_matrix.py --domain); a release declaring no torch takes "
    "its maintainers' statement (UNDECLARED in tools/gen_matrix.py)"
)
# Releases whose wheels declare no torch at all, and what their maintainers say instead.
UNDECLARED = {
    ("torchaudio", "2.11.0"): (
        ">=2.11",
        "none declared; the 2.11 install page: works with PyTorch 2.11 and every future "
        "release (docs.pytorch.org/audio/2.11.0/installation.html)",
    ),
}


def relevant(companions: list[dict[str, Any]], torches: list[str]) -> list[dict[str, Any]]:
    """The releases from the oldest one pinned (`==`) to a torch the matrix knows: older ones
    belong to torch 1.x (and some declare an unversioned `torch`)."""
    first = next(
        (i for i, c in enumerate(companions) if c["torch"].removeprefix("==") in torches), None
    )
    return [] if first is None else companions[first:]


def parse_torch_requirement(metadata: str) -> tuple[str, str]:
    """(the `torch` specifier of Requires-Dist, Requires-Python) from a METADATA text; "" when
    the wheel declares none (torchaudio 2.11.0 declares no torch at all)."""
    torch = ""
    for line in metadata.splitlines():
        m = re.match(r"^Requires-Dist:\s*torch\s*\(?([^;)]*)\)?\s*(;.*)?$", line)
        if m and "extra ==" not in (m.group(2) or ""):
            torch = m.group(1).replace(" ", "")
    rp = re.search(r"^Requires-Python:\s*(.+)$", metadata, re.MULTILINE)
    return torch, rp.group(1).strip().replace(" ", "") if rp else ""


def companion_facts(
    name: str, files: list[dict[str, Any]], fetch: Fetch = http_fetch, only: set[str] | None = None
) -> list[dict[str, Any]]:
    """Per release of a companion (torchvision, torchaudio), from its Linux x86_64 wheels: the
    torch it accepts (any specifier: `==2.5.1`, `>=2.14.0`), its Requires-Python, the Pythons
    it has wheels for (`py3`: one wheel for all) and whether it is yanked."""
    by_version: dict[str, list[tuple[re.Match[str], dict[str, Any]]]] = {}
    for f in files:
        m = _COMPANION_RE.match(f["filename"])
        if m and "x86_64" in m["plat"] and "linux" in m["plat"] and (not only or m["ver"] in only):
            by_version.setdefault(m["ver"], []).append((m, f))
    with ThreadPoolExecutor(max_workers=8) as pool:  # range reads wait on the network
        out = list(pool.map(lambda kv: _companion(name, kv[0], kv[1], fetch), by_version.items()))
    return sorted(out, key=lambda c: [int(x) for x in re.findall(r"\d+", c["version"])])


def _companion(
    name: str, ver: str, wheels: list[tuple[re.Match[str], dict[str, Any]]], fetch: Fetch
) -> dict[str, Any]:
    """One release's facts from its wheels (a range read of one wheel's METADATA)."""
    pys = {m["py"] for m, _ in wheels}
    python = ["py3"] if "py3" in pys else python_tags([w for w in wheels if w[0]["py"] != "py3"])
    live = [f for _, f in wheels if not f.get("yanked")]
    f = (live or [f for _, f in wheels])[0]
    members = read_members(f["url"], lambda n: n.endswith(".dist-info/METADATA"), fetch)
    torch, requires_python = parse_torch_requirement(next(iter(members.values()), ""))
    source = "Requires-Dist"
    if not torch and (name, ver) in UNDECLARED:
        torch, source = UNDECLARED[(name, ver)]
    return {"version": ver, "torch": torch, "torch_source": source,
            "requires_python": requires_python, "python": python,
            "yanked": not live}  # fmt: skip


# --- applying a refresh -----------------------------------------------------------------------


def apply(release: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """Update a matrix release in place; returns what changed."""
    changes = []
    for key in ("python", "glibc_min", "manylinux", "pypi_default", "pypi_default_pins"):
        if facts.get(key) is not None and release.get(key) != facts[key]:
            changes.append(f"{release['torch']} {key}: {release.get(key)!r} -> {facts[key]!r}")
            release[key] = facts[key]
    for v in release["variants"]:
        if v["name"] == release["pypi_default"]:
            for key in ("cudnn", "nccl"):
                if facts.get(key) and v.get(key) != facts[key]:
                    changes.append(
                        f"{release['torch']} {v['name']} {key}: {v.get(key)} -> {facts[key]}"
                    )
                    v[key] = facts[key]
            v["pins_source"] = "pypi_meta"
    return changes


def apply_platforms(
    release: dict[str, Any], measured: dict[str, dict[str, Any]], names: tuple[str, ...]
) -> list[str]:
    """Set `release["platforms"]` to what was measured for `names` (keeping the others); returns
    what changed. An arch list not measured (--no-arch) keeps the packaged one."""
    old: dict[str, Any] = release.get("platforms", {})
    new = {p: measured[p] if p in names else old[p]
           for p in PLATFORMS if p in (measured if p in names else old)}  # fmt: skip
    for p, entry in new.items():
        _keep_unmeasured(entry, old.get(p))
    release["platforms"] = new
    return [f"{release['torch']} {line}" for line in diff_platforms(old, new)]


def _keep_unmeasured(entry: dict[str, Any], packaged: dict[str, Any] | None) -> None:
    before = {v["name"]: v for v in (packaged or {}).get("variants", [])}
    for v in entry["variants"]:
        was = before.get(v["name"])
        if v["arch"] is None and v["index"] == "pypi" and was and was["arch"] is not None:
            for key in ("arch", "arch_source", "arch_confidence"):
                v[key] = was[key]


def diff_platforms(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two `platforms` objects, one line a fact."""
    out = []
    for p in [p for p in PLATFORMS if p in old or p in new]:
        a, b = old.get(p), new.get(p)
        if a is None or b is None:
            e = a or b or {}
            out.append(f"{p}: {'added' if a is None else 'removed'} "
                       f"({e.get('tag')}, default {e.get('pypi_default')})")  # fmt: skip
            continue
        for key in dict.fromkeys([*a, *b]):
            if key == "variants":
                out += _diff_variants(p, a.get(key, []), b.get(key, []))
            elif a.get(key) != b.get(key):
                out.append(f"{p} {key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def _diff_variants(p: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    a, b = {v["name"]: v for v in old}, {v["name"]: v for v in new}
    out = [f"{p} {n}: {a.get(n)} -> {b.get(n)}" for n in dict.fromkeys([*a, *b])
           if n not in a or n not in b]  # fmt: skip
    for n in [n for n in a if n in b]:
        out += [f"{p} {n} {k}: {a[n].get(k)!r} -> {b[n].get(k)!r}"
                for k in dict.fromkeys([*a[n], *b[n]]) if a[n].get(k) != b[n].get(k)]  # fmt: skip
    if [v["name"] for v in old] != [v["name"] for v in new] and set(a) == set(b):
        out.append(f"{p} variants order: {list(a)} -> {list(b)}")
    return out


def apply_sources(matrix: dict[str, Any]) -> list[str]:
    """The source ids the `platforms` entries cite, added to `matrix["sources"]`."""
    changes = []
    for key, text in PLATFORM_SOURCES.items():
        if matrix["sources"].get(key) != text:
            changes.append(f"sources {key}: {'changed' if key in matrix['sources'] else 'added'}")
            matrix["sources"][key] = text
    return changes


def measure_platforms(
    releases: list[dict[str, Any]],
    files: list[dict[str, Any]],
    names: tuple[str, ...],
    arch_of: ArchOf,
    pool: ThreadPoolExecutor,
    fetch: Fetch = http_fetch,
) -> list[dict[str, dict[str, Any]]]:
    """Per release, `platforms` entries for the `names` PyPI has wheels for (all reads at once,
    on `pool`: range reads wait on the network)."""
    jobs = []
    for rel in releases:
        by_platform = platform_wheels(files, rel["torch"])
        for p in names:
            if p in by_platform:
                args = (p, rel["torch"], by_platform[p], rel["variants"], arch_of, fetch)
                jobs.append((rel["torch"], p, pool.submit(platform_facts, *args)))
    out: dict[str, dict[str, dict[str, Any]]] = {rel["torch"]: {} for rel in releases}
    for version, p, job in jobs:
        out[version][p] = job.result()
    return [out[rel["torch"]] for rel in releases]


def refresh_companions(
    matrix: dict[str, Any], lib: str, only: set[str] | None, wanted: set[str] | None
) -> list[str]:
    """Refresh `matrix["companions"][lib]` and each release's exact pairs (`torch==X`) from one
    read of every release's METADATA; with `wanted`, only compare those versions."""
    facts = companion_facts(lib, simple_files(lib), only=wanted)
    companions = matrix.setdefault("companions", {})
    matrix["sources"].setdefault("companions", COMPANIONS_SOURCE)
    if wanted:  # a spot check: the packaged rows of these versions, as PyPI says them now
        packaged = {c["version"]: c for c in companions.get(lib, [])}
        return [f"companions {lib} {c['version']}: {packaged.get(c['version'])} -> {c}"
                for c in facts if packaged.get(c["version"]) != c]  # fmt: skip
    changes = []
    now = relevant(facts, [r["torch"] for r in matrix["releases"]])
    if companions.get(lib) != now:
        changes.append(f"companions {lib}: {len(now)} releases")
        companions[lib] = now
    for rel in matrix["releases"]:
        pairs = sorted(c["version"] for c in facts
                       if c["torch"] == f"=={rel['torch']}" and not c["yanked"])  # fmt: skip
        if (only is None or rel["torch"] in only) and pairs and rel.get(lib) != pairs:
            changes.append(f"{rel['torch']} {lib}: {rel.get(lib)} -> {pairs}")
            rel[lib] = pairs
    return changes


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--releases", help="comma-separated torch versions (default: all in the matrix)"
    )
    ap.add_argument("--check", action="store_true", help="exit 1 if anything would change")
    ap.add_argument("--dry-run", action="store_true", help="print changes, write nothing")
    ap.add_argument(
        "--platforms",
        default=",".join(PLATFORMS),
        help=f"comma-separated platforms to measure, '' for none (default: {','.join(PLATFORMS)})",
    )
    ap.add_argument(
        "--no-arch",
        action="store_true",
        help="do not measure the arch lists of CUDA wheels (~6 MB each): take them from the "
        "cache, else keep the packaged ones",
    )
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"arch-list cache (default: {CACHE})")
    ap.add_argument(
        "--domain", action="store_true", help="also refresh torchvision/torchaudio pairs"
    )
    ap.add_argument(
        "--companions",
        help="with --domain: only these torchvision/torchaudio versions (comma-separated), "
        "compared with the packaged ones",
    )
    args = ap.parse_args(argv)
    args.platforms = tuple(p for p in args.platforms.split(",") if p)
    if unknown := [p for p in args.platforms if p not in PLATFORMS]:
        ap.error(f"unknown platform {unknown[0]!r} (known: {', '.join(PLATFORMS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    matrix = json.loads(MATRIX.read_text())
    only = set(args.releases.split(",")) if args.releases else None
    files = simple_files("torch")
    releases = [rel for rel in matrix["releases"] if not only or rel["torch"] in only]
    arch_of = cached_arch(args.cache, measure=not args.no_arch)
    with ThreadPoolExecutor(max_workers=8) as pool:  # range reads wait on the network
        facts = list(pool.map(lambda rel: release_facts(rel["torch"], files), releases))
        platforms = measure_platforms(releases, files, args.platforms, arch_of, pool)
    changes: list[str] = []
    for rel, fx, plat in zip(releases, facts, platforms, strict=True):
        changes += apply(rel, fx)
        if args.platforms:
            changes += apply_platforms(rel, plat, args.platforms)
        summary = ", ".join(f"{p} {e['pypi_default']}" for p, e in plat.items())
        print(f"{rel['torch']}: default {fx['pypi_default']}, python {','.join(fx['python'])}"
              + (f"; {summary}" if summary else ""), file=sys.stderr)  # fmt: skip
    if args.platforms:
        changes += apply_sources(matrix)
    if args.domain:
        wanted = set(args.companions.split(",")) if args.companions else None
        for lib in ("torchvision", "torchaudio"):
            changes += refresh_companions(matrix, lib, only, wanted)
    for c in changes:
        print(c)
    if args.check:
        return 1 if changes else 0
    if changes and not args.dry_run:
        matrix["generated_at"] = datetime.now(UTC).strftime("%Y-%m-%d")
        MATRIX.write_text(json.dumps(matrix, indent=1) + "\n")
        print(f"wrote {MATRIX} ({len(changes)} changes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
