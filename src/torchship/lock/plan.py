"""Planning a lock's uv calls (pure): the exact `uv pip compile` for one environment of a
resolved spec.

Nothing here imports the lock model or runs a process: `torchship lock` plans the primary
environment's call and starts uv (torchship.lock.uv) before it loads the rest, so that the
rest loads while uv resolves. See torchship.lock.compile for why the call is what it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torchship.compat.matrix import PYPI_INDEX, PYTORCH_INDEX, Release, Variant, load_matrix
from torchship.compat.platforms import INFO, LINUX_X86_64, PlatformInfo
from torchship.lock.wheels import wheel_fits, wheels_in
from torchship.spec.fields import read_requirement
from torchship.versions import version_str

if TYPE_CHECKING:
    from torchship.compat.resolve import Choice
    from torchship.spec.model import Spec

__all__ = [
    "CompilePlan",
    "companion_versions",
    "plan_compile",
    "plan_env_compile",
    "platform_for",
]


@dataclass(frozen=True, slots=True)
class CompilePlan:
    """The exact `uv pip compile` call that locks one environment: argv, stdin, environment."""

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
        """What uv's environment must hold: on macOS, the floor to resolve for (see
        torchship.lock.compile)."""
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
    names = {"torch"}
    for p in spec.packages:
        r = read_requirement(p)
        names.add(r.name.lower())
        pairs = companion_versions(r.name.lower(), release, spec.python)
        if pairs and not r.specifier and not r.url:  # pin the release paired with this torch
            reqs.append(
                f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}"
                f"=={pairs[-1]}" + (f"; {r.marker}" if r.marker else "")
            )
        else:
            reqs.append(p)
    if spec.image.jupyter and "jupyterlab" not in names:
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
