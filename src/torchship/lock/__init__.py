"""Locking a project: resolve the spec, pin every package with hashes through uv, write the lock."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torchship.compat.matrix import Matrix, load_matrix
from torchship.compat.request import request_from_spec
from torchship.compat.resolve import Resolution, resolve
from torchship.errors import NothingFitsError
from torchship.lock.compile import Runner, build_lock, compile_requirements, plan_compile
from torchship.lock.model import (
    LOCK_FILE,
    Lock,
    LockedPackage,
    check_lock,
    export_requirements,
    read_lock,
    spec_changes,
    write_lock,
)
from torchship.spec.model import Spec

__all__ = [
    "LOCK_FILE",
    "Lock",
    "LockedPackage",
    "check_lock",
    "export_requirements",
    "lock_spec",
    "read_lock",
    "resolve_spec",
    "spec_changes",
    "write_lock",
]


def resolve_spec(spec: Spec, matrix: Matrix | None = None) -> Resolution:
    m = matrix or load_matrix()
    return resolve(request_from_spec(spec, m), m)


def lock_spec(
    spec: Spec,
    find_links: Sequence[str | Path] = (),
    pytorch_index: str | None = None,
    pypi_index: str | None = None,
    runner: Runner | None = None,
) -> tuple[Lock, Resolution]:
    """Resolve and lock `spec`; raises NothingFitsError or LockError. Writes nothing."""
    resolution = resolve_spec(spec)
    if resolution.chosen is None:
        first = resolution.rejected[0].reason if resolution.rejected else "no torch release matches"
        raise NothingFitsError(
            f"{spec.source}: no torch build fits the targets ({first})",
            resolution.suggestions[0] if resolution.suggestions else "see `torchship resolve`",
        )
    plan = plan_compile(
        spec, resolution.chosen, [str(f) for f in find_links], pytorch_index, pypi_index
    )
    packages = compile_requirements(plan, runner)
    return build_lock(spec, resolution, packages, plan), resolution
