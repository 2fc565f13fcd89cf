"""Which environment of the lock this machine runs, and why (pure: facts in, choice out).

First the platform: an environment installs only on the platform it was locked for —
`x86_64-manylinux_2_28` on Linux x86_64 with glibc 2.28 or newer, `aarch64-manylinux_2_28` on
Linux aarch64 likewise, `x86_64-pc-windows-msvc` on 64-bit Windows, `aarch64-apple-darwin` on a
Mac with Apple silicon at or above the environment's `macos_min` — and nowhere else. Among this
platform's environments, a GPU that a CUDA environment runs on (a driver at or above its floor,
kernels for every GPU's compute capability) picks that environment; otherwise the platform's
`cpu` one.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchship.compat.archs import kernel_match, parse_arch, parse_cc, sm_str
from torchship.compat.gpus import lookup_gpu
from torchship.compat.matrix import Matrix
from torchship.compat.platforms import INFO, PLATFORMS
from torchship.doctor.facts import Facts, GPUFact
from torchship.errors import EnvError, UnknownGPUError
from torchship.lock.model import Lock, LockEnvironment, lock_environment
from torchship.lock.validate import UV_PLATFORMS, uv_platform_problem
from torchship.versions import parse_version

# what platform.machine() says, as the platforms name it: Windows says AMD64, macOS arm64
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass(frozen=True, slots=True)
class Host:
    """The platform of a machine: its OS, its CPU, and the floor its system sets."""

    system: str | None  # "linux" | "windows" | "macos"; None: not known
    machine: str | None  # "x86_64" | "aarch64" (Apple's arm64 too); None: not known
    glibc: str | None = None  # Linux with glibc: its version
    macos: str | None = None  # macOS: its version, "14.5"

    @property
    def platform(self) -> str | None:
        """Its platform's name ("linux-aarch64"), or None when not known."""
        for name in PLATFORMS:
            info = INFO[name]
            if info.os == self.system and _MACHINES.get(info.machine) == self.machine:
                return name
        return None

    def describe(self) -> str:
        return self.platform or " ".join(x for x in (self.system, self.machine) if x) or "unknown"


def host_of(facts: Facts, system: str | None = None, macos: str | None = None) -> Host:
    """The platform `facts` describe. Facts say the CPU and glibc, not the OS: given `system`
    (platform.system() of the machine probed, lower-cased; "darwin" is macOS), else glibc or
    an /etc/os-release name means Linux and Apple's `arm64` or Windows' `AMD64` say the rest."""
    arch = facts.arch or ""
    if system is not None:
        system = {"darwin": "macos"}.get(system.lower(), system.lower())
    elif facts.glibc or facts.os:
        system = "linux"
    elif arch == "arm64":  # Linux says aarch64; Apple's name for the same CPU is arm64
        system = "macos"
    elif arch in ("AMD64", "ARM64"):  # Windows' names
        system = "windows"
    return Host(system, _MACHINES.get(arch.lower()), facts.glibc, macos or None)


@dataclass(frozen=True, slots=True)
class Pick:
    env: LockEnvironment
    reason: str  # one line: why this environment on this machine


def platform_problem(env: LockEnvironment, facts: Facts, host: Host | None = None) -> str | None:
    """Why `env` cannot be installed on the machine `facts` (and `host`) describe, or None
    when it can."""
    host = host or host_of(facts)
    target = env.platform_name
    if target not in INFO or uv_platform_problem(target, env.platform):
        return f"its platform {env.platform!r} is not one torchship installs"
    info = INFO[target]
    if host.system is not None and host.system != info.os:
        return f"it is locked for {target} ({env.platform}); this machine is {host.describe()}"
    if info.os == "linux":
        return _linux_problem(env, facts, host)
    if host.machine is not None and host.machine != _MACHINES[info.machine]:
        return f"it is locked for {target} ({env.platform}); this machine is {host.describe()}"
    floor = env.macos_min if info.os == "macos" else None
    if floor and host.macos and parse_version(host.macos) < parse_version(floor):
        return f"it is locked for {target} (macOS ≥ {floor}); this machine has macOS {host.macos}"
    return None


def _linux_problem(env: LockEnvironment, facts: Facts, host: Host) -> str | None:
    m = UV_PLATFORMS["linux"].fullmatch(env.platform)
    assert m is not None  # uv_platform_problem
    arch, glibc = m.group(1), (int(m.group(2)), int(m.group(3)))
    if host.machine is not None and host.machine != arch:
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


def gpu_cc(gpu: GPUFact, m: Matrix) -> tuple[int, int] | None:
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
    """Why the CUDA environment `env` cannot use this machine's GPUs, or None when it can:
    by its own driver floor and arch list (the lock's, for the primary environment)."""
    if not facts.driver:
        return "this machine has no NVIDIA driver"
    if not facts.gpus:
        return f"the NVIDIA driver {facts.driver} shows no GPU"
    floor = env.min_driver
    if floor and parse_version(facts.driver) < parse_version(floor):
        return f"{env.name} needs driver ≥ {floor}; this machine has {facts.driver}"
    archs = tuple(parse_arch(a) for a in env.arch_list)
    for g in facts.gpus:
        cc = gpu_cc(g, m)
        if cc is not None and archs and kernel_match(archs, cc) is None:
            return f"{env.name} has no kernels for GPU {g.index} {g.name} ({sm_str(cc)})"
    return None


def pick_environment(
    lock: Lock, facts: Facts, m: Matrix, name: str | None = None, host: Host | None = None
) -> Pick:
    """The environment to sync here: `name` when given, else by the rule above."""
    host = host or host_of(facts)
    if name is not None:
        env = lock_environment(lock, name)
        problem = platform_problem(env, facts, host)
        if problem:
            raise EnvError(
                f"environment {env.name} of {lock.name} cannot be installed here: {problem}",
                f"sync it on a {env.platform_name} machine, or add this machine's platform to "
                "[targets] platforms and re-lock",
            )
        return Pick(env, "asked for with --env")
    here = [e for e in lock.all_environments() if platform_problem(e, facts, host) is None]
    if not here:
        return _none_here(lock, facts, host)
    several = len(lock.platforms()) > 1
    on = f"{here[0].platform_name}: " if several else ""
    why_not = ""
    for env in (e for e in here if e.variant != "cpu"):
        problem = gpu_problem(lock, env, facts, m)
        if problem is None:
            return Pick(env, on + _runs(env, facts, m))
        why_not = problem
    cpu = next((e for e in here if e.variant == "cpu"), None)
    if cpu is None:
        raise EnvError(
            f"the lock of {lock.name} has no environment this machine can run: {why_not}",
            "run on a target machine, or re-lock with the cpu environment (the default; "
            "remove `cpu = false` from [targets]; a schema 1 lock needs `torchship lock`)",
        )
    build = "the CPU build" + (" (with MPS)" if INFO[cpu.platform_name].os == "macos" else "")
    return Pick(cpu, on + (f"{why_not}: {build}" if why_not else build))


def _runs(env: LockEnvironment, facts: Facts, m: Matrix) -> str:
    gpus = ", ".join(sorted({g.name for g in facts.gpus}))
    unknown = sorted({g.name for g in facts.gpus if gpu_cc(g, m) is None})
    caveat = (
        f" (compute capability of {', '.join(unknown)} unknown: kernels not confirmed;"
        " --env cpu to be sure)"
        if unknown
        else ""
    )
    return f"{gpus} with driver {facts.driver} runs {env.name}{caveat}"


def _none_here(lock: Lock, facts: Facts, host: Host) -> Pick:
    """No environment of the lock installs here: why, for this machine's platform's own
    environment when there is one (glibc, macOS too old), else naming the platforms there are."""
    envs = lock.all_environments()
    mine = next((e for e in envs if e.platform_name == host.platform), None)
    platforms = lock.platforms()
    if mine is not None or len(platforms) == 1:
        env = mine or lock.primary
        raise EnvError(
            f"environment {env.name} of {lock.name} cannot be installed here: "
            f"{platform_problem(env, facts, host)}",
            "sync it on a machine of that platform, or add this one to the spec and re-lock",
        )
    add = f'"{host.platform}"' if host.platform else "this machine's platform"
    raise EnvError(
        f"the lock of {lock.name} has environments for {', '.join(platforms)}, none for this "
        f"machine ({host.describe()})",
        f"add {add} to [targets] platforms and re-lock, or sync on a machine of those",
    )
