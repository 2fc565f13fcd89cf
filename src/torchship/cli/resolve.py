"""`torchship resolve`: which torch builds run on the targets, which to use, why not the rest."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torchship.cli._output import print_json, table
from torchship.errors import UsageError

if TYPE_CHECKING:  # the resolver loads when a request is resolved, not to parse the flags
    from torchship.compat.fleet import FleetResolution, FleetRow, ReleaseRow
    from torchship.compat.matrix import Matrix
    from torchship.compat.request import Request
    from torchship.compat.resolve import Resolution

T = TypeVar("T")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("resolve", help="find the torch build that runs on the targets")
    p.add_argument(
        "project", nargs="?", default=".", help="project folder or spec file (when no --torch)"
    )
    p.add_argument("--torch", help="torch version or range, e.g. 2.9.1 or '>=2.7,<2.10'")
    p.add_argument("--gpu", action="append", default=[], help="GPU model, sm_XY or X.Y (repeat)")
    p.add_argument("--driver", help="the oldest NVIDIA driver of the targets, e.g. 580.65.06")
    p.add_argument("--python", help="Python version, e.g. 3.12, 3.13t or 3.14.1")
    p.add_argument("--cuda", default="auto", help="auto (default), cpu, or a CUDA version (12.8)")
    p.add_argument("--glibc", help="the oldest glibc of the targets, e.g. 2.31")
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        help="a platform the environment must install on (repeat): linux-x86_64, "
        "linux-aarch64, windows-x86_64, macos-arm64; default: what the GPUs imply",
    )
    p.add_argument("--package", action="append", default=[], help="a package (torchvision...)")
    p.add_argument(
        "--allow-forward-compat",
        action="store_true",
        help="accept cuda-compat on data-center GPUs with an older driver",
    )
    p.add_argument("--json", action="store_true", help="print JSON (the documented contract)")
    p.set_defaults(run=run)


def _flag(name: str, value: str | None, parse: Callable[[str], T]) -> T | None:
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as e:
        raise UsageError(f"{name}: {e}", "see `torchship resolve --help`") from None


def request_from_flags(args: argparse.Namespace) -> Request:
    """The request the flags make; without --torch, every release torchship knows."""
    import re

    from packaging.specifiers import SpecifierSet

    from torchship.compat.extensions import extension_pins
    from torchship.compat.gpus import lookup_gpu
    from torchship.compat.matrix import load_matrix
    from torchship.compat.platforms import parse_platform
    from torchship.compat.request import (
        Request,
        check_torch_known,
        domain_libraries,
        domain_pins,
        fleet_platforms,
    )
    from torchship.errors import UnknownGPUError
    from torchship.spec.fields import (
        parse_cuda,
        parse_driver,
        parse_glibc,
        parse_python,
        parse_requirement,
        parse_torch,
    )

    m = load_matrix()
    spec, pin = _flag("--torch", args.torch, parse_torch) or (SpecifierSet(), None)
    gpus = []
    for g in args.gpu:
        try:
            gpus.append(lookup_gpu(m, g))
        except UnknownGPUError as e:
            raise UsageError(f"--gpu: {e.message}", e.hint) from None
    cuda = _flag("--cuda", args.cuda, parse_cuda) or "auto"
    named: list[str] = []
    for text in args.platform:
        name = _flag("--platform", text, parse_platform) or ""
        if name not in named:
            named.append(name)
    try:
        platforms = fleet_platforms(tuple(gpus), tuple(named))
    except ValueError as e:
        raise UsageError(f"--platform: {e}", "name the platform those GPUs are on") from None
    # a patch level (3.14.1): wheels are per minor, but Requires-Python may exclude a patch
    patch = args.python if args.python and re.fullmatch(r"3\.\d+\.\d+", args.python) else None
    minor = patch.rsplit(".", 1)[0] if patch else args.python
    packages = tuple(args.package)
    for p in packages:
        _flag("--package", p, lambda t: parse_requirement(t, "--torch"))
    req = Request(
        torch=spec,
        torch_text=args.torch or "any",
        cuda=pin if pin and cuda == "auto" else cuda,
        python=_flag("--python", minor, parse_python),
        python_patch=patch,
        gpus=tuple(gpus),
        driver=_flag("--driver", args.driver, parse_driver),
        glibc=_flag("--glibc", args.glibc, parse_glibc),
        allow_forward_compat=args.allow_forward_compat,
        domain_libraries=domain_libraries(packages),
        domain_pins=domain_pins(packages),
        extension_pins=extension_pins(packages),
        platform=platforms[0],
        platforms=platforms,
        platforms_implied=not named,
    )
    check_torch_known(req, m, "", "--torch")
    return req


def release_table(rows: tuple[ReleaseRow, ...], chosen: str | None) -> str:
    """One row per release: its build here, or why none runs (the PyPI default's reason)."""
    cells = [
        ["✓", r.torch, r.build, "chosen" if r.build == chosen else ""] if r.build
        else ["✗", r.torch, "-", f"{r.code}: {r.reason}"]
        for r in rows
    ]  # fmt: skip
    return table(cells, ["", "TORCH", "BUILD", "WHY NOT / NOTE"])


def render(res: Resolution, releases: tuple[ReleaseRow, ...] = ()) -> str:
    from torchship.compat.explain import explain
    from torchship.versions import driver_str

    chosen = res.chosen.local_version if res.chosen else None
    if releases:  # a range: one row per release, not one per build
        out = [release_table(releases, chosen)]
    else:
        rows = []
        for name in res.compatible:
            rows.append(["✓", name, "chosen" if name == chosen else "compatible", ""])
        for r in res.rejected:
            rows.append(["✗", r.variant, r.code, r.reason])
        out = [table(rows, ["", "BUILD", "STATUS", "WHY"])]
    if res.chosen:
        c = res.chosen
        out.append("")
        out.append(
            f"chosen:     {c.local_version}"
            + (" (PyPI default)" if c.variant.name == c.release.pypi_default else "")
        )
        out.append(f"index:      {c.index_url}")
        if c.base_image:
            out.append(f"base image: {c.base_image}")
        if c.min_driver:
            out.append(f"min driver: {driver_str(c.min_driver)}")
    out += [f"warning: {w}" for w in res.warnings]
    if not res.ok:
        out.append("")
        out.append("nothing fits." if not res.compatible else "the requested CUDA does not fit.")
        out += [f"  → {s.text}" for s in explain(res)]
    return "\n".join(out)


def fleet_table(rows: tuple[FleetRow, ...], chosen: str | None) -> str:
    """One row per release: its build on each platform, or the first platform's reason."""
    cells = []
    for r in rows:
        if r.ok:
            builds = ", ".join(f"{p}: {row.build}" for p, row in r.rows)
            cells.append(["✓", r.torch, builds, "chosen" if r.torch == chosen else ""])
        else:
            p, row = next((p, row) for p, row in r.rows if not row.build)
            cells.append(["✗", r.torch, "-", f"{p}: {row.code}: {row.reason}"])
    return table(cells, ["", "TORCH", "BUILDS", "WHY NOT / NOTE"])


def render_fleet(fleet: FleetResolution, rows: tuple[FleetRow, ...] = ()) -> str:
    """One platform: today's answer. Several: the release table, then each platform's."""
    from torchship.compat.platforms import LINUX_X86_64

    if len(fleet.platforms) == 1:
        platform, res = fleet.platforms[0]
        single = tuple(row for r in rows for _, row in r.rows)
        text = render(res, single)
        return text if platform == LINUX_X86_64 else f"platform:   {platform}\n{text}"
    out = [fleet_table(rows, fleet.torch), ""] if rows else []
    for platform, res in fleet.platforms:
        out += [f"== {platform} ==", render(res) if not rows else _summary(res), ""]
    if fleet.ok:
        out.append(
            f"torch {fleet.torch} on every platform: {', '.join(p for p, _ in fleet.platforms)}"
        )
    else:
        out.append(fleet.problem or "nothing fits on every platform.")
    return "\n".join(out)


def _summary(res: Resolution) -> str:
    if res.chosen is None:
        first = res.rejected[0] if res.rejected else None
        return f"nothing fits{f': {first.code}: {first.reason}' if first else ''}"
    c = res.chosen
    lines = [f"chosen:     {c.local_version}", f"index:      {c.index_url}"]
    lines += [f"base image: {c.base_image}"] if c.base_image else []
    lines += [f"warning: {w}" for w in res.warnings]
    return "\n".join(lines)


def json_document(req: Request, m: Matrix, rows: tuple[FleetRow, ...] = ()) -> dict[str, Any]:
    """`resolve --json`: the documented contract for `req`, with what would fit when nothing
    does and, given `rows`, one row per release."""
    from torchship.compat.explain import fleet_json

    out = fleet_json(req, m)
    if rows and len(out["platforms"]) == 1:
        out["releases"] = [row.to_json() for r in rows for _, row in r.rows]
    elif rows:
        out["releases"] = [r.to_json() for r in rows]
    return out


def run(args: argparse.Namespace) -> int:
    from torchship.compat.fleet import per_release_fleet, resolve_fleet
    from torchship.compat.matrix import load_matrix
    from torchship.compat.request import request_from_spec
    from torchship.compat.resolve import matching_releases
    from torchship.spec.load import load_spec

    targets = args.gpu or args.driver or args.python or args.glibc or args.package
    m = load_matrix()
    if args.torch is None and not targets and not args.platform:
        spec = load_spec(Path(args.project))
        req = request_from_spec(spec, m)
        rows: tuple[FleetRow, ...] = ()
    else:  # the flags; without --torch: which releases run on these targets, newest first
        req = request_from_flags(args)
        several = args.torch is None or len(matching_releases(m, req.torch)) > 1
        rows = per_release_fleet(req, m) if several else ()
    if args.json:
        out = json_document(req, m, rows)
        print_json(out)
        return 0 if out["ok"] else 1
    fleet = resolve_fleet(req, m)
    print(render_fleet(fleet, rows))
    return 0 if fleet.ok else 1
