"""When nothing fits, say what would: per GPU, per driver, per Python, and the nearest full fit.

Only called on failure, so it may scan the whole matrix. Suggestions are structured (kind, the
sentence, and the build that fits where there is one) so the doctor and the lock use the build
without parsing the sentence. This module imports the resolver; the resolver never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from packaging.specifiers import SpecifierSet

from torchship.compat.archs import driver_str, kernel_match
from torchship.compat.gpus import GPUTarget
from torchship.compat.matrix import Matrix, Release
from torchship.compat.request import Request
from torchship.compat.resolve import Resolution, judge_all, matching_releases, resolve_fleet

_ANY = SpecifierSet()


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


def _requested(req: Request, m: Matrix) -> list[Release]:
    return _views(req, tuple(reversed(matching_releases(m, req.torch))))


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


def _gpu_hint(req: Request, m: Matrix, t: GPUTarget) -> str | None:
    wanted = _requested(req, m)
    cover = _covering(req, m, t)
    if any(r in wanted for r, _ in cover):
        return None
    if not cover:
        return (
            f"{t.display} has kernels in no torch {m.releases[0].torch}–"
            f"{m.releases[-1].torch} build for {_LABEL.get(req.platform, req.platform)}"
        )
    (lo, lo_names), (hi, hi_names) = cover[0], cover[-1]
    if wanted and max(r.version for r in wanted) < lo.version:
        return f"{t.display} needs torch ≥ {lo.torch} with {lo_names[0]} or newer"
    return f"{t.display} is supported up to torch {hi.torch} ({', '.join(hi_names)})"


def _driver_hint(req: Request, m: Matrix) -> str | None:
    if req.driver is None:
        return None
    majors = sorted({v.cuda[0] for r in _requested(req, m) for v in r.variants if v.cuda})
    runnable = [mj for mj in majors if (f := m.driver_floor(mj)) is not None and req.driver >= f]
    if runnable or not majors:
        return None
    need = m.driver_floor(majors[0])
    older = [
        r.torch
        for r in _views(req, m.releases)
        for v in r.variants
        if v.cuda and (f := m.driver_floor(v.cuda[0])) is not None and req.driver >= f
    ]
    alt = f", or use torch ≤ {older[-1]} which has builds this driver runs" if older else ""
    return (
        f"driver {driver_str(req.driver)} is below the CUDA {majors[0]}.x floor "
        f"({driver_str(need or (0,))}): upgrade the driver{alt}"
    )


def _python_hint(req: Request, m: Matrix) -> str | None:
    if req.python is None or any(req.python in r.python for r in _requested(req, m)):
        return None
    have = [r.torch for r in _views(req, m.releases) if req.python in r.python]
    if not have:
        where = _LABEL.get(req.platform, req.platform)
        return f"no torch release has a {where} wheel for Python {req.python}"
    return f"Python {req.python} wheels exist for torch {have[0]}–{have[-1]}"


def nearest_fit(req: Request, m: Matrix) -> str | None:
    """The newest full fit at or below the requested torch, else the oldest above it.

    Searched outwards from the requested torch, release by release, stopping at the first that
    has a fit: the answer of judging every build of every release (as this did, at 0.15x the
    resolver's throughput target for `resolve --json`) for a small part of the work. Releases
    that cannot fit are skipped unjudged: one without a wheel for the Python, or without a build
    holding kernels for one of the GPUs (what `_covering` knows per GPU kind)."""
    relaxed = replace(req, torch=_ANY, cuda="cpu" if req.cuda == "cpu" else "auto")
    wanted = _requested(req, m)
    top = max((r.version for r in wanted), default=m.releases[-1].version)
    possible = [
        base
        for base in m.releases
        if (view := base.on(req.platform)) is not None
        and (req.python is None or req.python in view.python)
    ]
    # per release, the builds with kernels for every GPU (None: no GPU, every build may fit)
    builds: dict[str, set[str] | None] = {base.torch: None for base in possible}
    for t in req.gpus:
        covered = {r.torch: names for r, names in _covering(req, m, t)}
        for torch, have in list(builds.items()):
            names = set(covered.get(torch, ()))
            both = names if have is None else names & have
            if both:
                builds[torch] = both
            else:
                del builds[torch]
    possible = [base for base in possible if base.torch in builds]
    below = [b for b in possible if b.version <= top]
    above = [b for b in possible if b.version > top]
    for base in (*reversed(below), *above):  # the newest at or below first, then upwards
        fits = [name for name, ok in judge_all(relaxed, m, (base,), builds[base.torch]) if ok]
        if fits:
            return fits[-1] if base.version <= top else fits[0]
    return None


def explain(res: Resolution) -> tuple[Suggestion, ...]:
    """When nothing fits, what would; () for a resolution that is ok."""
    req, m = res.request, res.matrix
    if res.ok or req is None or m is None:
        return ()
    if res.compatible:  # targets fit, the CUDA pin does not
        return (
            Suggestion(
                "cuda-pin",
                f"cuda = {req.cuda!r} does not fit; compatible builds: "
                f"{', '.join(res.compatible)} (set cuda = 'auto' or one of these)",
            ),
        )
    return _what_would_fit(req, m)


# What would fit depends on the request and the matrix alone (the matrix hashes by identity,
# the request by value): a request asked again, as `resolve --json` in a loop or a service
# answering the same few fleets asks it, is answered from here. 4,096 answers of a few short
# strings each.
@lru_cache(maxsize=4096)
def _what_would_fit(req: Request, m: Matrix) -> tuple[Suggestion, ...]:
    out = [Suggestion("python", h) for h in (_python_hint(req, m),) if h]
    out += [Suggestion("driver", h) for h in (_driver_hint(req, m),) if h]
    out += [Suggestion("gpu", h) for t in req.gpus if (h := _gpu_hint(req, m, t))]
    fit = nearest_fit(req, m)
    if fit:
        on = "" if req.python is None else f" on Python {req.python}"
        out.append(Suggestion("fit", f"{fit} fits every target{on}", fit))
    return tuple(out)


def fleet_json(req: Request, m: Matrix) -> dict[str, Any]:
    """`torchship resolve --json`'s document for `req`: every platform's answer and, when
    nothing fits, what would (cached per request). benchmarks/resolve.py measures its
    throughput against the resolver's target."""
    fleet = resolve_fleet(req, m)
    return fleet.to_json(tuple(s.text for s in explain(fleet.primary)))
