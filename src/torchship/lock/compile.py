"""Locking: plan the `uv pip compile` call (pure), run it (I/O), build the Lock (pure).

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
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import Requirement

from torchship.compat.gpus import GPUTarget
from torchship.compat.matrix import PYPI_INDEX, PYTORCH_INDEX, Release, Variant, load_matrix
from torchship.compat.platforms import INFO, LINUX_X86_64, PlatformInfo
from torchship.compat.resolve import Choice, Resolution
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
from torchship.lock.uv_errors import UV_NET_ERRORS, UV_URL_RE, macos_floor
from torchship.lock.uv_errors import failure as _failure
from torchship.lock.wheels import find_links_from_env, wheel_fits, wheels_in
from torchship.spec.model import Spec
from torchship.versions import driver_str, version_str

__all__ = [  # with what env/sync.py and others import from here (uv_errors, wheels)
    "UV_NET_ERRORS",
    "UV_URL_RE",
    "CompilePlan",
    "EnvPlan",
    "Runner",
    "build_environment",
    "build_lock",
    "companion_versions",
    "compile_all",
    "compile_env",
    "compile_requirements",
    "find_links_from_env",
    "find_uv",
    "parse_compiled",
    "plan_compile",
    "plan_env_compile",
    "platform_for",
    "wheel_fits",
    "wheels_in",
]

# (argv, stdin, variables to set in uv's environment) -> the finished process
Runner = Callable[[Sequence[str], str, Mapping[str, str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True, slots=True)
class CompilePlan:
    requirements: tuple[str, ...]
    python_version: str  # uv has no free-threaded target; "3.13t" resolves as "3.13"
    platform: str
    index_url: str
    extra_index_url: str | None
    find_links: tuple[str, ...]
    expected_torch: str  # what the lock must end up with, "2.9.1+cu126" or "2.9.1"
    env: str = ""  # the lock environment this is for: "cu130", "cpu"
    torch_index: str = PYPI_INDEX  # where this build of torch is published
    constraints: tuple[str, ...] = ()  # pins shared with the primary environment
    preferences: tuple[str, ...] = ()  # the previous lock's pins: kept where still allowed
    upgrade: tuple[str, ...] = ()  # packages to move past their previous pins; ":all:" = all
    target: str = LINUX_X86_64  # the platform's name
    macos_min: str = ""  # macOS: the oldest macOS the wheels are for (MACOSX_DEPLOYMENT_TARGET)
    label: str = ""  # named in errors where a lock has several platforms: "linux-aarch64-cpu"

    @property
    def environ(self) -> dict[str, str]:
        """What uv's environment must hold: on macOS, the floor to resolve for (see above)."""
        return {"MACOSX_DEPLOYMENT_TARGET": self.macos_min} if self.macos_min else {}

    def argv(self, uv: str, constraints_file: str = "", output_file: str = "") -> list[str]:
        args = [
            uv,
            "pip",
            "compile",
            "-",
            "--generate-hashes",
            "--no-header",
            "--emit-index-annotation",
            "--no-config",
            "--quiet",
            "--python-version",
            self.python_version,
            "--python-platform",
            self.platform,
            "--index-url",
            self.index_url,
        ]
        if self.extra_index_url:
            args += ["--extra-index-url", self.extra_index_url]
        for fl in self.find_links:
            args += ["--find-links", fl]
        if self.constraints:
            args += ["--constraint", constraints_file or "<constraints.txt>"]
        if self.preferences:  # uv keeps the pins of an existing output file unless upgraded
            args += ["--output-file", output_file or "<previous pins>"]
        if ":all:" in self.upgrade:
            args.append("--upgrade")
        else:
            for name in self.upgrade:
                args += ["--upgrade-package", name]
        return args

    @property
    def stdin(self) -> str:
        return "\n".join(self.requirements) + "\n"


def platform_for(glibc: tuple[int, ...]) -> str:
    return INFO[LINUX_X86_64].uv_target(glibc)


def companion_versions(name: str, release: Release, python: str) -> tuple[str, ...]:
    """The torchvision / torchaudio releases that install beside this torch on this Python,
    oldest first: the ones made for it (`==torch`) when there are, else those whose `>=`
    accepts it (torchvision 0.29.2 for torch 2.15); () for any other package."""
    if name not in ("torchvision", "torchaudio"):
        return ()
    pairs = release.torchvision if name == "torchvision" else release.torchaudio
    fits = tuple(
        c.version
        for c in load_matrix().companions_of(name)
        if not c.yanked and c.accepts(release.version) and c.has_wheel_for(python)
        and c.runs_on(python, None)
    )  # fmt: skip
    made_for = tuple(v for v in fits if v in pairs)
    return made_for or fits or pairs


def _requirements(spec: Spec, release: Release, torch: str) -> list[str]:
    # `===` (exact string): `==2.13.0` would also match a local build such as 2.13.0+cpu in a
    # find-links folder, and the environment would get the wrong build of torch.
    reqs = [f"torch==={torch}"]
    for p in spec.packages:
        r = Requirement(p)
        pairs = companion_versions(r.name.lower(), release, spec.python)
        if pairs and not r.specifier and not r.url:  # pin the release paired with this torch
            reqs.append(
                f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}"
                f"=={pairs[-1]}" + (f"; {r.marker}" if r.marker else "")
            )
        else:
            reqs.append(p)
    if spec.image.jupyter and "jupyterlab" not in {Requirement(r).name.lower() for r in reqs}:
        reqs.append("jupyterlab")  # the jupyter image variant runs it, so it is locked too
    return reqs


def plan_compile(
    spec: Spec,
    choice: Choice,
    find_links: Sequence[str] = (),
    pytorch_index: str | None = None,
    pypi_index: str | None = None,
) -> CompilePlan:
    """The exact uv call for this spec and the resolver's choice (pure)."""
    return plan_env_compile(
        spec, choice.release, choice.variant, find_links, pytorch_index, pypi_index
    )


def plan_env_compile(
    spec: Spec,
    release: Release,
    variant: Variant,
    find_links: Sequence[str] = (),
    pytorch_index: str | None = None,
    pypi_index: str | None = None,
    constraints: Sequence[str] = (),
    has_wheel: Callable[[str], bool] | None = None,
    label: str = "",
) -> CompilePlan:
    """The uv call that locks one environment: `variant`'s build of `release` as published for
    `release.platform` (pure, but for `has_wheel`, which looks for torch's wheel for that
    platform in the find-links folders)."""
    info = INFO[release.platform]
    default = variant.name == release.pypi_default
    torch = release.torch if default else release.local_version(variant)
    extra = None
    if not default:
        # The PyTorch index serves this build; a find-links folder holding the same wheel
        # (for this platform) stands in for it where it cannot be reached.
        local = (has_wheel or (lambda v: _has_local_wheel(find_links, v, info, spec.python)))(torch)
        if not local:
            extra = f"{(pytorch_index or PYTORCH_INDEX).rstrip('/')}/{variant.name}"
    glibc = release.glibc_min
    if spec.targets.glibc:
        glibc = max(glibc, tuple(int(x) for x in spec.targets.glibc.split(".")))
    # the oldest macOS this Python's torch wheel is for (torch 2.10: 11.0, but 14.0 for 3.14)
    macos = release.macos_floor(spec.python) if info.os == "macos" else None
    return CompilePlan(
        requirements=tuple(_requirements(spec, release, torch)),
        python_version=spec.python.rstrip("t"),
        platform=info.uv_target(glibc),
        index_url=pypi_index or PYPI_INDEX,
        extra_index_url=extra,
        find_links=tuple(str(f) for f in find_links),
        expected_torch=torch,
        env=variant.name,
        torch_index=(pypi_index or PYPI_INDEX)
        if default
        else f"{(pytorch_index or PYTORCH_INDEX).rstrip('/')}/{variant.name}",
        constraints=tuple(constraints),
        target=release.platform,
        macos_min=version_str(macos) if macos else "",
        label=label,
    )


def _has_local_wheel(
    find_links: Sequence[str], version: str, info: PlatformInfo, python: str
) -> bool:
    wheels = wheels_in(find_links, "torch", version)
    return any(wheel_fits(w.name, info, python) for w in wheels)


def find_uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise LockError(
        "uv is not installed", "pip install uv (torchship locks through `uv pip compile`)"
    )


def _uv_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for uv, less what would point it elsewhere (a user's index
    settings, a macOS floor of this host), plus the plan's own variables."""
    drop = ("UV_INDEX", "UV_EXTRA_INDEX", "MACOSX_DEPLOYMENT_TARGET")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def _run(
    argv: Sequence[str], stdin: str, extra: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        env=_uv_environ(extra),
        check=False,
        timeout=900,
    )


class _Group:
    """uv processes run side by side, all killed as soon as one fails (the lock fails then,
    and the others' answers would be thrown away)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[str]] = []
        self.stopped = False

    def run(
        self, argv: Sequence[str], stdin: str, extra: Mapping[str, str]
    ) -> subprocess.CompletedProcess[str]:
        with self._lock:
            if self.stopped:
                return subprocess.CompletedProcess(list(argv), -9, "", "")
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_uv_environ(extra),
            )
            self._procs.append(proc)
        try:
            out, err = proc.communicate(stdin, timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()


def compile_all(
    plans: Sequence[CompilePlan], runner: Runner | None = None
) -> list[tuple[CompilePlan, tuple[LockedPackage, ...]]]:
    """`compile_env` for every plan at once (uv waits on the network, not the CPU), answers in
    the plans' order. The first failure stops the others and is raised."""
    if len(plans) <= 1:
        return [compile_env(p, runner) for p in plans]
    group = _Group()
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
    plan: CompilePlan, runner: Runner | None = None
) -> tuple[CompilePlan, tuple[LockedPackage, ...]]:
    """`compile_requirements`, answering with the plan uv succeeded with: on macOS, where torch
    has no wheel for this Python at the release's floor, once more at the floor its wheels say
    (uv_errors.macos_floor), which the environment then records."""
    code, text, stderr = _invoke(plan, runner)
    if code != 0 and plan.macos_min:
        machine = "arm64" if plan.platform.startswith("aarch64") else "x86_64"
        floor = macos_floor(stderr, plan.macos_min, machine)
        if floor is not None:
            plan = replace(plan, macos_min=floor)
            code, text, stderr = _invoke(plan, runner)
    if code != 0:
        raise _failure(plan, stderr, plan.expected_torch)
    return plan, parse_compiled(text, plan.find_links)


def _invoke(plan: CompilePlan, runner: Runner | None) -> tuple[int, str, str]:
    """uv's exit code, its answer and its stderr."""
    with tempfile.TemporaryDirectory(prefix="torchship-lock-") as tmp:
        constraints, previous = Path(tmp, "constraints.txt"), Path(tmp, "previous.txt")
        constraints.write_text("".join(f"{c}\n" for c in plan.constraints), "utf-8")
        previous.write_text("".join(f"{c}\n" for c in plan.preferences), "utf-8")
        argv = plan.argv(find_uv() if runner is None else "uv", str(constraints), str(previous))
        proc = (runner or _run)(argv, plan.stdin, plan.environ)
        if proc.returncode != 0:
            return proc.returncode, "", proc.stderr
        # With --output-file (previous pins to keep) uv writes its answer there.
        text = proc.stdout if proc.stdout.strip() else previous.read_text("utf-8")
    return 0, text, proc.stderr


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
