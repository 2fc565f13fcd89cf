"""Wheel files: which a find-links folder holds, and which platform and Python a wheel's tags
say it installs on (from its file name alone, as pip and uv read it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion

from torchship.compat.platforms import PlatformInfo


def wheel_fits(wheel: str, info: PlatformInfo, python: str = "") -> bool:
    """Whether a wheel's file name says it installs on this platform (a pure wheel does) and,
    given `python` ("3.12"), on that Python."""
    try:
        _, _, _, tags = parse_wheel_filename(wheel)
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return any(_tag_fits(t, info) and _python_fits(t, python) for t in tags)


def _tag_fits(tag: Tag, info: PlatformInfo) -> bool:
    plat = tag.platform
    if plat == "any":
        return True
    if info.os == "macos" and plat.startswith("macosx_") and plat.endswith("universal2"):
        return True
    prefix = {"linux": ("manylinux", "musllinux", "linux"), "windows": ("win",)}.get(
        info.os, ("macosx",)
    )
    machine = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64",), "arm64": ("arm64",)}
    return plat.startswith(prefix) and plat.endswith(machine[info.machine])


def _python_fits(tag: Tag, python: str) -> bool:
    if not python:
        return True
    major, minor = python.rstrip("t").split(".")[:2]
    interp = tag.interpreter
    if interp in ("py3", f"py{major}{minor}", f"cp{major}{minor}"):
        return True
    # a stable-ABI wheel (cp39-abi3) installs on every later CPython
    rest = interp.removeprefix(f"cp{major}")
    return tag.abi == "abi3" and rest != interp and rest.isdigit() and int(rest) <= int(minor)


def find_links_from_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    """pip's own find-links setting (PIP_FIND_LINKS: folders or URLs, space-separated), which
    torchship honours as pip does; uv does not read it."""
    return tuple(x for x in environ.get("PIP_FIND_LINKS", "").split() if x)


def wheels_in(find_links: Sequence[str], name: str, version: str) -> list[Path]:
    """Wheels of `name`==`version` (local part included) in the find-links folders. A folder
    named twice (`--find-links D` and PIP_FIND_LINKS=D) is read once: its wheel found twice
    looked like two builds of one version, and the lock hashed a 190 MB torch wheel twice to
    tell them apart."""
    out = []
    seen: set[Path] = set()
    for folder in find_links:
        path = Path(folder.removeprefix("file://"))
        if not path.is_dir() or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        for wheel in sorted(path.glob("*.whl")):
            try:
                wname, wversion, _, _ = parse_wheel_filename(wheel.name)
            except (InvalidWheelFilename, InvalidVersion):
                continue
            if canonicalize_name(wname) == canonicalize_name(name) and str(wversion) == version:
                out.append(wheel)
    return out
