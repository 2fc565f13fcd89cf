"""Value parsers for spec fields and CLI flags.

Each raises ValueError with a one-line reason; callers (the spec loader, the CLI) add the
file/field or flag so the user sees where the bad value came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from torchship.errors import excerpt
from torchship.versions import Version as NumVersion
from torchship.versions import parse_version

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from packaging.requirements import Requirement

_PY_RE = re.compile(r"^3\.(\d{1,2})(t?)$")
# `12`, `12.8`, `12.8.1`: a patch only after a minor, a minor taken whole (`12.10` is not `12`)
_CUDA_RE = re.compile(r"^(\d{2})(?:\.(\d{1,2})(?:\.\d+)?)?$")
_CU_RE = re.compile(r"^cu(\d{2})(\d)$")
# PEP 508's plain form: a name, extras, version specifiers; no URL, no markers, no `===` (whose
# arbitrary string may hold a comma). `[ \t]`, not `\s`: PEP 508's whitespace has no newline.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_SPEC = r"(?:~=|==|!=|<=|>=|<|>)[ \t]*[A-Za-z0-9.*+!_-]+"
_PLAIN_RE = re.compile(
    rf"[ \t]*({_NAME})[ \t]*(?:\[[ \t]*((?:{_NAME}(?:[ \t]*,[ \t]*{_NAME})*)?)[ \t]*\])?"
    rf"[ \t]*((?:{_SPEC})(?:[ \t]*,[ \t]*{_SPEC})*)?[ \t]*"
)
_COMMA_RE = re.compile(r"[ \t]*,[ \t]*")
_NAME_RE = re.compile(_NAME)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but the tab


def parse_torch(text: str) -> tuple[SpecifierSet, str | None]:
    """A torch version or range -> (specifier, CUDA pin from a `+cuXYZ` local part or None).

    `2.9.1` -> ==2.9.1; `2.9` -> ==2.9.* (its newest patch); `2` -> ==2.* (the newest 2.x, not
    2.0.0, which is what PEP 440's `==2` means); `2.9.1+cu128` -> ==2.9.1 and cuda
    12.8; anything else is a PEP 440 specifier set (`>=2.7,<2.10`). A pre-, post- or dev-release
    (`2.10.0rc1`, `2.9.1.post1`) is pinned as written, never as its final release: it then
    matches no release of the matrix and check_torch_known says so.
    """
    t = text.strip()
    if not t:
        raise ValueError("is empty; expected a torch version such as '2.9.1' or a range")
    try:
        v = Version(t)
    except InvalidVersion:
        try:
            return SpecifierSet(t), None
        except InvalidSpecifier:
            raise ValueError(
                f"{excerpt(t)} is not a torch version or PEP 440 range "
                "(e.g. '2.9.1', '>=2.7,<2.10')"
            ) from None
    cuda = None
    if v.local:
        cuda = parse_cuda(v.local)
    base = v.public  # the version less its local part: `2.9.1.post1` stays itself
    if len(v.release) <= 2 and not (v.is_prerelease or v.is_postrelease):
        return SpecifierSet(f"=={base}.*"), cuda
    return SpecifierSet(f"=={base}"), cuda


def parse_cuda(text: str) -> str:
    """`auto` | `cpu` | `12.8` | `cu128` | `12` (any 12.x) | `12.8.1` (-> 12.8). A minor is
    kept as given (`12.10`, `12.99`), as `99.9` is: no build has it, and the resolver says so."""
    t = str(text).strip().lower()
    if t in ("auto", "cpu"):
        return t
    m = _CU_RE.match(t)
    if m:
        return f"{int(m.group(1))}.{m.group(2)}"
    m = _CUDA_RE.match(t) if "." in t or t.isdigit() else None
    if m and 10 <= int(m.group(1)) <= 99:
        return f"{int(m.group(1))}" + (f".{int(m.group(2))}" if m.group(2) else "")
    raise ValueError(
        f"{excerpt(text)} is not a CUDA choice; expected 'auto', 'cpu', '12.8' or 'cu128'"
    )


def parse_python(text: str) -> str:
    t = str(text).strip()
    if not _PY_RE.match(t):
        raise ValueError(
            f"{excerpt(text)} is not a Python version; expected '3.X' or '3.Xt' (free-threaded)"
        )
    return t


def parse_driver(text: str) -> NumVersion:
    try:
        v = parse_version(str(text))
    except ValueError:
        raise ValueError(
            f"{excerpt(text)} is not a driver version; expected e.g. '580.65.06'"
        ) from None
    if not 200 <= v[0] <= 9999:
        raise ValueError(
            f"{excerpt(text)} is not an NVIDIA driver version; expected e.g. '580.65.06'"
        )
    return v


def parse_glibc(text: str) -> NumVersion:
    try:
        v = parse_version(str(text))
    except ValueError:
        raise ValueError(f"{excerpt(text)} is not a glibc version; expected e.g. '2.28'") from None
    if len(v) < 2 or v[0] != 2:
        raise ValueError(f"{excerpt(text)} is not a glibc version; expected e.g. '2.28'")
    return v


@dataclass(frozen=True, slots=True)
class PlainRequirement:
    """A requirement in PEP 508's plain form (`numpy`, `tqdm[notebook] >=4,<5`), read without
    packaging's PEP 508 parser: with its markers, tags, logging and platform that parser costs
    ~30 ms to load, before `torchship lock` can start uv (issue 20). The fields are those of
    packaging's Requirement; a plain requirement has no URL and no marker."""

    name: str
    extras: frozenset[str]
    specifier: SpecifierSet
    url: None = None
    marker: None = None


def is_package_name(text: str) -> bool:
    """PEP 508's rule for a name, which packaging.utils.canonicalize_name(validate=True)
    applies: here because packaging.utils imports packaging.tags (logging, platform,
    sysconfig), ~15 ms of every command that reads a lock (issue 20)."""
    return _NAME_RE.fullmatch(text) is not None


def read_requirement(text: str) -> PlainRequirement | Requirement:
    """A PEP 508 requirement: the plain form read here, anything else by packaging's parser
    (which alone decides what it rejects). ValueError with a one-line reason."""
    plain = _plain_requirement(text)
    if plain is not None:
        return plain
    if _CONTROL_RE.search(text):  # packaging takes `numpy>=\n1.0`: two lines of uv's input
        raise ValueError(f"{excerpt(text)} holds a line break or another control character")
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text)
    except InvalidRequirement as e:
        detail = str(e).splitlines()[0][:100] if str(e) else "invalid"
        raise ValueError(f"{excerpt(text)} is not a PEP 508 requirement ({detail})") from None


def pins_by_name(packages: Sequence[str], names: Collection[str]) -> dict[str, SpecifierSet]:
    """The specifiers of every package whose name (lower-case, `_` as `-`) is in `names`, the
    pins of one name combined as pip combines them (`x==1` and `x==2` make `==1,==2`, which no
    release meets); an unpinned one has an empty set. In the packages' order."""
    pins: dict[str, SpecifierSet] = {}
    for p in packages:
        r = read_requirement(p)
        name = r.name.lower().replace("_", "-")
        if name in names:
            pins[name] = pins.get(name, SpecifierSet()) & r.specifier
    return pins


def _plain_requirement(text: str) -> PlainRequirement | None:
    """The requirement when `text` is in the plain form and its specifiers are valid PEP 440,
    else None: packaging's parser then decides (tests/unit/test_spec_requirements.py holds
    the two to the same answer)."""
    m = _PLAIN_RE.fullmatch(text)
    if m is None:
        return None
    name, extras, specs = m.groups()
    try:
        specifier = SpecifierSet(specs or "")  # each PEP 440 specifier, as packaging checks it
    except InvalidSpecifier:
        return None
    return PlainRequirement(name, frozenset(_COMMA_RE.split(extras) if extras else ()), specifier)


def parse_requirement(
    text: str, torch_by: str = "the top-level `torch` field, not in packages"
) -> PlainRequirement | Requirement:
    """A PEP 508 requirement of the spec's packages; torch itself is set by `torch_by` (the
    spec's `torch` field, `--torch`), never here."""
    req = read_requirement(str(text))
    if req.name.lower() == "torch":
        raise ValueError(f"torch is set by {torch_by}")
    return req
