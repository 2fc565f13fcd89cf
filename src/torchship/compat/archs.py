"""Parsing and comparing compute capabilities, arch tokens and driver versions.

Kernel rule (NVIDIA "CUDA C++ Programming Guide", binary compatibility): a cubin built for
sm_XY runs on any GPU of compute capability X.Z with Z >= Y (same major X only); PTX built for
compute_AB is JIT-compiled by the driver for any compute capability >= A.B.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torchship.versions import Version, driver_str, parse_version, version_str

__all__ = [
    "CC",
    "Arch",
    "Version",
    "driver_str",
    "kernel_match",
    "parse_arch",
    "parse_cc",
    "parse_version",
    "version_str",
]

CC = tuple[int, int]
"""A compute capability as (major, minor): 9.0 is (9, 0), 12.0 is (12, 0)."""


_ARCH_RE = re.compile(r"^(sm|compute)_(\d{2,3})[af]?$")
_CC_RE = re.compile(r"^(\d{1,2})\.(\d)$")


@dataclass(frozen=True, slots=True)
class Arch:
    """One entry of a build's arch list: SASS (`sm_90`) or PTX (`compute_120`)."""

    cc: CC
    ptx: bool

    @property
    def token(self) -> str:
        return f"{'compute' if self.ptx else 'sm'}_{self.cc[0]}{self.cc[1]}"


def parse_arch(token: str) -> Arch:
    """`sm_90` -> SASS 9.0; `compute_120` -> PTX 12.0; `sm_90a` -> SASS 9.0."""
    m = _ARCH_RE.match(token.strip().lower())
    if not m:
        raise ValueError(f"not an arch token: {token!r} (expected sm_XY or compute_XY)")
    digits = m.group(2)
    return Arch(cc=(int(digits[:-1]), int(digits[-1])), ptx=m.group(1) == "compute")


def parse_cc(text: str) -> CC:
    """`9.0` -> (9, 0); `sm_90` -> (9, 0); `12.0` -> (12, 0)."""
    t = text.strip().lower()
    if t.startswith(("sm_", "compute_")):
        return parse_arch(t).cc
    m = _CC_RE.match(t)
    if not m:
        raise ValueError(f"not a compute capability: {text!r} (expected X.Y or sm_XY)")
    return (int(m.group(1)), int(m.group(2)))


def sm_str(cc: CC) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def kernel_match(archs: tuple[Arch, ...], cc: CC) -> Arch | None:
    """The arch entry the driver loads on `cc`: the closest SASS of the same major (highest
    minor <= cc's), else the newest PTX <= cc (JIT); None when nothing runs."""
    sass: Arch | None = None
    ptx: Arch | None = None
    for a in archs:
        if a.ptx:
            if a.cc <= cc and (ptx is None or a.cc > ptx.cc):
                ptx = a
        elif a.cc[0] == cc[0] and a.cc[1] <= cc[1] and (sass is None or a.cc > sass.cc):
            sass = a
    return sass or ptx
