"""Locking: plan the `uv pip compile` call (pure, plan.py), run it (I/O, uv.py), read its answer
and build the Lock (pure, here).

uv resolves for the target, not for this host: `--python-version` of the spec and
`--python-platform` of the environment's platform — `x86_64-manylinux_2_XX` or
`aarch64-manylinux_2_XX` at the wheels' glibc floor (or the fleet's, if higher),
`x86_64-pc-windows-msvc`, `aarch64-apple-darwin` — and `--generate-hashes` records the sha256 of
every file of each pinned version.

On macOS uv takes the oldest macOS to resolve for from MACOSX_DEPLOYMENT_TARGET, not from the
platform string, and assumes 13.0 for aarch64-apple-darwin without it (uv 0.13.9, measured):
torch ≥ 2.12 ships only `macosx_14_0_arm64` wheels, so uv answers "torch==2.13.0 has no wheels
with a matching platform tag (e.g., `macosx_13_0_arm64`)". The plan sets it in uv's environment
to the oldest macOS the release's wheel for the spec's Python is built for (14.0 for torch ≥
2.12, 11.0 before, except some Pythons' wheels), and `compile_env` corrects it once from uv's
own list of torch's tags where the matrix falls short.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torchship.compat.gpus import GPUTarget
from torchship.compat.matrix import Release, Variant
from torchship.compat.platforms import INFO
from torchship.compat.resolve import Resolution
from torchship.errors import LockError
from torchship.lock.model import (
    FLEET_SCHEMA_VERSION,
    LOCK_SCHEMA_VERSION,
    Lock,
    LockedGPU,
    LockedPackage,
    LockEnvironment,
    drop_none,
)
from torchship.lock.plan import (
    CompilePlan,
    companion_versions,
    plan_compile,
    plan_env_compile,
    platform_for,
)
from torchship.lock.uv import Group, Runner, UvCall
from torchship.lock.uv_errors import failure as _failure
from torchship.lock.uv_errors import macos_floor
from torchship.lock.wheels import wheel_fits, wheels_in
from torchship.spec.model import Spec
from torchship.versions import driver_str, version_str

__all__ = [  # with the planning names tests import from here (torchship.lock.plan)
    "CompilePlan",
    "EnvPlan",
    "Runner",
    "build_environment",
    "build_lock",
    "companion_versions",
    "compile_all",
    "compile_env",
    "compile_requirements",
    "parse_compiled",
    "plan_compile",
    "plan_env_compile",
    "platform_for",
    "wheel_fits",
]


def compile_all(
    plans: Sequence[CompilePlan], runner: Runner | None = None
) -> list[tuple[CompilePlan, tuple[LockedPackage, ...]]]:
    """`compile_env` for every plan at once (uv waits on the network, not the CPU), answers in
    the plans' order. The first failure stops the others and is raised."""
    if len(plans) <= 1:
        return [compile_env(p, runner) for p in plans]
    # with logging: ~12 ms on two busy cores, while uv resolves the primary (issue 20)
    from concurrent.futures import ThreadPoolExecutor, as_completed

    group = Group()
    with ThreadPoolExecutor(max_workers=min(len(plans), 6)) as pool:
        futures = {pool.submit(compile_env, p, runner or group.run): i
                   for i, p in enumerate(plans)}  # fmt: skip
        answers: dict[int, tuple[CompilePlan, tuple[LockedPackage, ...]]] = {}
        for done in as_completed(futures):
            try:
                answers[futures[done]] = done.result()
            except Exception:
                if not group.stopped:  # the first to fail: the others are killed, not failed
                    group.stop()
                    raise
    return [answers[i] for i in range(len(plans))]


def compile_requirements(
    plan: CompilePlan, runner: Runner | None = None
) -> tuple[LockedPackage, ...]:
    """Run uv (through `runner`, the I/O seam) and parse what it pinned."""
    return compile_env(plan, runner)[1]


def compile_env(
    plan: CompilePlan, runner: Runner | None = None, started: UvCall | None = None
) -> tuple[CompilePlan, tuple[LockedPackage, ...]]:
    """`compile_requirements`, answering with the plan uv succeeded with: on macOS, where torch
    has no wheel for this Python at the release's floor, once more at the floor its wheels say
    (uv_errors.macos_floor), which the environment then records. `started`: this plan's call,
    already under way."""
    code, text, stderr = (started or UvCall(plan, runner)).result()
    if code != 0 and plan.macos_min:
        machine = "arm64" if plan.platform.startswith("aarch64") else "x86_64"
        floor = macos_floor(stderr, plan.macos_min, machine)
        if floor is not None:
            plan = replace(plan, macos_min=floor)
            code, text, stderr = UvCall(plan, runner).result()
    if code != 0:
        raise _failure(plan, stderr, plan.expected_torch)
    return plan, parse_compiled(text, plan.find_links)


_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_HASH_RE = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
_FROM_RE = re.compile(r"^#\s*from\s+(\S+)")


def parse_compiled(text: str, find_links: Sequence[str] = ()) -> tuple[LockedPackage, ...]:
    """Parse `uv pip compile --generate-hashes --emit-index-annotation` output. A package that
    came from a find-links folder records the wheel's file name instead of an index."""
    packages: list[LockedPackage] = []
    name = version = source = None
    hashes: list[str] = []

    def flush() -> None:
        if name and version:
            packages.append(_located(name, version, tuple(hashes), source, find_links))

    for raw in text.splitlines():
        stripped = raw.strip()
        m_from = _FROM_RE.match(stripped)
        if m_from:
            source = m_from.group(1)
            continue
        line = raw.split("#", 1)[0].strip() if not stripped.startswith("--hash") else stripped
        if not line:
            continue
        m = _PIN_RE.match(line)
        if m:
            flush()
            name, version, hashes, source = m.group(1).lower(), m.group(3), [], None
        hashes += _HASH_RE.findall(line)
    flush()
    return tuple(sorted(packages, key=lambda p: p.name))


def _located(
    name: str, version: str, hashes: tuple[str, ...], source: str | None, links: Sequence[str]
) -> LockedPackage:
    if source is None or not source.startswith("file://"):
        return LockedPackage(name, version, hashes, source)
    wheels = wheels_in(links or (source,), name, version)
    if len(wheels) > 1:  # several builds of one version: the one whose hash uv recorded
        wheels = [w for w in wheels if "sha256:" + _sha256(w) in hashes] or wheels
    return LockedPackage(name, version, hashes, None, wheels[0].name if wheels else None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pinned(packages: tuple[LockedPackage, ...], prefix: str) -> str | None:
    for p in packages:
        if p.name.startswith(prefix):
            return p.version
    return None


def _locked_torch(packages: tuple[LockedPackage, ...], plan: CompilePlan) -> str:
    torch = next((p.version for p in packages if p.name == "torch"), None)
    if torch != plan.expected_torch:
        at = f"{plan.label}: " if plan.label else ""
        raise LockError(
            f"{at}uv locked torch {torch} where {plan.expected_torch} was resolved",
            "check --find-links/--pytorch-index: they must serve the resolved build",
        )
    return torch


@dataclass(frozen=True, slots=True)
class EnvPlan:
    """One environment of the lock besides the primary one, before uv runs: its name, the
    build, and what the machine running it needs (pure data, from the fleet's resolution)."""

    name: str  # "cpu" | "linux-aarch64-cu130" | "macos-arm64-cpu"
    target: str | None  # the platform's name; None in a lock for linux-x86_64 alone
    release: Release  # the torch release as published for that platform
    variant: Variant
    base_image: str | None = None  # Linux platforms other than the primary's
    min_driver: str | None = None  # CUDA builds of platforms other than the primary's


def build_environment(
    spec: Spec,
    variant: Variant,
    packages: tuple[LockedPackage, ...],
    plan: CompilePlan,
    env: EnvPlan | None = None,
) -> LockEnvironment:
    """A secondary environment of the lock (`cpu`, `linux-aarch64-cu130`) from what uv pinned
    for it (pure)."""
    return LockEnvironment(
        name=env.name if env else variant.name,
        torch=_locked_torch(packages, plan),
        variant=variant.name,
        cuda=None if variant.cuda is None else variant.cuda_str,
        python=spec.python,
        platform=plan.platform,
        index_url=plan.torch_index,
        packages=packages,
        target=env.target if env else None,
        macos_min=plan.macos_min or None,
        base_image=env.base_image if env else None,
        min_driver=env.min_driver if env else None,
        arch_list=variant.arch_tokens() if env and env.min_driver else (),
    )


def build_lock(
    spec: Spec,
    resolution: Resolution,
    packages: tuple[LockedPackage, ...],
    plan: CompilePlan,
    environments: tuple[LockEnvironment, ...] = (),
    fleet: tuple[GPUTarget, ...] | None = None,
) -> Lock:
    """The lock for a resolved spec and what uv pinned (pure). `fleet`: every GPU target of a
    lock for several platforms (the primary's resolution checks only those of its platform);
    such a lock names each environment's platform and is schema 3."""
    choice = resolution.chosen
    assert choice is not None
    torch = _locked_torch(packages, plan)
    v = choice.variant
    rel = choice.release
    linux = INFO[rel.platform].os == "linux"
    targets = resolution.targets if fleet is None else fleet
    return Lock(
        spec_hash=spec.spec_hash,
        spec=drop_none(spec.to_dict()),
        name=spec.name,
        torch=torch,
        variant=v.name,
        cuda=None if v.cuda is None else v.cuda_str,
        python=spec.python,
        platform=plan.platform,
        index_url=choice.index_url if not plan.extra_index_url else plan.extra_index_url,
        arch_list=v.arch_tokens(),
        min_driver=None if choice.min_driver is None else driver_str(choice.min_driver),
        base_image=choice.base_image,
        glibc_min=version_str(rel.glibc_min) if linux else "",
        cudnn=_pinned(packages, "nvidia-cudnn-cu") or v.cudnn,
        nccl=_pinned(packages, "nvidia-nccl-cu") or v.nccl,
        gpus=tuple(LockedGPU(t.label, f"{t.cc[0]}.{t.cc[1]}") for t in targets),
        driver_target=spec.targets.driver,
        packages=packages,
        environments=environments,
        schema_version=LOCK_SCHEMA_VERSION if fleet is None else FLEET_SCHEMA_VERSION,
        target=None if fleet is None else rel.platform,
        macos_min=plan.macos_min or None,
    )
