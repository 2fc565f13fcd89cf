"""Locking: plan the `uv pip compile` call (pure), run it (I/O), build the Lock (pure).

uv resolves for the target, not for this host: `--python-version` of the spec and
`--python-platform x86_64-manylinux_2_XX` at the wheels' glibc floor (or the fleet's, if higher),
and `--generate-hashes` records the sha256 of every file of each pinned version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement

from torchship.compat.matrix import PYPI_INDEX, PYTORCH_INDEX
from torchship.compat.resolve import Choice, Resolution
from torchship.errors import IndexUnreachableError, LockError
from torchship.lock.model import Lock, LockedGPU, LockedPackage, drop_none
from torchship.spec.model import Spec
from torchship.versions import driver_str, version_str

Runner = Callable[[Sequence[str], str], "subprocess.CompletedProcess[str]"]

_NET_ERRORS = (
    "Failed to fetch",
    "error sending request",
    "dns error",
    "tcp connect error",
    "Connection refused",
    "timed out",
    "client error (Connect)",
)
_URL_RE = re.compile(r"(https?://[^\s)]+)")


@dataclass(frozen=True, slots=True)
class CompilePlan:
    requirements: tuple[str, ...]
    python_version: str  # uv has no free-threaded target; "3.13t" resolves as "3.13"
    platform: str
    index_url: str
    extra_index_url: str | None
    find_links: tuple[str, ...]
    expected_torch: str  # what the lock must end up with, "2.9.1+cu126" or "2.9.1"

    def argv(self, uv: str) -> list[str]:
        args = [
            uv,
            "pip",
            "compile",
            "-",
            "--generate-hashes",
            "--no-header",
            "--no-annotate",
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
        return args

    @property
    def stdin(self) -> str:
        return "\n".join(self.requirements) + "\n"


def platform_for(glibc: tuple[int, ...]) -> str:
    minor = min(max(glibc[1] if len(glibc) > 1 else 17, 17), 40)  # what uv accepts: 2_17..2_40
    return f"x86_64-manylinux_2_{minor}"


def plan_compile(
    spec: Spec,
    choice: Choice,
    find_links: Sequence[str] = (),
    pytorch_index: str | None = None,
    pypi_index: str | None = None,
) -> CompilePlan:
    """The exact uv call for this spec and choice (pure)."""
    rel, v = choice.release, choice.variant
    default = v.name == rel.pypi_default
    torch = rel.torch if default else rel.local_version(v)
    reqs = [f"torch=={torch}"]
    for p in spec.packages:
        r = Requirement(p)
        pairs = {"torchvision": rel.torchvision, "torchaudio": rel.torchaudio}.get(r.name.lower())
        if pairs and not r.specifier and not r.url:  # pin the release paired with this torch
            reqs.append(
                f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}"
                f"=={pairs[-1]}" + (f"; {r.marker}" if r.marker else "")
            )
        else:
            reqs.append(p)
    if spec.image.jupyter and "jupyterlab" not in {Requirement(r).name.lower() for r in reqs}:
        reqs.append("jupyterlab")  # the jupyter image variant runs it, so it is locked too
    extra = None
    if not default and not find_links:
        extra = f"{(pytorch_index or PYTORCH_INDEX).rstrip('/')}/{v.name}"
    glibc = rel.glibc_min
    if spec.targets.glibc:
        glibc = max(glibc, tuple(int(x) for x in spec.targets.glibc.split(".")))
    return CompilePlan(
        requirements=tuple(reqs),
        python_version=spec.python.rstrip("t"),
        platform=platform_for(glibc),
        index_url=pypi_index or PYPI_INDEX,
        extra_index_url=extra,
        find_links=tuple(str(f) for f in find_links),
        expected_torch=torch,
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
    if any(marker in text for marker in _NET_ERRORS):
        urls = _URL_RE.findall(text)
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
    argv = plan.argv(find_uv() if runner is None else "uv")
    proc = (runner or _run)(argv, plan.stdin)
    if proc.returncode != 0:
        raise _failure(plan, proc.stderr, plan.expected_torch)
    return parse_compiled(proc.stdout)


_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_HASH_RE = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def parse_compiled(text: str) -> tuple[LockedPackage, ...]:
    """Parse `uv pip compile --generate-hashes` output (requirements.txt with hashes)."""
    packages: list[LockedPackage] = []
    name = version = None
    hashes: list[str] = []
    for raw in text.splitlines():
        line = (
            raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--hash") else raw.strip()
        )
        if not line:
            continue
        m = _PIN_RE.match(line)
        if m:
            if name and version:
                packages.append(LockedPackage(name, version, tuple(hashes)))
            name, version, hashes = m.group(1).lower(), m.group(3), []
        hashes += _HASH_RE.findall(line)
    if name and version:
        packages.append(LockedPackage(name, version, tuple(hashes)))
    return tuple(sorted(packages, key=lambda p: p.name))


def _pinned(packages: tuple[LockedPackage, ...], prefix: str) -> str | None:
    for p in packages:
        if p.name.startswith(prefix):
            return p.version
    return None


def build_lock(
    spec: Spec, resolution: Resolution, packages: tuple[LockedPackage, ...], plan: CompilePlan
) -> Lock:
    """The lock for a resolved spec and what uv pinned (pure)."""
    choice = resolution.chosen
    assert choice is not None
    torch = next((p.version for p in packages if p.name == "torch"), None)
    if torch != plan.expected_torch:
        raise LockError(
            f"uv locked torch {torch} where {plan.expected_torch} was resolved",
            "check --find-links/--pytorch-index: they must serve the resolved build",
        )
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
    )
