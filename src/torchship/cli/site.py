"""`torchship site add|list|check`: the sites placement may use (sites.toml).

Nothing here names a kind of site: `--kind` takes any of torchship.backends.SITE_KINDS, a
kind's own keys go in with `--set KEY=VALUE` (the Kubernetes and SkyPilot ones also have the
flags they always had), and `site check` runs each site's kind's check."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship.backends import SITE_KINDS, site_kind
from torchship.cli._output import print_json, table
from torchship.errors import UsageError

if TYPE_CHECKING:
    from torchship.place.sites import Site

STALE_PRICE_DAYS = 180


def add_parser(sub: Any) -> None:
    p = sub.add_parser("site", help="add, list or check the sites placement may use")
    ssub = p.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    q = ssub.add_parser("prices", help="the dated cloud price table, with sources")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(run=run_prices)
    for name, helptext in (
        ("list", "the sites, one line each"),
        ("check", "validate sites.toml and warn about stale prices"),
    ):
        q = ssub.add_parser(name, help=helptext)
        q.add_argument("--sites", metavar="S", help="sites file (default: $TORCHSHIP_SITES or "
                       "the data dir's sites.toml; else this machine only)")  # fmt: skip
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(run=run)
        if name == "check":
            q.add_argument("--live", action="store_true",
                           help="also read each site's GPUs where its kind can (Kubernetes: "
                           "from its nodes)")  # fmt: skip
    _add_parser(ssub)
    q = ssub.add_parser("forget", help="forget the cluster recorded for a Kubernetes site")
    q.add_argument("name")
    q.set_defaults(run=run_forget)


def _add_parser(ssub: Any) -> None:
    q = ssub.add_parser("add", help="add a site to the sites file (validated, written atomically)")
    q.add_argument("name")
    q.add_argument("--kind", required=True, choices=list(SITE_KINDS))
    q.add_argument("--sites", metavar="S", help="sites file (default: see `site list`)")
    q.add_argument("--tier", type=int)
    q.add_argument("--trust", choices=("private", "public"))
    q.add_argument("--data-classes", metavar="A,B", help="e.g. public,internal")
    q.add_argument("--gpu", action="append", default=[], metavar="MODEL:COUNT[:PER_NODE]")
    q.add_argument("--max-nodes", type=int)
    q.add_argument("--price", type=float, metavar="USD", help="per GPU-hour")
    q.add_argument(
        "--catalog",
        metavar="PROVIDER:INSTANCE",
        help="take price, date and source from `site prices` (e.g. aws:p5.48xlarge)",
    )
    q.add_argument("--price-as-of", metavar="YYYY-MM-DD")
    q.add_argument("--price-source", metavar="TEXT")
    q.add_argument("--egress", type=float, metavar="USD", help="per GB")
    q.add_argument("--wait-budget", type=float, metavar="MIN")
    q.add_argument("--startup", type=float, metavar="MIN")
    for key in ("region", "queue", "context", "namespace", "operator", "registry", "infra"):
        q.add_argument(f"--{key}")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any key of the site's table (its kind's own too); VALUE is read as "
                   "TOML when it reads, else as a string")  # fmt: skip
    q.set_defaults(run=run_add)


def _gpu_arg(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
        raise UsageError(f"--gpu {text!r} is not MODEL:COUNT[:PER_NODE]", "e.g. --gpu H100:64:8")
    gpu: dict[str, Any] = {"model": parts[0], "count": int(parts[1])}
    if len(parts) == 3:
        gpu["per_node"] = int(parts[2])
    return gpu


def _set_arg(text: str) -> tuple[str, Any]:
    import tomllib

    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise UsageError(f"--set {text!r} is not KEY=VALUE", "e.g. --set namespace=ml")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def site_table(args: argparse.Namespace) -> dict[str, Any]:
    """The [[site]] table the flags describe (validated by the sites parser, not here)."""
    table: dict[str, Any] = {"name": args.name, "kind": args.kind}
    flags = {
        "tier": args.tier, "trust": args.trust, "max_nodes": args.max_nodes,
        "price_per_gpu_hour": args.price, "price_as_of": args.price_as_of,
        "price_source": args.price_source, "egress_per_gb": args.egress,
        "wait_budget_minutes": args.wait_budget, "startup_minutes": args.startup,
        "region": args.region, "queue": args.queue, "context": args.context,
        "namespace": args.namespace, "operator": args.operator, "registry": args.registry,
        "infra": args.infra,
    }  # fmt: skip
    if args.catalog:  # the catalog's dated price and source, unless given explicitly
        from torchship.place.prices import lookup

        p = lookup(args.catalog)
        flags["price_per_gpu_hour"] = args.price or p.price_per_gpu_hour
        flags["price_as_of"] = args.price_as_of or p.as_of
        flags["price_source"] = (
            args.price_source
            or f"{p.key} {p.region}, ${p.usd_per_hour}/h for {p.gpus} × {p.gpu}: {p.source}"
        )
        flags["region"] = args.region or p.region
    table.update({k: v for k, v in flags.items() if v is not None})
    if args.data_classes:
        table["data_classes"] = [c.strip() for c in args.data_classes.split(",") if c.strip()]
    if args.gpu:
        table["gpus"] = [_gpu_arg(g) for g in args.gpu]
    table.update(_set_arg(x) for x in args.set)
    return table


def run_add(args: argparse.Namespace) -> int:
    import tomli_w

    from torchship._atomic import write_text_atomic
    from torchship._files import read_user_text
    from torchship.place.sites import default_sites_path
    from torchship.sites import sites_from_toml

    path = Path(args.sites) if args.sites else default_sites_path()
    exists = path.exists() or path.is_symlink()
    old = read_user_text(path, "sites file", "check the --sites path") if exists else ""
    block = "[[site]]\n" + tomli_w.dumps(site_table(args))
    text = (old.rstrip("\n") + "\n\n" if old.strip() else "") + block
    sites = sites_from_toml(text, str(path))  # the whole file must still be valid
    site = next(s for s in sites if s.name == args.name)
    lines = site_kind(site.kind).check(site, False)  # refused before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    print(f"{path}: added {args.name} ({len(sites)} site(s))")
    for line in lines:
        print(line)
    return 0


def run_forget(args: argparse.Namespace) -> int:
    from torchship.k8s.identity import clusters_path, forget

    if not forget(args.name):
        raise UsageError(f"no cluster is recorded for site {args.name!r}",
                         f"see {clusters_path()}")  # fmt: skip
    print(f"{args.name}: recorded cluster forgotten; `torchship site check` records it again")
    return 0


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
        if not s.gpus and s.capabilities is not None and s.capabilities.remote:
            out.append(f"{s.name}: no GPUs listed; only CPU jobs can be placed there")
    return out


def run(args: argparse.Namespace) -> int:
    from torchship.sites import sites_or_default

    sites, source = sites_or_default(args.sites)
    if args.json:
        print_json({"source": source, "sites": [s.to_dict() for s in sites]})
        return 0
    if args.site_command == "check":
        notes = warnings(sites, dt.date.today())
        for s in sites:  # each kind checks what it reaches (a cluster's identity, …)
            for line in site_kind(s.kind).check(s, getattr(args, "live", False)):
                if line.startswith("warning: "):
                    notes.append(line.removeprefix("warning: "))
                else:
                    print(line)
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


def run_prices(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from torchship.place.prices import catalog

    rows = catalog()
    if args.json:
        print_json([{**asdict(p), "price_per_gpu_hour": p.price_per_gpu_hour} for p in rows])
        return 0
    header = ["INSTANCE", "GPUS", "REGION", "PER HOUR", "PER GPU-HOUR", "AS OF", "VERIFIED"]
    print(table([[p.key, f"{p.gpus} × {p.gpu}", p.region, f"${p.usd_per_hour:,.2f}",
                  f"${p.price_per_gpu_hour:,.2f}", p.as_of, "yes" if p.verified else "no"]
                 for p in rows], header))  # fmt: skip
    print("sources: `torchship site prices --json`; re-read them before relying on a price")
    return 0
