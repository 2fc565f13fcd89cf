"""Refresh what PyPI can tell into src/torchship/compat/data/matrix.json.

    python tools/gen_matrix.py                  # refresh every release in the matrix, write it
    python tools/gen_matrix.py --check          # exit 1 if a refresh would change anything
    python tools/gen_matrix.py --releases 2.13.0 --dry-run

From PyPI, per torch release (Linux x86_64 wheels only):
  - Python tags (cp311, cp313t ...) and the manylinux tag -> `python`, `glibc_min`
  - the default build: `torch/version.py` inside the wheel (`__version__ = '2.9.1+cu128'`)
  - its pins (nvidia-cudnn-*, nvidia-nccl-*, cuda-toolkit, triton): the wheel's METADATA
  - torchvision / torchaudio paired releases: their METADATA's `torch==X` requirement, and
    (`companions`) every release's torch specifier, Requires-Python and Python tags
Wheels are not downloaded whole: the zip's central directory and the two members are read with
HTTP range requests (a few MB per ~900 MB wheel), because the index here serves no PEP 658
`.metadata` files. Facts PyPI cannot tell (arch lists of non-default builds, driver floors, GPU
compute capabilities) are left alone; see tools/import_reference.py and docs/matrix.md.
"""

from __future__ import annotations

import argparse
import json
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
    r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>cp\d+)-(?P<abi>cp\d+t?|abi3|none)-"
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--releases", help="comma-separated torch versions (default: all in the matrix)"
    )
    ap.add_argument("--check", action="store_true", help="exit 1 if anything would change")
    ap.add_argument("--dry-run", action="store_true", help="print changes, write nothing")
    ap.add_argument(
        "--domain", action="store_true", help="also refresh torchvision/torchaudio pairs"
    )
    ap.add_argument(
        "--companions",
        help="with --domain: only these torchvision/torchaudio versions (comma-separated), "
        "compared with the packaged ones",
    )
    args = ap.parse_args(argv)
    matrix = json.loads(MATRIX.read_text())
    only = set(args.releases.split(",")) if args.releases else None
    files = simple_files("torch")
    changes: list[str] = []
    for rel in matrix["releases"]:
        if only and rel["torch"] not in only:
            continue
        facts = release_facts(rel["torch"], files)
        changes += apply(rel, facts)
        print(
            f"{rel['torch']}: default {facts['pypi_default']}, python {','.join(facts['python'])}",
            file=sys.stderr,
        )
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
