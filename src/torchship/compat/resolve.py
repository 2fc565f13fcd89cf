"""The resolver: a pure function (request, matrix) -> Resolution that explains itself.

For every torch release the request admits and every build ("variant") of it, the checks run in
order (what keeps the release from installing: torchship.compat.install; then the build itself:
torchship.compat.judge, the driver's part in torchship.compat.drivers); a variant that fails
any of them is rejected with the first failure's stable code and every failure's reason.
`compatible` lists what installs and runs natively on all targets; the choice among them is the
user's CUDA pin, else PyPI's default build when it is compatible, else the newest CUDA. Codes
are documented in docs/resolver.md; never rename one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from packaging.specifiers import SpecifierSet

from torchship.compat.archs import Version as NumVersion
from torchship.compat.archs import version_str
from torchship.compat.builds import Build, platform_builds
from torchship.compat.codes import PLATFORM_UNAVAILABLE, VARIANT_NOT_BUILT
from torchship.compat.drivers import driver_text, min_driver_for
from torchship.compat.extensions import problems as extension_problems
from torchship.compat.gpus import GPUTarget
from torchship.compat.install import install_problems
from torchship.compat.judge import Judge, Verdict
from torchship.compat.matrix import PYPI_INDEX, PYTORCH_INDEX, Matrix, Release, Variant
from torchship.compat.platforms import INFO, LINUX_X86_64
from torchship.compat.request import Request


@dataclass(frozen=True, slots=True)
class Rejection:
    """A build the resolver turned down, with a stable code and the reason in words."""

    variant: str
    code: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"variant": self.variant, "code": self.code, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen build and what follows from it."""

    release: Release
    variant: Variant
    forward_compat: bool
    min_driver: NumVersion | None
    base_image: str
    index_url: str

    @property
    def local_version(self) -> str:
        return self.release.local_version(self.variant)

    def to_json(self) -> dict[str, Any]:
        return _choice_json(self.release, self.variant, self.forward_compat, self.min_driver)


def _choice_json(
    rel: Release, v: Variant, forward_compat: bool, min_driver: NumVersion | None
) -> dict[str, Any]:
    """A chosen build's `detail` in the JSON contract (Choice.to_json, without the Choice)."""
    return _detail_json(_detail_template(rel, v), forward_compat, min_driver)


def _detail_template(rel: Release, v: Variant) -> dict[str, Any]:
    """A build's `detail`, with what depends on the request (min_driver, forward_compat) left
    to _detail_json, and the lists as tuples (a template is shared: never handed out)."""
    return {
        "torch": rel.torch,
        "variant": v.name,
        "cuda": None if v.cuda is None else v.cuda_str,
        "arch_list": v.arch_tokens(),
        "arch_confidence": v.arch_confidence,
        "min_driver": None,
        "cudnn": v.cudnn,
        "nccl": v.nccl,
        "glibc_min": version_str(rel.glibc_min) if rel.manylinux else None,
        "forward_compat": False,
        "pypi_default": v.name == rel.pypi_default,
        "platform": rel.platform,
        "platform_tag": rel.platform_tag or None,
        "macos_min": None if rel.macos_min is None else version_str(rel.macos_min),
        "macos_min_python": tuple((py, version_str(v)) for py, v in rel.macos_min_python),
    }


@lru_cache(maxsize=4096)
def _build_template(b: Build) -> dict[str, Any]:
    """_detail_template of a build of the matrix (per build: a Build hashes by identity)."""
    return _detail_template(b.rel, b.v)


def _detail_json(
    template: dict[str, Any], forward_compat: bool, min_driver: NumVersion | None
) -> dict[str, Any]:
    """The `detail` object from a template: a copy (its keys in the contract's order), with new
    lists and dicts each time (the caller may change them)."""
    d = dict(template)
    d["arch_list"] = list(template["arch_list"])
    d["min_driver"] = None if min_driver is None else driver_text(min_driver)
    d["forward_compat"] = forward_compat
    d["macos_min_python"] = dict(template["macos_min_python"]) or None
    return d


@dataclass(frozen=True, slots=True)
class Resolution:
    """The resolver's answer for one platform: the build chosen, or every rejection."""

    ok: bool
    compatible: tuple[str, ...]
    chosen: Choice | None
    rejected: tuple[Rejection, ...]
    forward_compatible: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    targets: tuple[GPUTarget, ...] = field(default=())
    request: Request | None = field(default=None, compare=False, repr=False)
    matrix: Matrix | None = field(default=None, compare=False, repr=False)

    @property
    def base_image(self) -> str | None:
        return None if self.chosen is None else self.chosen.base_image

    @property
    def index_url(self) -> str | None:
        return None if self.chosen is None else self.chosen.index_url

    def to_json(self, suggestions: tuple[str, ...] = ()) -> dict[str, Any]:
        """The JSON contract; `suggestions` come from compat.explain (only on failure)."""
        return {
            "ok": self.ok,
            "compatible": list(self.compatible),
            "chosen": None if self.chosen is None else self.chosen.local_version,
            "base_image": self.base_image,
            "index_url": self.index_url,
            "rejected": [r.to_json() for r in self.rejected],
            "forward_compatible": list(self.forward_compatible),
            "detail": None if self.chosen is None else self.chosen.to_json(),
            "targets": [{"gpu": t.label, "cc": f"{t.cc[0]}.{t.cc[1]}"} for t in self.targets],
            "warnings": list(self.warnings),
            "suggestions": list(suggestions),
        }


def _pinned(req: Request, v: Variant) -> bool:
    pin = req.cuda
    if not INFO[req.platform].nvidia:  # a Mac: its CPU/MPS build, whatever the CUDA pin
        return v.is_cpu
    if pin == "auto" and not req.gpus and req.gpus_elsewhere:
        return True  # no GPU of the fleet is here (a Windows laptop): PyPI's build is chosen
    if pin == "auto":
        return not v.is_cpu
    if pin == "cpu":
        return v.is_cpu
    if v.cuda is None:
        return False
    return v.cuda_str == pin or str(v.cuda[0]) == pin


def _pin_label(pin: str) -> str:
    return "cpu" if pin == "cpu" else "cu" + pin.replace(".", "")


def matching_releases(m: Matrix, torch: SpecifierSet) -> tuple[Release, ...]:
    """The releases a torch specifier admits, newest first (SpecifierSet.contains is slow)."""
    return _matching(m, str(torch))  # its text: cheaper to hash than a new SpecifierSet


@lru_cache(maxsize=4096)
def _matching(m: Matrix, torch: str) -> tuple[Release, ...]:
    spec = SpecifierSet(torch)  # the same set: its text lists every specifier
    return tuple(r for r in reversed(m.releases) if spec.contains(r.version, prereleases=True))


def base_image(m: Matrix, v: Variant, driver: NumVersion | None, python: str | None) -> str:
    """The smallest base that works: `nvidia/cuda:*-base` (the wheels bring their CUDA libs).

    Its CUDA minor is lowered to what the target driver reports, within the same major, so that
    the image's NVIDIA_REQUIRE_CUDA guard does not refuse a GeForce host whose driver is older
    than the wheel's toolkit but new enough by minor-version compatibility (NOTES.md §5.7).
    """
    if v.cuda is None:
        py = (python or "3.12").rstrip("t")
        return m.cpu_image.format(python=py)  # official python images are multi-arch
    return _cuda_base(m, v.cuda[:2], driver)


@lru_cache(maxsize=4096)
def _cuda_base(m: Matrix, cuda: NumVersion, driver: NumVersion | None) -> str:
    """base_image of a CUDA build (per matrix, CUDA major.minor and driver)."""
    want = cuda
    if driver is not None:
        dc = m.driver_cuda(driver)
        if dc is not None and dc[0] == want[0] and dc[:2] < want:
            want = dc[:2]
    img = m.cuda_image(want) or m.cuda_images[-1]
    return img.tag("base")


_Fit = tuple[Release, Variant, Verdict, Build]  # a compatible build, judged


def _choose(req: Request, m: Matrix, ok: list[_Fit]) -> _Fit | None:
    if len(ok) == 1:  # one build fits: the choice is whether the pin admits it
        return ok[0] if _pinned(req, ok[0][1]) else None
    eligible = [c for c in ok if _pinned(req, c[1])]
    if not eligible:
        return None
    first = eligible[0][0]
    if all(c[0] is first for c in eligible):  # one release (an exact torch): no comparing
        same = eligible
    else:
        newest = max(c[0].version for c in eligible)
        same = [c for c in eligible if c[0].version == newest]
    for c in same:
        if c[1].name == c[0].pypi_default:
            return c
    return max(same, key=lambda c: c[1].cuda or (0,))


@lru_cache(maxsize=256)
def _mps_warning(platform: str, macos: NumVersion | None) -> str:
    floor = f" and macOS ≥ {version_str(macos)}" if macos else ""
    return f"{platform}: the CPU build with Apple's MPS backend{floor}; no CUDA"


def _warnings(
    req: Request, rel: Release, v: Variant, verdict: Verdict, min_driver: NumVersion | None,
    index_url: str,
) -> list[str]:  # fmt: skip
    """The warnings for the chosen build `v` of `rel` (its minimum driver and index given)."""
    out: list[str] = []
    if v.mps:
        out.append(_mps_warning(rel.platform, rel.macos_floor(req.python)))
    if rel.platform.startswith("windows") and not v.is_cpu:
        out.append(
            f"{rel.platform}: PyPI's Windows wheels are CPU builds; {v.name} comes from {index_url}"
        )
    if req.extension_pins:
        out += [
            p.text
            for p in extension_problems(req.extension_pins, rel, v)
            if p.severity == "warning"
        ]
    if v.is_cpu and req.gpus:
        out.append("cuda = 'cpu': the build will not use the target GPUs")
    if not req.gpus and req.gpus_elsewhere and INFO[rel.platform].nvidia:
        out.append(
            f"no GPU target is checked on {rel.platform}: {', '.join(req.gpus_elsewhere)} "
            f"usually run elsewhere in the fleet, so PyPI's build ({v.name}) is chosen here; "
            "to check a GPU here too, add its architecture (sm_90) as a target"
        )
    elif not v.is_cpu and not req.gpus:
        out.append("no GPU targets given: kernels were not checked; add targets.gpus")
    if not v.is_cpu and req.driver is None:
        out.append(
            f"no driver target given: {v.name} needs driver ≥ "
            f"{driver_text(min_driver or (0,))}; add targets.driver"
        )
    if req.gpus and v.arch_confidence not in ("high", "n/a") and v.archs is not None:
        out.append(
            f"the arch list of {rel.local_version(v)} is {v.arch_confidence}-confidence "
            f"({v.arch_source}); verify with torch.cuda.get_arch_list()"
        )
    if verdict.ptx_jit:
        out.append(
            f"a target runs only through PTX JIT of {rel.local_version(v)}: slow first start"
        )
    if verdict.forward_compat:
        out.append(
            f"{v.name} runs on driver {driver_text(req.driver or (0,))} only with the "
            f"cuda-compat-{v.cuda_str.replace('.', '-')} package (forward compatibility)"
        )
    for t in req.gpus:
        g = t.gpu
        if g is not None and g.min_driver and req.driver is not None and req.driver < g.min_driver:
            out.append(
                f"{t.display} needs driver ≥ {driver_text(g.min_driver)}"
                + (" (third-party sources)" if g.min_driver_uncertain else "")
            )
    return out


class _Outcome(NamedTuple):
    """What a resolution finds, before it is made a Resolution or its JSON."""

    compatible: list[str]
    forward_compatible: list[str]
    rejected: list[Any]  # each made by the caller's `reject`
    picked: _Fit | None
    min_driver: NumVersion | None
    base_image: str
    index_url: str
    warnings: list[str]
    judge: Judge
    torch: str  # the text of the request's torch specifier (caches key on it)


def _resolve(
    req: Request, m: Matrix, release: str | None, reject: Callable[[str, str, str], Any]
) -> _Outcome:
    """The resolver proper; `reject(variant, code, reason)` makes each rejection (a Rejection,
    or its JSON without the Rejection)."""
    compatible: list[str] = []
    fwd: list[str] = []
    rejected: list[Any] = []
    ok: list[_Fit] = []
    judge = Judge(req, m)
    torch = str(req.torch)  # as matching_releases, once: compat.explain keys on it too
    views = judge.builds.views  # the matrix's releases (all _matching gives) by torch
    skip_cpu = req.cuda != "cpu" and bool(req.gpus)
    # as _pinned for "auto": a CUDA build, on an NVIDIA platform whose GPUs are not all elsewhere
    auto_cuda = req.cuda == "auto" and INFO[req.platform].nvidia
    cpu_only = (
        _cpu_only_on(m, req.platform)
        if auto_cuda and (req.gpus or not req.gpus_elsewhere)
        else frozenset()
    )
    for base in _matching(m, torch):
        view = views[base.torch]
        if view is None:
            rejected.append(reject(*_not_on_platform(req, m, base)))
            continue
        rel, builds = view
        install = install_problems(req, m, rel)
        for b in builds:
            if skip_cpu and b.v.cuda is None:  # a CPU build
                continue
            verdict = judge.judge(b, install)
            if not verdict.failures:
                compatible.append(b.name)
                ok.append((rel, b.v, verdict, b))
                if verdict.forward_compat:
                    fwd.append(b.name)
            else:
                failures = verdict.failures
                reason = failures[0][1] if len(failures) == 1 else "; ".join(r for _, r in failures)
                rejected.append(reject(b.name, failures[0][0], reason))
                if verdict.forward_compat and len(failures) == 1:
                    fwd.append(b.name)  # fits every target once cuda-compat is installed
        if req.cuda != "auto" and not any(_pinned(req, v) for v in rel.variants):
            rejected.append(reject(*_not_built(req, m, rel)))
        elif base.torch in cpu_only:  # auto takes a CUDA build: none of its builds may be chosen
            rejected.append(reject(*_cpu_only(req, rel)))
    picked = _choose(req, m, [c for c in ok if release is None or c[0].torch == release])
    if picked is None:
        return _Outcome(compatible, fwd, rejected, None, None, "", "", [], judge, torch)
    rel, v, verdict, _ = picked
    min_driver = min_driver_for(m, req, v, verdict.ptx_jit)
    image = base_image(m, v, req.driver, req.python) if INFO[rel.platform].os == "linux" else ""
    index = PYPI_INDEX if v.name == rel.pypi_default else f"{PYTORCH_INDEX}/{v.name}"
    warnings = _warnings(req, rel, v, verdict, min_driver, index)
    return _Outcome(
        compatible, fwd, rejected, picked, min_driver, image, index, warnings, judge, torch
    )


def resolve(req: Request, m: Matrix, release: str | None = None) -> Resolution:
    """Resolve `req` against the matrix, on `req.platform`. Pure; never raises on an impossible
    request. `release`: choose only among that torch release's builds (a fleet's common one)."""
    out = _resolve(req, m, release, Rejection)
    choice = None
    if out.picked is not None:
        rel, v, verdict, _ = out.picked
        choice = Choice(rel, v, verdict.forward_compat, out.min_driver, out.base_image,
                        out.index_url)  # fmt: skip
    return Resolution(
        ok=choice is not None,
        compatible=tuple(out.compatible),
        chosen=choice,
        rejected=tuple(out.rejected),
        forward_compatible=tuple(out.forward_compatible),
        warnings=tuple(out.warnings),
        targets=req.gpus,
        request=req,
        matrix=m,
    )


def _rejection_json(variant: str, code: str, reason: str) -> dict[str, str]:
    return {"variant": variant, "code": code, "reason": reason}  # as Rejection.to_json


def resolution_json(req: Request, m: Matrix) -> tuple[dict[str, Any], _Outcome]:
    """`resolve(req, m).to_json()` without the Resolution (no suggestions: the caller adds
    them), and what the resolver found, for compat.explain to reuse."""
    out = _resolve(req, m, None, _rejection_json)
    picked = out.picked
    detail = None
    if picked is not None:
        detail = _detail_json(_build_template(picked[3]), picked[2].forward_compat, out.min_driver)
    return {
        "ok": picked is not None,
        "compatible": out.compatible,
        "chosen": None if picked is None else picked[3].name,
        "base_image": None if picked is None else out.base_image,
        "index_url": None if picked is None else out.index_url,
        "rejected": out.rejected,
        "forward_compatible": out.forward_compatible,
        "detail": detail,
        "targets": [{"gpu": t.label, "cc": f"{t.cc[0]}.{t.cc[1]}"} for t in req.gpus],
        "warnings": out.warnings,
        "suggestions": [],
    }, out


@lru_cache(maxsize=64)
def _on_platform(m: Matrix, platform: str) -> tuple[str, ...]:
    """The releases with wheels for `platform`, oldest first."""
    return tuple(r.torch for r in m.releases if r.on(platform) is not None)


def _not_on_platform(req: Request, m: Matrix, rel: Release) -> tuple[str, str, str]:
    have = _on_platform(m, req.platform)
    if not rel.platforms_known:
        why = f"the matrix has not measured torch {rel.torch}'s wheels for {req.platform}"
    elif have:
        why = (
            f"torch {rel.torch} has no wheels for {req.platform} on PyPI "
            f"(it has them for {have[0]}–{have[-1]})"
        )
    else:
        why = f"no torch release has wheels for {req.platform} on PyPI"
    return rel.torch, PLATFORM_UNAVAILABLE, why


@lru_cache(maxsize=64)
def _cpu_only_on(m: Matrix, platform: str) -> frozenset[str]:
    """The releases whose every build on `platform` is a CPU build."""
    views = platform_builds(m, platform).views
    return frozenset(t for t, view in views.items()
                     if view is not None and all(b.v.is_cpu for b in view[1]))  # fmt: skip


def _cpu_only(req: Request, rel: Release) -> tuple[str, str, str]:
    """`cuda = "auto"` on a release with only CPU builds on an NVIDIA platform (torch for
    linux-aarch64 before 2.6): auto takes a CUDA build."""
    why = "the GPU targets need one" if req.gpus else "cuda = 'auto' takes a CUDA build"
    return (
        f"{rel.torch}+{rel.pypi_default}",
        VARIANT_NOT_BUILT,
        f"torch {rel.torch} has no CUDA build for {rel.platform} (only "
        f"{', '.join(v.name for v in rel.variants)}), and {why}; pin cuda to cpu for its CPU "
        "build",
    )


def _not_built(req: Request, m: Matrix, rel: Release) -> tuple[str, str, str]:
    label = _pin_label(req.cuda)
    have = ", ".join(v.name for v in rel.variants)
    views = (r.on(rel.platform) for r in m.releases)
    built = [r.torch for r in views if r is not None and any(_pinned(req, v) for v in r.variants)]
    span = (
        f"; CUDA {req.cuda} builds exist for torch {built[0]}–{built[-1]}"
        if built
        else f"; no torch release was built for CUDA {req.cuda}"
    )
    where = "" if rel.platform == LINUX_X86_64 else f" for {rel.platform}"
    return (
        f"{rel.torch}+{label}",
        VARIANT_NOT_BUILT,
        f"torch {rel.torch} has no CUDA {req.cuda} build{where} (it has {have}){span}",
    )
