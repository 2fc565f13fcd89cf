"""The resolver across a fleet of platforms (pure): per release, the build each platform would
take or why none runs there, and one torch release common to every platform, so that the lock
pins one torch everywhere."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from packaging.specifiers import SpecifierSet

from torchship.compat.matrix import Matrix
from torchship.compat.platforms import checked_on, possible
from torchship.compat.request import Request
from torchship.compat.resolve import Resolution, matching_releases, resolve


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """One torch release, judged for the request: its best build there, or why none runs."""

    torch: str
    build: str | None  # the build the resolver would pick in this release
    code: str = ""  # why not, when build is None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"torch": self.torch, "ok": self.build is not None, "build": self.build,
                "code": self.code or None, "reason": self.reason or None}  # fmt: skip


def per_release(req: Request, m: Matrix) -> tuple[ReleaseRow, ...]:
    """Each release the request's torch range admits, newest first, with the build the
    resolver picks in it or the reason none runs: the answer to "which torch runs here", one
    row per release rather than one per build."""
    rows = []
    for rel in matching_releases(m, req.torch):
        res = resolve(replace(req, torch=SpecifierSet(f"=={rel.torch}")), m)
        if res.chosen is not None:
            rows.append(ReleaseRow(rel.torch, res.chosen.local_version))
            continue
        view = rel.on(req.platform) or rel
        default = f"{rel.torch}+{view.pypi_default}"  # what `pip install torch` would give
        why = next((r for r in res.rejected if r.variant == default), None)
        why = why or res.rejected[0]  # every release the resolver passes over is rejected
        rows.append(ReleaseRow(rel.torch, None, why.code, why.reason))
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class FleetResolution:
    """One answer per platform of the fleet, all on one torch release (the newest that has a
    build running on every platform), so that the lock pins one torch everywhere."""

    platforms: tuple[tuple[str, Resolution], ...]
    torch: str | None  # the release chosen on every platform
    problem: str = ""  # why no release runs on every platform

    @property
    def ok(self) -> bool:
        return self.torch is not None and all(r.ok for _, r in self.platforms)

    @property
    def primary(self) -> Resolution:
        return self.platforms[0][1]

    def on(self, platform: str) -> Resolution | None:
        return next((r for p, r in self.platforms if p == platform), None)

    def to_json(self, suggestions: tuple[str, ...] = ()) -> dict[str, Any]:
        """The primary platform's answer in today's fields, and every platform's beside it."""
        each = [r.to_json() for _, r in self.platforms]  # the primary's made once, not twice
        out = {**each[0], "suggestions": list(suggestions)}
        out["ok"] = self.ok
        out["platform"] = self.platforms[0][0]
        out["platforms"] = [
            {"platform": p, **j, "suggestions": None}
            for (p, _), j in zip(self.platforms, each, strict=True)
        ]
        out["fleet"] = {"torch": self.torch, "problem": self.problem or None}
        return out


def platform_request(req: Request, platform: str) -> Request:
    """The request as one platform of the fleet sees it: the GPUs that are checked there."""
    fleet = req.platforms
    if len(fleet) == 1:  # checked_on for a fleet of one: wherever the GPU can be
        gpus = tuple([t for t in req.gpus if platform in possible(t.gpu)])
    else:
        gpus = tuple([t for t in req.gpus if checked_on(t.gpu, platform, fleet)])
    if platform == req.platform and len(gpus) == len(req.gpus) and not req.gpus_elsewhere:
        return req  # as it is (dataclasses.replace costs a tenth of a resolution)
    elsewhere = tuple(t.label for t in req.gpus if t not in gpus)
    return replace(req, platform=platform, gpus=gpus, gpus_elsewhere=elsewhere)


def resolve_fleet(req: Request, m: Matrix) -> FleetResolution:
    """Resolve for every platform of `req.platforms` on one common torch release. Pure."""
    reqs = [(p, platform_request(req, p)) for p in req.platforms]
    if len(reqs) == 1:
        p, r = reqs[0]
        res = resolve(r, m)
        return FleetResolution(((p, res),), res.chosen.release.torch if res.chosen else None)
    rows = {p: {row.torch: row for row in per_release(r, m)} for p, r in reqs}
    common = next(
        (t for t in (rel.torch for rel in matching_releases(m, req.torch))
         if all(rows[p][t].build for p, _ in reqs)),
        None,
    )  # fmt: skip
    answers = tuple((p, resolve(r, m, release=common)) for p, r in reqs)
    problem = ""
    if common is None:
        spans = []
        for p, _ in reqs:
            runs = [t for t, row in rows[p].items() if row.build]
            spans.append(f"{p}: {runs[-1]}–{runs[0]}" if runs else f"{p}: none")
        problem = "no torch release runs on every platform (" + "; ".join(spans) + ")"
    return FleetResolution(answers, common, problem)


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One torch release across the fleet: its build on each platform, or why none runs."""

    torch: str
    rows: tuple[tuple[str, ReleaseRow], ...]

    @property
    def ok(self) -> bool:
        return all(r.build for _, r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "torch": self.torch,
            "ok": self.ok,
            "platforms": {p: r.to_json() for p, r in self.rows},
        }


def per_release_fleet(req: Request, m: Matrix) -> tuple[FleetRow, ...]:
    """`per_release` for every platform of the fleet, newest release first."""
    names = req.platforms
    tables = [per_release(platform_request(req, p), m) for p in names]
    return tuple(
        FleetRow(same[0].torch, tuple(zip(names, same, strict=True)))
        for same in zip(*tables, strict=True)
    )
