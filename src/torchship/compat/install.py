"""What keeps a torch release from installing on the targets, whatever its build (part of the
resolver, pure): no wheel for the Python, a glibc older than the wheels' manylinux floor, no
release of a domain library (torchvision, torchaudio) that installs beside it."""

from __future__ import annotations

from packaging.specifiers import SpecifierSet

from torchship.compat.archs import version_str
from torchship.compat.codes import (
    DOMAIN_LIBRARY_UNAVAILABLE,
    GLIBC_TOO_OLD,
    PYTHON_UNAVAILABLE,
)
from torchship.compat.matrix import Companion, Matrix, Release
from torchship.compat.request import Request


def install_problems(req: Request, m: Matrix, rel: Release) -> tuple[tuple[str, str], ...]:
    """What keeps every build of `rel` from installing (the same for each: judged once)."""
    if req.python is None and req.glibc is None and not req.domain_libraries:
        return ()
    out: list[tuple[str, str]] = []
    if req.python is not None and req.python not in rel.python:
        out.append(
            (
                PYTHON_UNAVAILABLE,
                f"torch {rel.torch} has no wheel for Python {req.python} "
                f"(has {', '.join(rel.python)})",
            )
        )
    if req.glibc is not None and rel.manylinux and req.glibc < rel.glibc_min:
        out.append(
            (
                GLIBC_TOO_OLD,
                f"torch {rel.torch} wheels are {rel.manylinux} and need glibc ≥ "
                f"{version_str(rel.glibc_min)}; the target has {version_str(req.glibc)}",
            )
        )
    for lib in req.domain_libraries:
        problem = companion_problem(req, m, rel, lib)
        if problem:
            out.append((DOMAIN_LIBRARY_UNAVAILABLE, problem))
    return tuple(out)


def companions_for(req: Request, m: Matrix, rel: Release, lib: str) -> tuple[Companion, ...]:
    """The releases of `lib` that install beside this torch for the request: they accept the
    torch, match the user's pin, and have a wheel for the Python that Requires-Python admits
    (oldest first)."""
    pin = SpecifierSet(dict(req.domain_pins).get(lib, ""))
    return tuple(
        c
        for c in m.companions_of(lib)
        if not c.yanked
        and c.accepts(rel.version)
        and pin.contains(c.version, prereleases=True)
        and (req.python is None or (c.has_wheel_for(req.python)
                                    and c.runs_on(req.python, req.python_patch)))
    )  # fmt: skip


def companion_problem(req: Request, m: Matrix, rel: Release, lib: str) -> str | None:
    """Why no release of `lib` installs beside torch `rel` for the request, or None."""
    rows = m.companions_of(lib)
    if not rows:  # a matrix without the companions' data: only the exact pairs are known
        pairs = rel.torchvision if lib == "torchvision" else rel.torchaudio
        return None if pairs else f"no {lib} release is paired with torch {rel.torch}"
    if companions_for(req, m, rel, lib):
        return None
    accepting = [c for c in rows if not c.yanked and c.accepts(rel.version)]
    if not accepting:
        return f"no {lib} release accepts torch {rel.torch}"
    pin = dict(req.domain_pins).get(lib, "")
    pinned = [c for c in accepting if SpecifierSet(pin).contains(c.version, prereleases=True)]
    if not pinned:
        wanted = [c for c in rows if SpecifierSet(pin).contains(c.version, prereleases=True)]
        needs = ", ".join(f"{c.version} needs torch {c.torch}" for c in wanted[-3:])
        return f"{lib}{pin} does not install beside torch {rel.torch}" + (
            f" ({needs})" if needs else f" (no {lib} release matches {pin})"
        )
    newest = pinned[-1]
    py = req.python or ""
    if not newest.has_wheel_for(py):
        return (f"{lib} {newest.version} (for torch {rel.torch}) has no wheel for Python {py} "
                f"(has {', '.join(newest.python)})")  # fmt: skip
    return (f"{lib} {newest.version} (for torch {rel.torch}) requires Python "
            f"{newest.requires_python}: {req.python_patch or py} is excluded")  # fmt: skip
