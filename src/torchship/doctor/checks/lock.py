"""The lock layer: is this interpreter one of the lock's environments, and if not, how does it
differ from the closest one?"""

from __future__ import annotations

from dataclasses import dataclass

from torchship.doctor.checks.base import (
    CUDA_RUNTIME_WHEELS,
    ERROR,
    INFO,
    Check,
    Context,
    Finding,
    torch_variant,
)
from torchship.doctor.facts import Facts
from torchship.lock.model import LockEnvironment


@dataclass(frozen=True, slots=True)
class _EnvDiff:
    env: LockEnvironment
    diffs: tuple[str, ...]
    pins: tuple[str, ...]
    core: bool  # torch or Python differ: pinning packages will not do


def _env_diff(f: Facts, env: LockEnvironment, cpu_job: bool) -> _EnvDiff:
    diffs, pins = [], []
    variant = torch_variant(f)
    locked_base = env.torch.split("+", 1)[0]
    # A CPU job computes the same on any build of the locked torch version: the CUDA variant
    # and the CUDA runtime wheels it pulls in do not matter to it.
    other_variant = variant and variant != env.variant and not cpu_job
    torch_differs = (f.torch or "").split("+", 1)[0] != locked_base or bool(other_variant)
    if torch_differs:
        diffs.append(f"torch {f.torch or 'missing'} (locked {locked_base}+{env.variant})")
    python_differs = f.python is not None and not f.python.startswith(env.python.rstrip("t") + ".")
    if python_differs:
        diffs.append(f"Python {f.python} (locked {env.python})")
    if f.origin not in ("collect-env", "report"):  # a report lists only a few
        for p in env.packages:
            have = f.packages.get(p.name)
            if cpu_job and p.name.startswith(CUDA_RUNTIME_WHEELS):
                continue
            if p.name != "torch" and have != p.version:
                diffs.append(f"{p.name} {have or 'missing'} (locked {p.version})")
                pins.append(f"{p.name}=={p.version}")
    return _EnvDiff(env, tuple(diffs), tuple(pins), torch_differs or python_differs)


def lock_mismatch(ctx: Context) -> list[Finding]:
    """Which environment of the lock this interpreter is (info), or how it differs from the
    closest one (error)."""
    f, lock = ctx.facts, ctx.lock
    if lock is None:
        return []
    envs = lock.all_environments()
    scored = [_env_diff(f, e, ctx.cpu_job) for e in envs]
    build = torch_variant(f)  # the installed build picks its environment first: cpu, cu130
    best = min(scored, key=lambda d: (bool(build) and build != d.env.variant, d.core, len(d.diffs)))
    if not best.diffs:
        return [
            Finding(
                "lock-environment",
                INFO,
                f"this interpreter matches environment {best.env.name} of {lock.name}'s lock "
                f"(torch {best.env.torch}, {len(best.env.packages)} packages)",
                "",
            )
        ]
    diffs = best.diffs
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    fix = (
        "run in the locked environment: `torchship sync` builds it, "
        "`torchship exec --local -- CMD` runs a command in it; or run in the locked image"
    )
    if best.pins and not best.core and len(best.pins) <= 10:
        fix = f"install the locked versions: `pip install {' '.join(best.pins)}`, or {fix}"
    closest = f" (closest: environment {best.env.name})" if len(envs) > 1 else ""
    return [
        Finding(
            "lock-mismatch",
            ERROR,
            f"the installed stack differs from {lock.name}'s lock{closest}: {shown}",
            fix,
        )
    ]


CHECKS = (Check(("lock-mismatch", "lock-environment"), "lock", "lock", lock_mismatch),)
