"""`torchship resolve`: which torch builds run on the targets, which to use, why not the rest."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from packaging.specifiers import SpecifierSet

from torchship.cli._output import print_json, table
from torchship.compat.explain import explain
from torchship.compat.extensions import extension_pins
from torchship.compat.gpus import lookup_gpu
from torchship.compat.matrix import load_matrix
from torchship.compat.request import Request, check_torch_known, domain_libraries, domain_pins
from torchship.compat.resolve import (
    ReleaseRow,
    Resolution,
    matching_releases,
    per_release,
    resolve,
)
from torchship.errors import UnknownGPUError, UsageError
from torchship.lock import resolve_spec
from torchship.spec.fields import parse_cuda, parse_driver, parse_glibc, parse_python, parse_torch
from torchship.spec.load import load_spec
from torchship.versions import driver_str

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
    m = load_matrix()
    spec, pin = _flag("--torch", args.torch, parse_torch) or (SpecifierSet(), None)
    gpus = []
    for g in args.gpu:
        try:
            gpus.append(lookup_gpu(m, g))
        except UnknownGPUError as e:
            raise UsageError(f"--gpu: {e.message}", e.hint) from None
    cuda = _flag("--cuda", args.cuda, parse_cuda) or "auto"
    # a patch level (3.14.1): wheels are per minor, but Requires-Python may exclude a patch
    patch = args.python if args.python and re.fullmatch(r"3\.\d+\.\d+", args.python) else None
    minor = patch.rsplit(".", 1)[0] if patch else args.python
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
        domain_libraries=domain_libraries(tuple(args.package)),
        domain_pins=domain_pins(tuple(args.package)),
        extension_pins=extension_pins(tuple(args.package)),
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
        out.append(f"base image: {c.base_image}")
        if c.min_driver:
            out.append(f"min driver: {driver_str(c.min_driver)}")
    out += [f"warning: {w}" for w in res.warnings]
    if not res.ok:
        out.append("")
        out.append("nothing fits." if not res.compatible else "the requested CUDA does not fit.")
        out += [f"  → {s.text}" for s in explain(res)]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    targets = args.gpu or args.driver or args.python or args.glibc or args.package
    if args.torch is None and not targets:
        res = resolve_spec(load_spec(Path(args.project)))
        releases: tuple[ReleaseRow, ...] = ()
    else:  # the flags; without --torch: which releases run on these targets, newest first
        m = load_matrix()
        req = request_from_flags(args)
        res = resolve(req, m)
        several = args.torch is None or len(matching_releases(m, req.torch)) > 1
        releases = per_release(req, m) if several else ()
    if args.json:
        out = res.to_json(tuple(s.text for s in explain(res)))
        if releases:
            out["releases"] = [r.to_json() for r in releases]
        print_json(out)
    else:
        print(render(res, releases))
    return 0 if res.ok else 1
