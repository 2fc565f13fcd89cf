"""Locking a project: resolve the spec, pin every package with hashes through uv, write the lock.

The lock model's names load when first used (PEP 562): `torchship lock` plans the primary uv
call and starts uv before it loads the model, which then loads while uv resolves (issue 20).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torchship._lazy import lazy_names
from torchship.errors import LockError, LockFileError, NothingFitsError

if TYPE_CHECKING:  # the resolver and uv's driver load only when a lock is made
    from pathlib import Path

    from torchship.compat.fleet import FleetResolution
    from torchship.compat.gpus import GPUTarget
    from torchship.compat.matrix import Matrix
    from torchship.compat.resolve import Resolution
    from torchship.lock.compile import EnvPlan
    from torchship.lock.model import (
        LOCK_FILE,
        Lock,
        LockedPackage,
        LockEnvironment,
        check_lock,
        export_requirements,
        lock_changes,
        read_lock,
        spec_changes,
        write_lock,
    )
    from torchship.lock.plan import CompilePlan
    from torchship.lock.uv import Runner
    from torchship.spec.model import Spec

__all__ = [
    "LOCK_FILE",
    "Lock",
    "LockEnvironment",
    "LockedPackage",
    "PreviousLock",
    "check_lock",
    "check_lock_file",
    "export_requirements",
    "lock_changes",
    "lock_fleet",
    "lock_spec",
    "read_lock",
    "resolve_spec",
    "resolve_spec_fleet",
    "spec_changes",
    "write_lock",
]

_MODEL = frozenset(__all__) - {
    "PreviousLock",
    "check_lock_file",
    "lock_fleet",
    "lock_spec",
    "resolve_spec",
    "resolve_spec_fleet",
}
__getattr__, __dir__ = lazy_names(globals(), dict.fromkeys(_MODEL, "torchship.lock.model"))


class PreviousLock:
    """The lock a new one replaces, read in two steps (torchship.lock.raw): its pins at once,
    unchecked, so that uv can start with them; the lock itself, checked as read_lock checks
    it, when `lock()` is first asked (lock_fleet asks while uv resolves). An unusable lock keeps
    no pins, and `problem` says why."""

    __slots__ = ("_checked", "_data", "_lock", "path", "pins", "problem")

    def __init__(self, path: Path) -> None:
        from torchship.lock.raw import environment_pins, load

        self.path = path
        self.problem: str | None = None
        self._lock: Lock | None = None
        self._data: dict[str, Any] | None = None
        try:
            self._data = load(path)
        except LockFileError as e:
            self.problem = e.message
        self._checked = self._data is None
        self.pins = None if self._data is None else environment_pins(self._data)

    def lock(self) -> Lock | None:
        """The previous lock, checked (once); None when it cannot be used."""
        if not self._checked:
            from torchship.lock.model import lock_from_toml

            assert self._data is not None
            try:
                self._lock = lock_from_toml(self._data, self.path)
            except LockFileError as e:
                self.problem = e.message
            self._checked, self._data = True, None  # not on ^C: then it was never checked
        return self._lock


def check_lock_file(lock: Lock, lock_path: Path) -> None:
    """Like `uv run`, never use a lock that the spec beside it has moved past (LockOutOfDateError
    naming each change); a lock without its spec is taken as it is."""
    from torchship.errors import UsageError
    from torchship.lock.model import check_lock
    from torchship.spec.load import find_spec_file, load_spec

    try:
        spec_file = find_spec_file(lock_path.parent)
    except UsageError:
        return  # a lock alone: nothing to compare with
    check_lock(load_spec(spec_file), lock, lock_path)


def resolve_spec(spec: Spec, matrix: Matrix | None = None) -> Resolution:
    """The resolution of the spec's primary platform (the first one), on the torch release
    common to every platform of its fleet."""
    return resolve_spec_fleet(spec, matrix).primary


def resolve_spec_fleet(spec: Spec, matrix: Matrix | None = None) -> FleetResolution:
    """One resolution per platform of the spec (named, or implied by its GPUs), all on one
    torch release."""
    from torchship.compat.fleet import resolve_fleet
    from torchship.compat.matrix import load_matrix
    from torchship.compat.request import request_from_spec

    m = matrix or load_matrix()
    return resolve_fleet(request_from_spec(spec, m), m)


def lock_spec(
    spec: Spec,
    find_links: Sequence[str | Path] = (),
    pytorch_index: str | None = None,
    pypi_index: str | None = None,
    runner: Runner | None = None,
    previous: Lock | PreviousLock | None = None,
    upgrade: Sequence[str] = (),
) -> tuple[Lock, Resolution]:
    """`lock_fleet`, answering with the primary platform's resolution."""
    lock, fleet = lock_fleet(spec, find_links, pytorch_index, pypi_index, runner, previous, upgrade)
    return lock, fleet.primary


def lock_fleet(
    spec: Spec,
    find_links: Sequence[str | Path] = (),
    pytorch_index: str | None = None,
    pypi_index: str | None = None,
    runner: Runner | None = None,
    previous: Lock | PreviousLock | None = None,
    upgrade: Sequence[str] = (),
) -> tuple[Lock, FleetResolution]:
    """Resolve and lock `spec`: the primary environment (the first platform's build), then,
    pinned to the same versions of every package but torch's build and its CUDA wheels, its
    `cpu` one and those of every other platform (`linux-aarch64-cu130`, `macos-arm64-cpu`,
    and that platform's cpu one where it has NVIDIA GPUs). `previous` pins are kept where the
    spec still allows them, except the packages in `upgrade` (":all:" for every one); a
    PreviousLock's are read unchecked so that uv starts at once, and uv starts again should the
    lock, checked while uv resolves, keep other pins. Raises NothingFitsError or LockError
    naming the platform; writes nothing."""
    from torchship.compat.platforms import LINUX_X86_64
    from torchship.lock.plan import plan_compile
    from torchship.lock.uv import UvCall

    fleet = resolve_spec_fleet(spec)
    _check_fleet(spec, fleet)
    primary, resolution = fleet.platforms[0]
    choice = resolution.chosen
    assert choice is not None  # _check_fleet
    several = len(fleet.platforms) > 1 or primary != LINUX_X86_64
    links = [str(f) for f in find_links]
    plan = plan_compile(spec, choice, links, pytorch_index, pypi_index)
    if several:
        plan = replace(plan, label=f"{primary} ({choice.variant.name})")
    fresh, name = plan, choice.variant.name
    plan = _with_history(fresh, previous, name, upgrade)
    call = UvCall(plan, runner)  # uv resolves the primary environment from here on
    try:  # meanwhile: what needs no answer from uv (the lock model loads with compile)
        from torchship.lock.compile import build_environment, build_lock, compile_all, compile_env
        from torchship.lock.model import is_cuda_package
        from torchship.lock.plan import plan_env_compile

        if isinstance(previous, PreviousLock):
            previous = previous.lock()
            checked = _with_history(fresh, previous, name, upgrade)
            if checked != plan:  # the lock, checked, keeps other pins (or none): uv again
                call.kill()
                plan, call = checked, UvCall(checked, runner)
        envs = _secondary_envs(spec, fleet, several)
        targets = _fleet_targets(spec) if several else None
        plan, packages = compile_env(plan, runner, started=call)
    except BaseException:
        call.kill()  # a failure of ours, or ^C: uv is stopped and nothing is written
        raise
    shared = [p.pin for p in packages if p.name != "torch" and not is_cuda_package(p.name)]
    plans = []
    for env in envs:
        eplan = plan_env_compile(
            spec, env.release, env.variant, links, pytorch_index, pypi_index, constraints=shared,
            label=env.name if several else "",
        )  # fmt: skip
        plans.append(_with_history(eplan, previous, env.name, upgrade))
    done = compile_all(plans, runner)
    environments = tuple(
        build_environment(spec, env.variant, pins, eplan, env if several else None)
        for env, (eplan, pins) in zip(envs, done, strict=True)
    )
    lock = build_lock(spec, resolution, packages, plan, environments, targets)
    return lock, fleet


def _check_fleet(spec: Spec, fleet: FleetResolution) -> None:
    """NothingFitsError when no torch release runs on every platform, or one has no build."""
    if fleet.problem:
        raise NothingFitsError(
            f"{spec.source}: {fleet.problem}",
            "pin a torch release every platform has (`torchship resolve --platform P …` "
            "lists them per platform), or drop a platform from [targets] platforms",
        )
    for name, res in fleet.platforms:
        if res.chosen is not None:
            continue
        from torchship.compat.explain import explain  # what would fit: only when nothing does

        first = res.rejected[0].reason if res.rejected else "no torch release matches"
        advice = explain(res)
        where = f" on {name}" if len(fleet.platforms) > 1 else ""
        raise NothingFitsError(
            f"{spec.source}: no torch build fits the targets{where} ({first})",
            advice[0].text if advice else "see `torchship resolve`",
        )


def _secondary_envs(spec: Spec, fleet: FleetResolution, several: bool) -> list[EnvPlan]:
    """Every environment but the primary, in lock order: the primary platform's cpu one, then
    per other platform its build and, where it has NVIDIA GPUs, its cpu one."""
    from torchship.compat.platforms import INFO
    from torchship.compat.resolve import base_image
    from torchship.lock.compile import EnvPlan
    from torchship.versions import driver_str

    out: list[EnvPlan] = []
    for i, (name, res) in enumerate(fleet.platforms):
        choice = res.chosen
        assert choice is not None
        rel, linux = choice.release, INFO[name].os == "linux"
        prefix = f"{name}-" if i else ""
        if i:
            driver = None if choice.min_driver is None else driver_str(choice.min_driver)
            image = choice.base_image if linux else None
            out.append(EnvPlan(prefix + choice.variant.name, name, rel, choice.variant, image,
                               driver))  # fmt: skip
        if not (spec.targets.cpu and INFO[name].nvidia and not choice.variant.is_cpu):
            continue
        cpu = rel.variant("cpu")
        if cpu is None:
            where = f" for {name}" if several else ""
            raise LockError(
                f"torch {rel.torch} has no CPU build{where} to lock a cpu environment from",
                "set `cpu = false` under [targets] to lock the CUDA environment alone",
            )
        image = None
        if i and linux and res.matrix is not None:
            image = base_image(res.matrix, cpu, None, spec.python)
        out.append(EnvPlan(prefix + "cpu", name if several else None, rel, cpu, image))
    names = [e.name for e in out]
    assert len(set(names)) == len(names), names  # one name, one environment
    return out


def _fleet_targets(spec: Spec) -> tuple[GPUTarget, ...]:
    """Every GPU target of the spec, in its order (each platform's resolution holds only those
    checked there)."""
    from torchship.compat.matrix import load_matrix
    from torchship.compat.request import request_from_spec

    return request_from_spec(spec, load_matrix()).gpus


def _with_history(
    plan: CompilePlan, previous: Lock | PreviousLock | None, env: str, upgrade: Sequence[str]
) -> CompilePlan:
    """The plan keeping the previous lock's pins of the same environment as preferences."""
    from torchship.lock.raw import kept_pins

    if isinstance(previous, PreviousLock):
        pins = kept_pins(previous.pins, env)
    elif previous is not None:
        by_env: dict[str, tuple[str, ...]] = {}
        for e in previous.all_environments():
            by_env.setdefault(e.name, tuple(p.pin for p in e.packages if p.name != "torch"))
        pins = kept_pins(by_env, env)
    else:
        pins = None
    if pins is None:
        return plan
    return replace(plan, preferences=pins, upgrade=tuple(upgrade))
