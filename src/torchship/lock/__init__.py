"""Locking a project: resolve the spec, pin every package with hashes through uv, write the lock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from torchship.errors import LockError, NothingFitsError
from torchship.lock.model import (
    LOCK_FILE,
    Lock,
    LockedPackage,
    LockEnvironment,
    check_lock,
    export_requirements,
    is_cuda_package,
    lock_changes,
    read_lock,
    spec_changes,
    write_lock,
)
from torchship.spec.model import Spec

if TYPE_CHECKING:  # the resolver and uv's driver load only when a lock is made
    from torchship.compat.matrix import Matrix
    from torchship.compat.resolve import Resolution
    from torchship.lock.compile import CompilePlan, Runner

__all__ = [
    "LOCK_FILE",
    "Lock",
    "LockEnvironment",
    "LockedPackage",
    "check_lock",
    "check_lock_file",
    "export_requirements",
    "lock_changes",
    "lock_spec",
    "read_lock",
    "resolve_spec",
    "spec_changes",
    "write_lock",
]


def check_lock_file(lock: Lock, lock_path: Path) -> None:
    """Like `uv run`, never use a lock that the spec beside it has moved past (LockOutOfDateError
    naming each change); a lock without its spec is taken as it is."""
    from torchship.errors import UsageError
    from torchship.spec.load import find_spec_file, load_spec

    try:
        spec_file = find_spec_file(lock_path.parent)
    except UsageError:
        return  # a lock alone: nothing to compare with
    check_lock(load_spec(spec_file), lock, lock_path)


def resolve_spec(spec: Spec, matrix: Matrix | None = None) -> Resolution:
    from torchship.compat.matrix import load_matrix
    from torchship.compat.request import request_from_spec
    from torchship.compat.resolve import resolve

    m = matrix or load_matrix()
    return resolve(request_from_spec(spec, m), m)


def lock_spec(
    spec: Spec,
    find_links: Sequence[str | Path] = (),
    pytorch_index: str | None = None,
    pypi_index: str | None = None,
    runner: Runner | None = None,
    previous: Lock | None = None,
    upgrade: Sequence[str] = (),
) -> tuple[Lock, Resolution]:
    """Resolve and lock `spec`: the primary environment, then the `cpu` one pinned to the same
    versions. `previous` pins are kept where the spec still allows them, except the packages
    in `upgrade` (":all:" for every one). Raises NothingFitsError or LockError; writes nothing."""
    from torchship.lock.compile import (
        build_environment,
        build_lock,
        compile_requirements,
        plan_compile,
        plan_env_compile,
    )

    resolution = resolve_spec(spec)
    choice = resolution.chosen
    if choice is None:
        first = resolution.rejected[0].reason if resolution.rejected else "no torch release matches"
        from torchship.compat.explain import explain

        advice = explain(resolution)
        raise NothingFitsError(
            f"{spec.source}: no torch build fits the targets ({first})",
            advice[0].text if advice else "see `torchship resolve`",
        )
    links = [str(f) for f in find_links]
    plan = plan_compile(spec, choice, links, pytorch_index, pypi_index)
    plan = _with_history(plan, previous, choice.variant.name, upgrade)
    packages = compile_requirements(plan, runner)
    environments: tuple[LockEnvironment, ...] = ()
    if spec.targets.cpu and choice.variant.name != "cpu":
        cpu = choice.release.variant("cpu")
        if cpu is None:
            raise LockError(
                f"torch {choice.release.torch} has no CPU build to lock a cpu environment from",
                "set `cpu = false` under [targets] to lock the CUDA environment alone",
            )
        shared = [p.pin for p in packages if p.name != "torch" and not is_cuda_package(p.name)]
        cplan = plan_env_compile(
            spec, choice.release, cpu, links, pytorch_index, pypi_index, constraints=shared
        )
        cplan = _with_history(cplan, previous, "cpu", upgrade)
        environments = (build_environment(spec, cpu, compile_requirements(cplan, runner), cplan),)
    return build_lock(spec, resolution, packages, plan, environments), resolution


def _with_history(
    plan: CompilePlan, previous: Lock | None, env: str, upgrade: Sequence[str]
) -> CompilePlan:
    """The plan keeping the previous lock's pins of the same environment as preferences."""
    old = previous.environment(env) if previous else None
    if old is None and previous is not None and env != "cpu":
        old = previous.primary  # the CUDA build moved (cu128 → cu130): keep the rest
    if old is None:
        return plan
    pins = tuple(p.pin for p in old.packages if p.name != "torch")
    return replace(plan, preferences=pins, upgrade=tuple(upgrade))
