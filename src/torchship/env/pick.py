"""Which environment of the lock this machine runs, and why (pure: facts in, choice out).

A GPU that the CUDA environment runs on (a driver at or above the lock's floor, kernels for
every GPU's compute capability) picks that environment; otherwise the `cpu` one. The platform
rule: an environment locked for `x86_64-manylinux_2_28` installs on Linux x86_64 with glibc
2.28 or newer, and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torchship.compat.archs import kernel_match, parse_arch, parse_cc, sm_str
from torchship.compat.gpus import lookup_gpu
from torchship.compat.matrix import Matrix
from torchship.doctor.facts import Facts, GPUFact
from torchship.errors import EnvError, UnknownGPUError
from torchship.lock.model import Lock, LockEnvironment, lock_environment
from torchship.versions import parse_version

_PLATFORM_RE = re.compile(r"^(x86_64|aarch64)-manylinux_(\d+)_(\d+)$")


@dataclass(frozen=True, slots=True)
class Pick:
    env: LockEnvironment
    reason: str  # one line: why this environment on this machine


def platform_problem(env: LockEnvironment, facts: Facts) -> str | None:
    """Why `env` cannot be installed on the machine `facts` describe, or None when it can."""
    m = _PLATFORM_RE.match(env.platform)
    if m is None:
        return f"its platform {env.platform!r} is not one torchship installs"
    arch, glibc = m.group(1), (int(m.group(2)), int(m.group(3)))
    if facts.arch is not None and facts.arch != arch:
        return f"it is locked for {env.platform}; this machine is {facts.arch}"
    if facts.glibc is None:
        return f"it is locked for {env.platform}; this machine has no glibc (not glibc Linux)"
    have = parse_version(facts.glibc)
    if have < glibc:
        return (
            f"it is locked for {env.platform} (glibc ≥ {glibc[0]}.{glibc[1]}); "
            f"this machine has glibc {facts.glibc}"
        )
    return None


def _cc(gpu: GPUFact, m: Matrix) -> tuple[int, int] | None:
    if gpu.cc:
        try:
            return parse_cc(gpu.cc)
        except ValueError:
            pass
    try:
        target = lookup_gpu(m, gpu.name)
    except UnknownGPUError:
        return None
    return target.cc


def gpu_problem(lock: Lock, env: LockEnvironment, facts: Facts, m: Matrix) -> str | None:
    """Why the CUDA environment `env` cannot use this machine's GPUs, or None when it can."""
    if not facts.driver:
        return "this machine has no NVIDIA driver"
    if not facts.gpus:
        return f"the NVIDIA driver {facts.driver} shows no GPU"
    if lock.min_driver and parse_version(facts.driver) < parse_version(lock.min_driver):
        return f"{env.name} needs driver ≥ {lock.min_driver}; this machine has {facts.driver}"
    archs = tuple(parse_arch(a) for a in lock.arch_list)
    for g in facts.gpus:
        cc = _cc(g, m)
        if cc is not None and archs and kernel_match(archs, cc) is None:
            return f"{env.name} has no kernels for GPU {g.index} {g.name} ({sm_str(cc)})"
    return None


def pick_environment(lock: Lock, facts: Facts, m: Matrix, name: str | None = None) -> Pick:
    """The environment to sync here: `name` when given, else by the rule above."""
    if name is not None:
        env = lock_environment(lock, name)
        problem = platform_problem(env, facts)
        if problem:
            raise EnvError(
                f"environment {env.name} of {lock.name} cannot be installed here: {problem}",
                "sync it on a machine of that platform, or add this one to the spec and re-lock",
            )
        return Pick(env, "asked for with --env")
    envs = lock.all_environments()
    cuda = [e for e in envs if e.variant != "cpu"]
    cpu = next((e for e in envs if e.variant == "cpu"), None)
    why_not = ""
    for env in cuda:
        problem = platform_problem(env, facts) or gpu_problem(lock, env, facts, m)
        if problem is None:
            gpus = ", ".join(sorted({g.name for g in facts.gpus}))
            unknown = sorted({g.name for g in facts.gpus if _cc(g, m) is None})
            caveat = (
                f" (compute capability of {', '.join(unknown)} unknown: kernels not confirmed;"
                " --env cpu to be sure)"
                if unknown
                else ""
            )
            return Pick(env, f"{gpus} with driver {facts.driver} runs {env.name}{caveat}")
        why_not = problem
    if cpu is None:
        raise EnvError(
            f"the lock of {lock.name} has no environment this machine can run: {why_not}",
            "run on a target machine, or re-lock with the cpu environment (the default; "
            "remove `cpu = false` from [targets]; a schema 1 lock needs `torchship lock`)",
        )
    problem = platform_problem(cpu, facts)
    if problem:
        raise EnvError(
            f"environment cpu of {lock.name} cannot be installed here: {problem}",
            "sync it on a machine of that platform, or add this one to the spec and re-lock",
        )
    return Pick(cpu, f"{why_not}: the CPU build" if why_not else "the CPU build")
