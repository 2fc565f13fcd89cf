"""Parsing and comparing compute capabilities, arch tokens and driver versions.

Kernel rule (NVIDIA "CUDA C++ Programming Guide", binary compatibility): a cubin built for
sm_XY runs on any GPU of compute capability X.Z with Z >= Y (same major X only); PTX built for
compute_AB is JIT-compiled by the driver for any compute capability >= A.B. Three exceptions,
each from the same guide (sources in tools/research/platforms.md §4–5):
  - Tegra (Jetson): "binary compatibility is supported only for the desktop"; a cubin runs on
    a Jetson only when built for exactly its compute capability (sm_80 code does not run on
    Orin's 8.7);
  - arch-specific targets (`sm_90a`, `compute_100a`) run only on exactly that capability, as
    cubin and as PTX;
  - family-specific targets (`sm_100f`, CUDA 12.9+) run on the members of their family
    (FAMILIES below), which is not always the whole major.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torchship.errors import excerpt
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


# Compute capabilities run 1.0 (G80, 2006) to 12.1 (GB10, 2025) today (CUDA Programming Guide,
# "Compute Capabilities" table); majors up to 19 leave room for the next few generations, and
# a minor is one digit. So an arch token is sm_XY (X 1-9) or sm_1XY (10-19): `sm_900`, `sm_05`
# and `99.9` name no GPU that is or will soon be, and are refused rather than "fitting".
MAX_MAJOR = 19
_MAJOR = r"(?:[1-9]|1\d)"
_ARCH_RE = re.compile(rf"^(sm|compute)_({_MAJOR})(\d)([af]?)$")

# Family-specific targets -> the capabilities they run on (CUDA Programming Guide, "Feature
# Availability", family table). 10.7 appears only in the newest guide and is left out.
FAMILIES: dict[CC, frozenset[CC]] = {
    (10, 0): frozenset({(10, 0), (10, 3)}),
    (10, 3): frozenset({(10, 3)}),
    (11, 0): frozenset({(11, 0)}),
    (12, 0): frozenset({(12, 0), (12, 1)}),
    (12, 1): frozenset({(12, 1)}),
}

# The capabilities only Tegra (Jetson) GPUs have: TK1 3.2, TX1/Nano 5.3, TX2 6.2, Xavier 7.2,
# Orin 8.7, Thor 10.1 (as CUDA <= 12.9 names it) and 11.0 (CUDA 13).
TEGRA: frozenset[CC] = frozenset({(3, 2), (5, 3), (6, 2), (7, 2), (8, 7), (10, 1), (11, 0)})
_CC_RE = re.compile(rf"^({_MAJOR})\.(\d)$")


@dataclass(frozen=True, slots=True)
class Arch:
    """One entry of a build's arch list: SASS (`sm_90`) or PTX (`compute_120`)."""

    cc: CC
    ptx: bool
    suffix: str = ""  # "a": this capability only; "f": its family (FAMILIES)
    # `sm_90a`, `compute_120`: made once, as every JSON answer lists the chosen build's arches
    token: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        token = f"{'compute' if self.ptx else 'sm'}_{self.cc[0]}{self.cc[1]}{self.suffix}"
        object.__setattr__(self, "token", token)

    def runs_on(self, cc: CC) -> bool:
        """Whether the driver can load this entry on a GPU of capability `cc`."""
        if self.suffix == "a":
            return cc == self.cc
        if self.suffix == "f":
            return cc in FAMILIES.get(self.cc, frozenset({self.cc}))
        if self.ptx:
            return self.cc <= cc
        if cc in TEGRA:
            return cc == self.cc
        return self.cc[0] == cc[0] and self.cc[1] <= cc[1]


def parse_arch(token: str) -> Arch:
    """`sm_90` -> SASS 9.0; `compute_120` -> PTX 12.0; `sm_90a` -> SASS 9.0, 9.0 only."""
    m = _ARCH_RE.match(token.strip().lower())
    if not m:
        raise ValueError(
            f"not an arch token: {excerpt(token)} (expected sm_XY or compute_XY, "
            f"a compute capability X.Y with X from 1 to {MAX_MAJOR})"
        )
    return Arch(
        cc=(int(m.group(2)), int(m.group(3))), ptx=m.group(1) == "compute", suffix=m.group(4)
    )


def parse_cc(text: str) -> CC:
    """`9.0` -> (9, 0); `sm_90` -> (9, 0); `12.0` -> (12, 0)."""
    t = text.strip().lower()
    if t.startswith(("sm_", "compute_")):
        return parse_arch(t).cc
    m = _CC_RE.match(t)
    if not m:
        raise ValueError(
            f"not a compute capability: {excerpt(text)} (expected X.Y or sm_XY, X from 1 to "
            f"{MAX_MAJOR})"
        )
    return (int(m.group(1)), int(m.group(2)))


def sm_str(cc: CC) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def kernel_match(archs: tuple[Arch, ...], cc: CC) -> Arch | None:
    """The arch entry the driver loads on `cc`: the closest SASS that runs there (highest
    minor <= cc's in the same major; exactly cc on a Jetson), else the newest PTX <= cc (JIT);
    None when nothing runs."""
    sass: Arch | None = None
    ptx: Arch | None = None
    tegra = cc in TEGRA
    for a in archs:  # Arch.runs_on, inlined: the resolver's innermost loop
        if a.suffix:
            if not a.runs_on(cc):
                continue
        elif a.ptx:
            if a.cc > cc:
                continue
        elif a.cc[0] != cc[0] or a.cc[1] > cc[1] or (tegra and a.cc != cc):
            continue
        if a.ptx:
            if ptx is None or a.cc > ptx.cc:
                ptx = a
        elif sass is None or a.cc > sass.cc:
            sass = a
    return sass or ptx
