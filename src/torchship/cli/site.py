"""`torchship site list|check`: the sites placement may use (sites.toml)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from torchship.cli._output import print_json, table
from torchship.place.sites import Site, sites_or_default

STALE_PRICE_DAYS = 180


def add_parser(sub: Any) -> None:
    p = sub.add_parser("site", help="list or check the sites placement may use")
    ssub = p.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    for name, helptext in (
        ("list", "the sites, one line each"),
        ("check", "validate sites.toml and warn about stale prices"),
    ):
        q = ssub.add_parser(name, help=helptext)
        q.add_argument("--sites", metavar="S", help="sites file (default: $TORCHSHIP_SITES or "
                       "the data dir's sites.toml; else this machine only)")  # fmt: skip
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(run=run)


def _gpus(s: Site) -> str:
    return ", ".join(f"{g.count}×{g.model}" for g in s.gpus) or "-"


def warnings(sites: tuple[Site, ...], today: dt.date) -> list[str]:
    out = []
    for s in sites:
        if s.price_as_of:
            try:
                age = (today - dt.date.fromisoformat(s.price_as_of)).days
            except ValueError:
                out.append(f"{s.name}: price_as_of {s.price_as_of!r} is not a date (YYYY-MM-DD)")
                continue
            if age > STALE_PRICE_DAYS:
                out.append(f"{s.name}: price is {age} days old ({s.price_as_of}); re-check it")
        if s.kind != "local" and not s.gpus:
            out.append(f"{s.name}: no GPUs listed; only CPU jobs can be placed there")
    return out


def run(args: argparse.Namespace) -> int:
    sites, source = sites_or_default(args.sites)
    if args.json:
        print_json({"source": source, "sites": [s.to_dict() for s in sites]})
        return 0
    if args.site_command == "check":
        notes = warnings(sites, dt.date.today())
        for n in notes:
            print(f"warning: {n}")
        print(f"{source}: {len(sites)} site(s) ok, {len(notes)} warning(s)")
        return 0
    rows = [
        [
            s.name, s.kind, str(s.tier), s.trust, ",".join(sorted(s.data_classes)), _gpus(s),
            f"${s.price_per_gpu_hour:.2f}" if s.price_per_gpu_hour else "-",
            f"{s.wait_budget_minutes:g} min", s.price_as_of or "-",
        ]
        for s in sites
    ]  # fmt: skip
    header = [
        "NAME",
        "KIND",
        "TIER",
        "TRUST",
        "DATA",
        "GPUS",
        "$/GPU-H",
        "WAIT BUDGET",
        "PRICE AS OF",
    ]
    print(f"sites from {source}")
    print(table(rows, header))
    return 0
