"""When nothing fits, say what would: per GPU, per driver, per Python, and the nearest full fit.

Only called on failure, so it may scan the whole matrix; what it finds there is cached per
matrix, platform, torch specifier and one target (a GPU kind, a driver, a Python), and the search
for a fit visits only the releases the resolver's judge has not ruled out (`resolve --json`
computes it for every request that fails: issue 20). Suggestions are structured (kind, the
sentence, and the build that fits where there is one) so the doctor and the lock use the build
without parsing the sentence. This module imports the resolver; the resolver never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from torchship.compat.archs import TEGRA, Version, driver_str, version_str
from torchship.compat.builds import kernel_mask, platform_builds
from torchship.compat.drivers import ceiling, lowest_ceiling
from torchship.compat.fleet import platform_request, resolve_fleet
from torchship.compat.gpus import gpu_display
from torchship.compat.judge import Judge
from torchship.compat.matrix import Matrix, Release
from torchship.compat.request import Request
from torchship.compat.resolve import Resolution, _matching, resolution_json


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


def _every_view(m: Matrix, platform: str) -> list[Release]:
    """Every release as on `platform`, oldest first."""
    return [row[0] for row in platform_builds(m, platform).rows if row is not None]


@lru_cache(maxsize=1024)
def _wanted(m: Matrix, platform: str, torch: str) -> tuple[tuple[Release, ...], int]:
    """The releases the torch specifier (its text) admits, as on `platform` (those with wheels
    there), oldest first; and where the search for a fit turns, past the newest of them in the
    matrix (all of it when none is there). Per matrix, platform and specifier."""
    views = tuple(v for r in reversed(_matching(m, torch)) if (v := r.on(platform)) is not None)
    newest = views[-1].torch if views else None
    rels = m.releases
    cut = next((i + 1 for i, b in enumerate(rels) if b.torch == newest), len(rels))
    return views, cut


@lru_cache(maxsize=1024)
def _covering_cc(
    m: Matrix, platform: str, cc: tuple[int, int]
) -> tuple[tuple[Release, list[str]], ...]:
    """The releases (as on `platform`, oldest first) with a build holding kernels for `cc`, and
    those builds. It depends on the matrix, the platform and the capability alone, so it is
    computed once per GPU kind rather than once per request (the matrix hashes by identity),
    from the resolver's kernel table of the capability."""
    mask = kernel_mask(m, platform, cc)
    return tuple(
        (rel, [b.v.name for b in builds if mask >> b.index & 1])
        for rel, builds, bits in (r for r in platform_builds(m, platform).rows if r is not None)
        if bits & mask
    )


@lru_cache(maxsize=1024)
def _covered(m: Matrix, platform: str, cc: tuple[int, int]) -> frozenset[str]:
    """The torch releases of `_covering_cc`."""
    return frozenset(r.torch for r, _ in _covering_cc(m, platform, cc))


# The hints below are each per matrix, platform, torch specifier and one target (a GPU kind, a
# driver, a Python), never per request: every request that fails alike gains from them. Bounded
# like the resolver's own caches.


@lru_cache(maxsize=4096)
def _gpu_hint(
    m: Matrix, platform: str, torch: str, label: str, cc: tuple[int, int], bare: bool
) -> str | None:
    """Why a GPU (`label`, a bare architecture when `bare`) holds back the requested torch."""
    wanted, _ = _wanted(m, platform, torch)
    if any(r.torch in _covered(m, platform, cc) for r in wanted):
        return None
    display = gpu_display(label, bare, cc)
    cover = _covering_cc(m, platform, cc)
    if not cover:
        return (
            f"{display} has kernels in no torch {m.releases[0].torch}–"
            f"{m.releases[-1].torch} build for {_LABEL.get(platform, platform)}"
        )
    (lo, lo_names), (hi, hi_names) = cover[0], cover[-1]
    if wanted and max(r.version for r in wanted) < lo.version:
        return f"{display} needs torch ≥ {lo.torch} with {lo_names[0]} or newer"
    return f"{display} is supported up to torch {hi.torch} ({', '.join(hi_names)})"


@lru_cache(maxsize=4096)
def _driver_hint(m: Matrix, platform: str, torch: str, driver: Version) -> str | None:
    wanted, _ = _wanted(m, platform, torch)
    majors = sorted({v.cuda[0] for r in wanted for v in r.variants if v.cuda})
    runnable = [mj for mj in majors if (f := m.driver_floor(mj)) is not None and driver >= f]
    if runnable or not majors:
        return None
    need = m.driver_floor(majors[0])
    older = [
        r.torch
        for r in _every_view(m, platform)
        for v in r.variants
        if v.cuda and (f := m.driver_floor(v.cuda[0])) is not None and driver >= f
    ]
    alt = f", or use torch ≤ {older[-1]} which has builds this driver runs" if older else ""
    return (
        f"driver {driver_str(driver)} is below the CUDA {majors[0]}.x floor "
        f"({driver_str(need or (0,))}): upgrade the driver{alt}"
    )


@lru_cache(maxsize=4096)
def _python_hint(m: Matrix, platform: str, torch: str, python: str) -> str | None:
    wanted, _ = _wanted(m, platform, torch)
    if any(python in r.python for r in wanted):
        return None
    have = [r.torch for r in _every_view(m, platform) if python in r.python]
    if not have:
        return f"no torch release has a {_LABEL.get(platform, platform)} wheel for Python {python}"
    return f"Python {python} wheels exist for torch {have[0]}–{have[-1]}"


@lru_cache(maxsize=4096)
def _glibc_hint(m: Matrix, platform: str, torch: str, glibc: Version) -> str | None:
    """A glibc older than every requested release's wheels need: which releases it runs."""
    wanted, _ = _wanted(m, platform, torch)
    linux = [r for r in wanted if r.manylinux]
    if not linux or any(r.glibc_min <= glibc for r in linux):
        return None
    have = [r.torch for r in _every_view(m, platform) if r.manylinux and r.glibc_min <= glibc]
    if have:
        return f"glibc {version_str(glibc)} runs the wheels of torch {have[0]}–{have[-1]}"
    floor = min(r.glibc_min for r in _every_view(m, platform) if r.manylinux)
    return (
        f"glibc {version_str(glibc)} is older than any torch wheel needs (≥ {version_str(floor)}):"
        " a newer OS, or a container image that brings its own"
    )


def _ceiling_hints(req: Request, m: Matrix, torch: str) -> list[str]:
    """A driver too new for a GPU (a Pascal under R590): the branch that still drives it, and
    what fits with that driver."""
    assert req.driver is not None
    out = []
    for t in req.gpus:
        last = None if t.cc in TEGRA else ceiling(m, t.cc)
        if last is None or req.driver[0] <= last:
            continue
        fit = _nearest_fit(replace(req, driver=(last, 999, 999)), m, torch)
        then = f", and {fit} fits" if fit else ""
        out.append(f"{t.display} is driven by the R{last} branch at the newest: install an "
                   f"R{last} driver{then}")  # fmt: skip
    return out


@lru_cache(maxsize=64)
def _release_bits(m: Matrix, platform: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per build of the platform (by index), the place of its release in the matrix; per
    place (and one past the last), the index of the release's first build. A platform's builds
    are indexed release after release, in the matrix's order, so each release holds a run of
    bits and the builds of releases before place i are the bits below starts[i]."""
    owner: list[int] = []
    starts: list[int] = []
    for i, row in enumerate(platform_builds(m, platform).rows):
        starts.append(len(owner))
        owner += [i] * (0 if row is None else len(row[1]))
    return tuple(owner), (*starts, len(owner))


@lru_cache(maxsize=256)
def _python_builds(m: Matrix, platform: str, python: str | None) -> int:
    """The builds of the platform (as bits) whose release has wheels for `python` (all of them
    for None)."""
    return sum(
        row[2]
        for row in platform_builds(m, platform).rows
        if row is not None and (python is None or python in row[0].python)
    )


def nearest_fit(req: Request, m: Matrix) -> str | None:
    """The newest full fit at or below the requested torch, else the oldest above it."""
    return _nearest_fit(req, m, str(req.torch))


def _nearest_fit(req: Request, m: Matrix, torch: str, judge: Judge | None = None) -> str | None:
    """Searched outwards from the requested torch (its specifier's text), release by release,
    stopping at the first that has a fit. Every build is judged as the resolver judges it (the
    request's torch range and CUDA pin aside: the judgement never reads them), with the
    request's kernel tables. Only the releases holding a build that may fit are visited (the
    judge's bits, with wheels for the Python): found from the bits, highest or lowest first,
    rather than by walking every release, since most requests that fail fit nowhere near."""
    _, cut = _wanted(m, req.platform, torch)  # the newest at or below it first, then above
    judge = judge or Judge(req, m)  # the resolver's, where the caller has it
    owner, starts = _release_bits(m, req.platform)
    may = judge.allowed & _python_builds(m, req.platform, req.python)
    below = may & ((1 << starts[cut]) - 1)
    while below:
        i = owner[below.bit_length() - 1]
        fits = judge.fits(i)
        if fits:
            return fits[-1]
        below &= (1 << starts[i]) - 1
    above = may >> starts[cut] << starts[cut]
    while above:
        i = owner[(above & -above).bit_length() - 1]
        fits = judge.fits(i)
        if fits:
            return fits[0]
        above = above >> starts[i + 1] << starts[i + 1]
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
    req: Request, m: Matrix, judge: Judge | None = None, torch: str | None = None
) -> tuple[Suggestion, ...]:
    """`judge` and `torch`: the resolver's Judge for `req` and the text of its torch
    specifier, reused where the caller has them."""
    return tuple(Suggestion(*s) for s in _would_fit(req, m, judge, torch))


def _would_fit(
    req: Request, m: Matrix, judge: Judge | None, torch: str | None
) -> list[tuple[str, str, str | None]]:
    """_what_would_fit's suggestions as (kind, text, build): the JSON keeps only the text."""
    text = str(req.torch) if torch is None else torch
    p = req.platform
    out: list[tuple[str, str, str | None]] = []
    if req.python is not None and (h := _python_hint(m, p, text, req.python)):
        out.append(("python", h, None))
    if req.driver is not None and (h := _driver_hint(m, p, text, req.driver)):
        out.append(("driver", h, None))
    if req.glibc is not None and (h := _glibc_hint(m, p, text, req.glibc)):
        out.append(("glibc", h, None))
    if req.driver is not None and req.driver[0] > lowest_ceiling(m):  # rare: a Pascal on R590
        out += [("driver", h, None) for h in _ceiling_hints(req, m, text)]
    for t in req.gpus:
        if h := _gpu_hint(m, p, text, t.label, t.cc, t.gpu is None):
            out.append(("gpu", h, None))
    fit = _nearest_fit(req, m, text, judge)
    if fit:
        on = "" if req.python is None else f" on Python {req.python}"
        out.append(("fit", f"{fit} fits every target{on}", fit))
    return out


def fleet_json(req: Request, m: Matrix) -> dict[str, Any]:
    """`torchship resolve --json`'s document for `req`: every platform's answer and, when
    nothing fits, what would (computed only then). benchmarks/resolve.py measures its
    throughput against the resolver's target."""
    if len(req.platforms) != 1:
        fleet = resolve_fleet(req, m)
        return fleet.to_json(tuple(s.text for s in explain(fleet.primary)))
    # one platform: FleetResolution.to_json of resolve_fleet's answer, built without the
    # Resolution, and the suggestions with the resolver's judge and torch specifier
    platform = req.platforms[0]
    preq = platform_request(req, platform)
    doc, found = resolution_json(preq, m)
    suggestions: list[str] = []
    if found.picked is None:
        if found.compatible:  # as explain: targets fit, the CUDA pin does not
            suggestions.append(_cuda_pin_text(preq, found.compatible))
        else:
            suggestions += [s[1] for s in _would_fit(preq, m, found.judge, found.torch)]
    torch = None if found.picked is None else found.picked[0].torch
    return {
        **doc,
        "suggestions": suggestions,
        "platform": platform,
        "platforms": [{"platform": platform, **doc, "suggestions": None}],
        "fleet": {"torch": torch, "problem": None},
    }


def clear_caches() -> None:
    """Empty every cache of the resolver and of what would fit: all are per matrix, platform,
    GPU kind, build or torch specifier, none holds an answer to a request. For benchmarks that
    measure a cold process."""
    from torchship.compat import builds, drivers, judge, resolve

    for cached in (
        builds.platform_builds,
        builds.kernel_table,
        builds.kernel_mask,
        resolve._matching,
        resolve._on_platform,
        resolve._build_template,
        resolve._cuda_base,
        resolve._mps_warning,
        resolve._cpu_only_on,
        judge.no_kernels,
        judge.gpu_kernels,
        judge.plain_bits,
        judge.floor_bits,
        drivers.driver_text,
        drivers.lowest_ceiling,
        drivers.ceiling,
        drivers.below_floor,
        _covering_cc,
        _covered,
        _wanted,
        _gpu_hint,
        _driver_hint,
        _python_hint,
        _glibc_hint,
        _release_bits,
        _python_builds,
    ):
        cached.cache_clear()
