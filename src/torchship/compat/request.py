"""What the resolver is asked: a torch range, a CUDA choice, a Python and the targets."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from torchship.compat.extensions import extension_pins
from torchship.compat.gpus import GPUTarget, lookup_gpu
from torchship.compat.matrix import Matrix
from torchship.compat.platforms import contradiction, implied
from torchship.errors import SpecError, UnknownGPUError, UsageError, excerpt
from torchship.spec.fields import (
    parse_cuda,
    parse_driver,
    parse_glibc,
    parse_torch,
    pins_by_name,
    read_requirement,
)
from torchship.spec.model import Spec
from torchship.versions import Version as NumVersion

DOMAIN_LIBRARIES = ("torchvision", "torchaudio")


@dataclass(frozen=True, slots=True)
class Request:
    """What the resolver is asked: torch, CUDA, Python, platforms and GPU targets of a spec."""

    torch: SpecifierSet
    torch_text: str
    cuda: str = "auto"  # "auto" | "cpu" | "12.8" | "12"
    python: str | None = None  # "3.12", "3.13t"
    gpus: tuple[GPUTarget, ...] = ()
    driver: NumVersion | None = None
    glibc: NumVersion | None = None
    allow_forward_compat: bool = False
    domain_libraries: tuple[str, ...] = ()
    domain_pins: tuple[tuple[str, str], ...] = ()  # ("torchaudio", "==2.10.0"): the user's pin
    python_patch: str | None = None  # "3.14.1" when given: Requires-Python may exclude a patch
    extension_pins: tuple[tuple[str, str], ...] = ()  # ("xformers", "==0.0.29"): CUDA extensions
    platform: str = "linux-x86_64"  # the platform this request resolves for
    # every platform of the fleet, as named or implied; resolve_fleet splits the request
    platforms: tuple[str, ...] = ("linux-x86_64",)
    platforms_implied: bool = True  # not named by the user: implied by the GPUs (or default)
    gpus_elsewhere: tuple[str, ...] = ()  # GPU targets checked on the fleet's other platforms


def fleet_platforms(gpus: tuple[GPUTarget, ...], named: tuple[str, ...]) -> tuple[str, ...]:
    """The platforms to resolve for: the named ones, else those the GPUs imply. ValueError
    when a GPU cannot be on any named platform (GB200 on linux-x86_64, any on macOS)."""
    if not named:
        return implied(tuple(t.gpu for t in gpus))
    for t in gpus:
        problem = contradiction(t.gpu, t.label, named)
        if problem:
            raise ValueError(problem)
    return named


def domain_libraries(packages: tuple[str, ...]) -> tuple[str, ...]:
    if not packages:
        return ()
    names = {read_requirement(p).name.lower() for p in packages}
    return tuple(lib for lib in DOMAIN_LIBRARIES if lib in names)


def domain_pins(packages: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The version specifiers the user put on torchvision / torchaudio (`torchaudio==2.10.0`),
    one entry a library: its pins combined, as pip combines them (`torchvision==0.1` and
    `torchvision==0.28.0` make `==0.1,==0.28.0`, which no release meets)."""
    if not packages:
        return ()
    pins = pins_by_name(packages, DOMAIN_LIBRARIES)
    return tuple((name, str(spec)) for name, spec in pins.items() if spec)


def check_torch_known(req: Request, matrix: Matrix, file: str, where: str) -> None:
    """A torch version or range that matches no release in the matrix is bad input."""
    if any(req.torch.contains(r.version, prereleases=True) for r in matrix.releases):
        return
    first, last = matrix.releases[0].torch, matrix.releases[-1].torch
    problem = f"torch {req.torch_text!r} matches no release torchship knows ({first} – {last})"
    hint = "pick a release in that range, or refresh the matrix: python tools/gen_matrix.py"
    not_final = _not_a_release(req.torch, first, last, bool(file))
    if not_final:
        problem, hint = f"torch {excerpt(req.torch_text)}: {not_final[0]}", not_final[1]
    if file:
        raise SpecError(file, where, problem, hint)
    raise UsageError(f"{where}: {problem}", hint)


def _not_a_release(
    torch: SpecifierSet, first: str, last: str, in_spec: bool
) -> tuple[str, str] | None:
    """(problem, hint) when a version the user pinned is no torch release by its form: a local
    version (`==2.9.1+cu128`: the build, not the release) or a pre-, post- or dev-release
    (`2.10.0rc1`), which torch publishes on no index the matrix reads; else None."""
    for s in torch:
        if s.operator != "==":  # `!=` excludes; `===` compares strings, not versions
            continue
        try:
            v = Version(s.version.removesuffix(".*"))
        except InvalidVersion:  # packaging's checks differ by release: never crash on one
            continue
        if v.local:  # packaging leaves it letters, digits and dots: safe to echo, cut
            local = v.local if len(v.local) <= 20 else v.local[:20] + "…"
            return (
                f"a local version (+{local}) is not a torch release",
                "use " + _pin_text(v.public, _local_cuda(v.local), in_spec),
            )
        if v.is_prerelease or v.is_postrelease:
            kind = "dev" if v.is_devrelease else "pre" if v.pre else "post"
            return (
                f"a {kind}-release, not a final torch release torchship knows ({first} – {last})",
                "use the final release: " + _pin_text(v.base_version, None, in_spec),
            )
    return None


def _local_cuda(local: str) -> str | None:
    """The CUDA choice a local version names (`cu128` -> 12.8, `cpu`), None for another."""
    try:
        return parse_cuda(local)
    except ValueError:
        return None


def _pin_text(torch: str, cuda: str | None, in_spec: bool) -> str:
    """How the user writes torch (and cuda) for a spec's fields or resolve's flags."""
    if in_spec:
        return f'torch = "{torch}"' + (f' and cuda = "{cuda}"' if cuda else "")
    return f"--torch {torch}" + (f" --cuda {cuda}" if cuda else "")


def request_from_spec(spec: Spec, matrix: Matrix) -> Request:
    """Turn a validated spec into a resolver request; GPU names are checked here."""
    torch, pin = parse_torch(spec.torch)
    gpus = []
    for i, name in enumerate(spec.targets.gpus):
        try:
            gpus.append(lookup_gpu(matrix, name))
        except UnknownGPUError as e:
            raise SpecError(
                spec.source, spec.where(f"targets.gpus[{i}]"), e.message, e.hint
            ) from None
    t = spec.targets
    try:
        platforms = fleet_platforms(tuple(gpus), t.platforms)
    except ValueError as e:
        raise SpecError(
            spec.source,
            spec.where("targets.platforms"),
            str(e),
            "add the platform those GPUs are on, or remove the GPU from targets.gpus",
        ) from None
    req = Request(
        torch=torch,
        torch_text=spec.torch,
        cuda=pin if pin and spec.cuda == "auto" else spec.cuda,
        python=spec.python,
        gpus=tuple(gpus),
        driver=parse_driver(t.driver) if t.driver else None,
        glibc=parse_glibc(t.glibc) if t.glibc else None,
        allow_forward_compat=t.allow_forward_compat,
        domain_libraries=domain_libraries(spec.packages),
        domain_pins=domain_pins(spec.packages),
        extension_pins=extension_pins(spec.packages),
        platform=platforms[0],
        platforms=platforms,
        platforms_implied=not t.platforms,
    )
    check_torch_known(req, matrix, spec.source, spec.where("torch"))
    return req
