"""When nothing fits, say what would: per GPU, per driver, per Python, and the nearest full fit.

Only called on failure, so it may scan the whole matrix. Suggestions are structured (kind, the
sentence, and the build that fits where there is one) so the doctor and the lock use the build
without parsing the sentence. This module imports the resolver; the resolver never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from torchship.compat.archs import driver_str, kernel_match
from torchship.compat.builds import platform_builds
from torchship.compat.gpus import GPUTarget
from torchship.compat.matrix import Matrix, Release
from torchship.compat.request import Request
from torchship.compat.resolve import (
    Judge,
    Resolution,
    matching_releases,
    platform_request,
    resolution_json,
    resolve_fleet,
)


@dataclass(frozen=True, slots=True)
class Suggestion:
    kind: str  # "cuda-pin" | "python" | "driver" | "gpu" | "fit"
    text: str
    build: str | None = None  # for "fit": the local version that fits every target


_LABEL = {
    "linux-x86_64": "Linux x86_64",
    "linux-aarch64": "Linux aarch64",
    "windows-x86_64": "Windows",
    "macos-arm64": "macOS arm64",
    "macos-x86_64": "macOS x86_64",
}


def _views(req: Request, releases: tuple[Release, ...]) -> list[Release]:
    """The releases as on the request's platform (those with wheels there), oldest first."""
    return [v for r in releases if (v := r.on(req.platform)) is not None]


def _every_view(req: Request, m: Matrix) -> list[Release]:
    """Every release as on the request's platform, oldest first (as _views(req, m.releases))."""
    return [row[0] for row in platform_builds(m, req.platform).rows if row is not None]


def _requested(
    req: Request, m: Matrix, releases: tuple[Release, ...] | None = None
) -> list[Release]:
    """`releases`: matching_releases(m, req.torch) where the caller has it."""
    if releases is None:
        releases = matching_releases(m, req.torch)
    return _views(req, tuple(reversed(releases)))


def _covering(req: Request, m: Matrix, t: GPUTarget) -> tuple[tuple[Release, list[str]], ...]:
    return _covering_cc(m, req.platform, t.cc)


@lru_cache(maxsize=1024)
def _covering_cc(
    m: Matrix, platform: str, cc: tuple[int, int]
) -> tuple[tuple[Release, list[str]], ...]:
    """The releases (as on `platform`, oldest first) with a build holding kernels for `cc`, and
    those builds. It depends on the matrix, the platform and the capability alone, so it is
    computed once per GPU kind rather than once per request (the matrix hashes by identity)."""
    out = []
    for r in (v for b in m.releases if (v := b.on(platform)) is not None):
        names = [
            v.name
            for v in r.variants
            if v.archs is not None and not v.is_cpu and kernel_match(v.archs, cc) is not None
        ]
        if names:
            out.append((r, names))
    return tuple(out)


@lru_cache(maxsize=1024)
def _covered(m: Matrix, platform: str, cc: tuple[int, int]) -> frozenset[str]:
    """The torch releases of `_covering_cc`."""
    return frozenset(r.torch for r, _ in _covering_cc(m, platform, cc))


def _gpu_hint(req: Request, m: Matrix, t: GPUTarget, wanted: list[Release]) -> str | None:
    if any(r.torch in _covered(m, req.platform, t.cc) for r in wanted):
        return None
    cover = _covering(req, m, t)
    if not cover:
        return (
            f"{t.display} has kernels in no torch {m.releases[0].torch}–"
            f"{m.releases[-1].torch} build for {_LABEL.get(req.platform, req.platform)}"
        )
    (lo, lo_names), (hi, hi_names) = cover[0], cover[-1]
    if wanted and max(r.version for r in wanted) < lo.version:
        return f"{t.display} needs torch ≥ {lo.torch} with {lo_names[0]} or newer"
    return f"{t.display} is supported up to torch {hi.torch} ({', '.join(hi_names)})"


def _driver_hint(req: Request, m: Matrix, wanted: list[Release]) -> str | None:
    if req.driver is None:
        return None
    majors = sorted({v.cuda[0] for r in wanted for v in r.variants if v.cuda})
    runnable = [mj for mj in majors if (f := m.driver_floor(mj)) is not None and req.driver >= f]
    if runnable or not majors:
        return None
    need = m.driver_floor(majors[0])
    older = [
        r.torch
        for r in _every_view(req, m)
        for v in r.variants
        if v.cuda and (f := m.driver_floor(v.cuda[0])) is not None and req.driver >= f
    ]
    alt = f", or use torch ≤ {older[-1]} which has builds this driver runs" if older else ""
    return (
        f"driver {driver_str(req.driver)} is below the CUDA {majors[0]}.x floor "
        f"({driver_str(need or (0,))}): upgrade the driver{alt}"
    )


def _python_hint(req: Request, m: Matrix, wanted: list[Release]) -> str | None:
    if req.python is None or any(req.python in r.python for r in wanted):
        return None
    have = [r.torch for r in _every_view(req, m) if req.python in r.python]
    if not have:
        where = _LABEL.get(req.platform, req.platform)
        return f"no torch release has a {where} wheel for Python {req.python}"
    return f"Python {req.python} wheels exist for torch {have[0]}–{have[-1]}"


def nearest_fit(req: Request, m: Matrix) -> str | None:
    """The newest full fit at or below the requested torch, else the oldest above it."""
    return _nearest_fit(req, m, _requested(req, m))


def _nearest_fit(
    req: Request, m: Matrix, wanted: list[Release], judge: Judge | None = None
) -> str | None:
    """Searched outwards from the requested torch, release by release, stopping at the first
    that has a fit. Every build is judged as the resolver judges it (the request's torch range
    and CUDA pin aside: the judgement never reads them), with the request's kernel tables, so a
    build without kernels for a GPU is passed over before anything is formatted."""
    # the releases up to the newest requested one (or all of them), oldest first; then the rest
    newest = wanted[-1].torch if wanted else None
    rels = m.releases
    cut = next((i + 1 for i, b in enumerate(rels) if b.torch == newest), len(rels))
    judge = judge or Judge(req, m)  # the resolver's, where the caller has it
    for i in (*range(cut - 1, -1, -1), *range(cut, len(rels))):  # the newest at or below first
        fits = judge.fits(i)
        if fits:
            return fits[-1] if i < cut else fits[0]
    return None


def explain(res: Resolution) -> tuple[Suggestion, ...]:
    """When nothing fits, what would; () for a resolution that is ok."""
    req, m = res.request, res.matrix
    if res.ok or req is None or m is None:
        return ()
    if res.compatible:  # targets fit, the CUDA pin does not
        return (Suggestion("cuda-pin", _cuda_pin_text(req, res.compatible)),)
    return _what_would_fit(req, m)


def _cuda_pin_text(req: Request, compatible: Sequence[str]) -> str:
    return (
        f"cuda = {req.cuda!r} does not fit; compatible builds: "
        f"{', '.join(compatible)} (set cuda = 'auto' or one of these)"
    )


def _what_would_fit(
    req: Request,
    m: Matrix,
    judge: Judge | None = None,
    releases: tuple[Release, ...] | None = None,
) -> tuple[Suggestion, ...]:
    """`judge` and `releases`: the resolver's Judge for `req` and matching releases, reused
    where the caller has them."""
    wanted = _requested(req, m, releases)  # the requested releases, found once for every hint
    out = [Suggestion("python", h) for h in (_python_hint(req, m, wanted),) if h]
    out += [Suggestion("driver", h) for h in (_driver_hint(req, m, wanted),) if h]
    out += [Suggestion("gpu", h) for t in req.gpus if (h := _gpu_hint(req, m, t, wanted))]
    fit = _nearest_fit(req, m, wanted, judge)
    if fit:
        on = "" if req.python is None else f" on Python {req.python}"
        out.append(Suggestion("fit", f"{fit} fits every target{on}", fit))
    return tuple(out)


def fleet_json(req: Request, m: Matrix) -> dict[str, Any]:
    """`torchship resolve --json`'s document for `req`: every platform's answer and, when
    nothing fits, what would (computed only then). benchmarks/resolve.py measures its
    throughput against the resolver's target."""
    if len(req.platforms) != 1:
        fleet = resolve_fleet(req, m)
        return fleet.to_json(tuple(s.text for s in explain(fleet.primary)))
    # one platform: FleetResolution.to_json of resolve_fleet's answer, built without the
    # Resolution, and the suggestions with the resolver's judge and releases
    platform = req.platforms[0]
    preq = platform_request(req, platform)
    doc, found = resolution_json(preq, m)
    suggestions: list[str] = []
    if found.picked is None:
        if found.compatible:  # as explain: targets fit, the CUDA pin does not
            suggestions.append(_cuda_pin_text(preq, found.compatible))
        else:
            what = _what_would_fit(preq, m, found.judge, found.releases)
            suggestions += [s.text for s in what]
    out = {**doc, "suggestions": suggestions}
    out["platform"] = platform
    out["platforms"] = [{"platform": platform, **doc, "suggestions": None}]
    torch = None if found.picked is None else found.picked[0].torch
    out["fleet"] = {"torch": torch, "problem": None}
    return out


def clear_caches() -> None:
    """Empty every cache of the resolver and of what would fit: all are per matrix, platform,
    GPU kind, build or torch specifier, none holds an answer to a request. For benchmarks that
    measure a cold process."""
    from torchship.compat import builds, resolve

    for cached in (
        builds.platform_builds,
        builds.kernel_table,
        builds.kernel_mask,
        resolve._matching,
        resolve._no_kernels,
        resolve._lowest_ceiling,
        resolve._on_platform,
        _covering_cc,
        _covered,
    ):
        cached.cache_clear()
