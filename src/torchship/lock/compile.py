"""Locking: plan the `uv pip compile` call (pure), run it (I/O), build the Lock (pure).

uv resolves for the target, not for this host: `--python-version` of the spec and
`--python-platform x86_64-manylinux_2_XX` at the wheels' glibc floor (or the fleet's, if higher),
and `--generate-hashes` records the sha256 of every file of each pinned version.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion

from torchship.compat.matrix import PYPI_INDEX, PYTORCH_INDEX, Release, Variant, load_matrix
from torchship.compat.resolve import Choice, Resolution
from torchship.errors import IndexUnreachableError, LockError
from torchship.lock.model import Lock, LockedGPU, LockedPackage, LockEnvironment, drop_none
from torchship.spec.model import Spec
from torchship.versions import driver_str, version_str

Runner = Callable[[Sequence[str], str], "subprocess.CompletedProcess[str]"]

# What uv prints when an index cannot be reached (its lines, as of uv 0.13); `sync` reads them too.
UV_NET_ERRORS = (
    "Failed to fetch",
    "error sending request",
    "dns error",
    "tcp connect error",
    "Connection refused",
    "timed out",
    "client error (Connect)",
)
UV_URL_RE = re.compile(r"(https?://[^\s`'\")]+)")


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
    minor = min(max(glibc[1] if len(glibc) > 1 else 17, 17), 40)  # what uv accepts: 2_17..2_40
    return f"x86_64-manylinux_2_{minor}"


def find_links_from_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    """pip's own find-links setting (PIP_FIND_LINKS: folders or URLs, space-separated), which
    torchship honours as pip does; uv does not read it."""
    return tuple(x for x in environ.get("PIP_FIND_LINKS", "").split() if x)


def wheels_in(find_links: Sequence[str], name: str, version: str) -> list[Path]:
    """Wheels of `name`==`version` (local part included) in the find-links folders."""
    out = []
    for folder in find_links:
        path = Path(folder.removeprefix("file://"))
        if not path.is_dir():
            continue
        for wheel in sorted(path.glob("*.whl")):
            try:
                wname, wversion, _, _ = parse_wheel_filename(wheel.name)
            except (InvalidWheelFilename, InvalidVersion):
                continue
            if canonicalize_name(wname) == canonicalize_name(name) and str(wversion) == version:
                out.append(wheel)
    return out


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
) -> CompilePlan:
    """The uv call that locks one environment: `variant`'s build of `release` (pure, but for
    `has_wheel`, which looks for torch's wheel in the find-links folders)."""
    default = variant.name == release.pypi_default
    torch = release.torch if default else release.local_version(variant)
    extra = None
    if not default:
        # The PyTorch index serves this build; a find-links folder holding the same wheel
        # stands in for it where it cannot be reached.
        local = (has_wheel or (lambda v: bool(wheels_in(find_links, "torch", v))))(torch)
        if not local:
            extra = f"{(pytorch_index or PYTORCH_INDEX).rstrip('/')}/{variant.name}"
    glibc = release.glibc_min
    if spec.targets.glibc:
        glibc = max(glibc, tuple(int(x) for x in spec.targets.glibc.split(".")))
    return CompilePlan(
        requirements=tuple(_requirements(spec, release, torch)),
        python_version=spec.python.rstrip("t"),
        platform=platform_for(glibc),
        index_url=pypi_index or PYPI_INDEX,
        extra_index_url=extra,
        find_links=tuple(str(f) for f in find_links),
        expected_torch=torch,
        env=variant.name,
        torch_index=(pypi_index or PYPI_INDEX)
        if default
        else f"{(pytorch_index or PYTORCH_INDEX).rstrip('/')}/{variant.name}",
        constraints=tuple(constraints),
    )


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


def _run(argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_INDEX", "UV_EXTRA_INDEX"))}
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, env=env, check=False, timeout=900
    )


def _failure(plan: CompilePlan, stderr: str, torch_label: str) -> LockError:
    text = stderr.strip()
    if any(marker in text for marker in UV_NET_ERRORS):
        urls = UV_URL_RE.findall(text)
        url = urls[0] if urls else plan.extra_index_url or plan.index_url
        index = next(
            (
                i
                for i in (plan.extra_index_url, plan.index_url, *plan.find_links)
                if i and url.startswith(i.rstrip("/"))
            ),
            url,
        )
        cause = next((ln.strip() for ln in reversed(text.splitlines()) if "cause" in ln), "")
        if index == plan.extra_index_url:
            hint = (
                f"{torch_label} is only on the PyTorch index: pass --find-links DIR holding its "
                f"wheels (`pip download torch=={torch_label} --no-deps --index-url {index} -d DIR` "
                "where it is reachable), or --pytorch-index URL for a mirror"
            )
        else:
            hint = "check the network or proxy (HTTPS_PROXY), or pass --pypi-index URL for a mirror"
        return IndexUnreachableError(index, cause.removeprefix("cause: ") or "unreachable", hint)
    first = next((ln for ln in text.splitlines() if ln.strip()), "no output")
    if "No solution found" in text or "unsatisfiable" in text:
        detail = " ".join(ln.strip() for ln in text.splitlines()[1:4])
        return LockError(
            f"no set of packages satisfies the spec: {detail}",
            "loosen the version constraints in `packages`, or pick another torch",
        )
    return LockError(f"uv pip compile failed: {first}", "run again with --debug to see uv's output")


def compile_requirements(
    plan: CompilePlan, runner: Runner | None = None
) -> tuple[LockedPackage, ...]:
    """Run uv (through `runner`, the I/O seam) and parse what it pinned."""
    with tempfile.TemporaryDirectory(prefix="torchship-lock-") as tmp:
        constraints, previous = Path(tmp, "constraints.txt"), Path(tmp, "previous.txt")
        constraints.write_text("".join(f"{c}\n" for c in plan.constraints), "utf-8")
        previous.write_text("".join(f"{c}\n" for c in plan.preferences), "utf-8")
        argv = plan.argv(find_uv() if runner is None else "uv", str(constraints), str(previous))
        proc = (runner or _run)(argv, plan.stdin)
        if proc.returncode != 0:
            raise _failure(plan, proc.stderr, plan.expected_torch)
        # With --output-file (previous pins to keep) uv writes its answer there.
        text = proc.stdout if proc.stdout.strip() else previous.read_text("utf-8")
    return parse_compiled(text, plan.find_links)


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
        raise LockError(
            f"uv locked torch {torch} where {plan.expected_torch} was resolved",
            "check --find-links/--pytorch-index: they must serve the resolved build",
        )
    return torch


def build_environment(
    spec: Spec, variant: Variant, packages: tuple[LockedPackage, ...], plan: CompilePlan
) -> LockEnvironment:
    """A secondary environment of the lock (`cpu`) from what uv pinned for it (pure)."""
    return LockEnvironment(
        name=variant.name,
        torch=_locked_torch(packages, plan),
        variant=variant.name,
        cuda=None if variant.cuda is None else variant.cuda_str,
        python=spec.python,
        platform=plan.platform,
        index_url=plan.torch_index,
        packages=packages,
    )


def build_lock(
    spec: Spec,
    resolution: Resolution,
    packages: tuple[LockedPackage, ...],
    plan: CompilePlan,
    environments: tuple[LockEnvironment, ...] = (),
) -> Lock:
    """The lock for a resolved spec and what uv pinned (pure)."""
    choice = resolution.chosen
    assert choice is not None
    torch = _locked_torch(packages, plan)
    v = choice.variant
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
        glibc_min=version_str(choice.release.glibc_min),
        cudnn=_pinned(packages, "nvidia-cudnn-cu") or v.cudnn,
        nccl=_pinned(packages, "nvidia-nccl-cu") or v.nccl,
        gpus=tuple(LockedGPU(t.label, f"{t.cc[0]}.{t.cc[1]}") for t in resolution.targets),
        driver_target=spec.targets.driver,
        packages=packages,
        environments=environments,
    )
