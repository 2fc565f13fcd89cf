"""CUDA extensions locked beside torch, and the torch (and CUDA) each release was built for.

xformers pins an exact torch; bitsandbytes bundles one library per CUDA version and quietly
falls back to its CPU one when torch's is missing; torchao skips its kernels on another torch;
flash-attn has no wheel on PyPI and builds against whatever torch is installed. A pin that does
not pair with the chosen torch is a top cause of `undefined symbol` and "CUDA Setup failed"
reports (the doctor's `extension-abi-mismatch`): say so before anything is installed.

Data: src/torchship/compat/data/extensions.json (tools/gen_extensions.py, with sources).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from torchship.compat.matrix import Release, Variant
from torchship.spec.fields import pins_by_name

EXTENSIONS = ("xformers", "bitsandbytes", "torchao", "flash-attn")


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a CUDA extension package will not run, or runs without its kernels, on a build."""

    severity: str  # "error": it will not work (a rejection); "warning": it runs without kernels
    text: str


EXTENSIONS_FILE = Path(__file__).parent / "data" / "extensions.json"


@cache
def _data() -> dict[str, Any]:
    # read beside the module, as the matrix is: importlib.resources pulls in tempfile and
    # random before uv starts (issue 20)
    data: dict[str, Any] = json.loads(EXTENSIONS_FILE.read_text("utf-8"))
    return data


def extension_pins(packages: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The extensions among the packages, with their specifiers ("" when unpinned)."""
    if not packages:
        return ()
    pins = pins_by_name(packages, EXTENSIONS)  # one entry an extension, its pins combined
    return tuple((name, str(spec)) for name, spec in pins.items())


def problems(pins: tuple[tuple[str, str], ...], rel: Release, v: Variant) -> tuple[Problem, ...]:
    """What goes wrong with these extension pins beside this torch build."""
    out = []
    for name, spec in pins:
        info = _data()["packages"][name]
        if info.get("sdist_only"):
            out.append(Problem("warning", f"{name} has no wheel on PyPI: it compiles against "
                               f"the installed torch {rel.local_version(v)} when installed "
                               "(nvcc, --no-build-isolation), or fetches a matching wheel "
                               "from its GitHub releases"))  # fmt: skip
            continue
        if not spec:
            continue  # unpinned: the installer picks a release that accepts this torch
        wanted = {ver: r for ver, r in info["releases"].items() if SpecifierSet(spec).contains(ver)}
        if not wanted:
            if _each_known(spec, info["releases"]):  # `xformers==0.0.29,==0.0.30`
                out.append(Problem("error", f"{name}{spec}: no release meets every one of "
                                   "these pins together"))  # fmt: skip
            continue  # otherwise releases torchship has no facts for: not judged
        fits = [ver for ver, r in wanted.items() if SpecifierSet(r["torch"]).contains(rel.version)]
        if not fits:
            built = sorted({r["torch"] for r in wanted.values()}, key=_order)[-3:]
            out.append(Problem(info["severity"], f"{name}{spec} was built for torch "
                               f"{' or '.join(built)}, not {rel.torch}"))  # fmt: skip
            continue
        if name != "bitsandbytes" or v.is_cpu:
            continue
        cuda = v.name.removeprefix("cu")
        bundled = [wanted[ver]["cuda"] for ver in fits]
        if not any(cuda in b for b in bundled):
            have = sorted({c for b in bundled for c in b}, key=int)
            out.append(Problem("error", f"{name}{spec} has no library for {v.name} (has "
                               f"{', '.join('cu' + c for c in have)}): it would load its CPU "
                               "library"))  # fmt: skip
    return tuple(out)


def _each_known(spec: str, releases: dict[str, object]) -> bool:
    """Several pins, each met by a release torchship knows (so together they contradict)."""
    parts = [x for x in spec.split(",") if x]
    return len(parts) > 1 and all(any(SpecifierSet(x).contains(v) for v in releases)
                                  for x in parts)  # fmt: skip


def _order(spec: str) -> Version:
    digits = spec.lstrip("=<>!~ ").split(",")[0]
    try:
        return Version(digits)
    except ValueError:
        return Version("0")
