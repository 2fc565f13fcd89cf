"""Dotted numeric versions: NVIDIA drivers (580.65.06), CUDA releases (12.8.1), glibc (2.28)."""

from __future__ import annotations

import re

Version = tuple[int, ...]
"""A dotted numeric version such as a driver (580, 65, 6) or a CUDA release (12, 8)."""

_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")


def parse_version(text: str) -> Version:
    """`580.65.06` -> (580, 65, 6). Raises ValueError on anything else."""
    t = text.strip()
    if not _VERSION_RE.match(t) or len(t) > 40:
        raise ValueError(f"not a dotted version: {text!r}")
    return tuple(int(p) for p in t.split("."))


def version_str(v: Version) -> str:
    return ".".join(str(p) for p in v)


def driver_str(v: Version) -> str:
    """NVIDIA prints the third driver component zero-padded: (580, 65, 6) -> '580.65.06'."""
    parts = [str(p) for p in v[:2]] + [f"{p:02d}" for p in v[2:]]
    return ".".join(parts)
