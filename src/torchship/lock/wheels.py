"""Wheel files: which a find-links folder holds, and which platform and Python a wheel's tags
say it installs on (from its file name alone, as pip and uv read it)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from torchship.compat.platforms import PlatformInfo

# A wheel's file name, read here rather than with packaging.utils.parse_wheel_filename: that
# imports packaging.tags (with logging and sysconfig), ~20 ms before `torchship lock` can start
# uv. The format: {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl, each tag part a
# dot-separated set (packaging.python.org, "Binary distribution format"); names compare as
# PEP 503 normalises them.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?$")
_VERSION = re.compile(r"^v?\d[A-Za-z0-9.!+_]*$")  # PEP 440's characters; packaging decides
_SEPARATORS = re.compile(r"[-_.]+")
# What packaging.utils.parse_wheel_filename (26.3 and later) holds a wheel's name to, in full:
# PEP 427's escaped project name (no "__"), a PEP 440 version, a build tag that starts with a
# digit, and three dot-separated tag sets with no empty member, each interpreter an identifier
_WHEEL_PROJECT = re.compile(r"^[\w._]+\Z")
_BUILD_TAG = re.compile(r"(\d+)(.*)\Z", re.ASCII)


class Tag(NamedTuple):
    interpreter: str
    abi: str
    platform: str


def canonical_name(name: str) -> str:
    return _SEPARATORS.sub("-", name).lower()


def wheel_name(filename: str) -> tuple[str, str, tuple[Tag, ...]] | None:
    """(name, version, tags) of a wheel's file name; None when it is not one."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6) or not _NAME.match(parts[0]) or not _VERSION.match(parts[1]):
        return None
    if len(parts) == 6 and not parts[2][:1].isdigit():  # a build tag starts with a digit
        return None
    pythons, abis, platforms = (p.split(".") for p in parts[-3:])
    # each once, in order: a set may name one twice (lxml-5.3.2-cp310-cp310-win32.win32.whl)
    tags = tuple(dict.fromkeys(Tag(i, a, p) for i in pythons for a in abis for p in platforms))
    return parts[0], parts[1], tags


def valid_wheel_filename(filename: str) -> bool:
    """Whether `filename` is a wheel's file name as packaging.utils.parse_wheel_filename reads
    one (26.3 and later; tests/unit/test_wheel_filenames.py holds the two to one answer on
    3,364 names published on PyPI and their mutations): here because packaging.utils imports
    packaging.tags, with logging and platform (~18 ms of every `run`, `sync` and `exec` that
    reads a lock made from a find-links folder). Stricter than wheel_name, which only finds
    wheels in a folder."""
    if not filename.endswith(".whl"):
        return False
    stem = filename[:-4]
    dashes = stem.count("-")
    if dashes not in (4, 5):
        return False
    parts = stem.split("-", dashes - 2)  # the tags keep their two dashes
    if "__" in parts[0] or _WHEEL_PROJECT.match(parts[0]) is None:
        return False
    from packaging.version import InvalidVersion, Version

    try:
        Version(parts[1])
    except InvalidVersion:
        return False
    if dashes == 5 and _BUILD_TAG.match(parts[2]) is None:
        return False
    interpreters, abis, platforms = (t.split(".") for t in parts[-1].split("-"))
    if "" in interpreters or "" in abis or "" in platforms:
        return False
    return all(i.isidentifier() for i in interpreters)


def _same_version(wheel_version: str, version: str) -> bool:
    if wheel_version == version:
        return True
    from packaging.version import InvalidVersion, Version  # a spelling that is not the norm

    try:
        return str(Version(wheel_version)) == version
    except InvalidVersion:
        return False


def wheel_fits(wheel: str, info: PlatformInfo, python: str = "") -> bool:
    """Whether a wheel's file name says it installs on this platform (a pure wheel does) and,
    given `python` ("3.12"), on that Python."""
    parsed = wheel_name(wheel)
    if parsed is None:
        return False
    return any(_tag_fits(t, info) and _python_fits(t, python) for t in parsed[2])


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


def find_links_with_env(given: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The folders given, then pip's own find-links setting (PIP_FIND_LINKS: folders or URLs,
    space-separated), which torchship honours as pip does and uv does not read; each once
    (`--find-links D` with PIP_FIND_LINKS=D named D twice in every uv call)."""
    return list(dict.fromkeys([*given, *environ.get("PIP_FIND_LINKS", "").split()]))


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
        for wheel in _wheel_files(path):
            parsed = wheel_name(wheel.name)
            if parsed is None:
                continue
            wname, wversion, _ = parsed
            if canonical_name(wname) == canonical_name(name) and _same_version(wversion, version):
                out.append(wheel)
    return out


def _wheel_files(folder: Path) -> list[Path]:
    """What `sorted(folder.glob("*.whl"))` lists (nothing from a folder it may not read),
    without compiling glob's pattern before `torchship lock` starts uv (issue 20)."""
    try:
        return sorted(p for p in folder.iterdir() if p.name.endswith(".whl"))
    except PermissionError:
        return []
