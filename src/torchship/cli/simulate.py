"""`torchship simulate TRACE|--generate PERIOD [--gpus N] [--seed N] [--sites S] [--policy P …]
[--plot F.png] [--json]`: replay a job trace (or one drawn from the Helios study) through the
placement code under each policy and compare cost and waits."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship.cli._output import print_json, table
from torchship.errors import UsageError

if TYPE_CHECKING:
    from torchship.place.simulate import PolicyResult

# torchship.place.simulate's POLICIES, repeated so that parsing loads no library module (a
# test checks they agree)
POLICIES = ("hybrid", "local-only", "cloud-only", "cheapest")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("simulate", help="replay a job trace under each placement policy")
    p.add_argument(
        "trace", nargs="?", help="a trace CSV (name,submit_s,gpus,duration_s[,data_class,…])"
    )
    p.add_argument(
        "--generate",
        metavar="PERIOD",
        help="instead of a trace, draw one at the Helios study's job rate: week, month or days",
    )
    p.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="with --generate: grow the sites' on-prem clusters to N GPUs (clouds alike)",
    )
    p.add_argument("--seed", type=int, default=2021, help="with --generate (default: 2021)")
    p.add_argument("--sites", metavar="S", help="sites file (default: see `torchship site list`)")
    p.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        metavar="P",
        help=f"one of {', '.join(POLICIES)}; repeat it for several (default: all)",
    )
    p.add_argument("--plot", metavar="F.png", help="write a chart of cost against p95 wait")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchship.place.simulate import generated, period_days, simulate
    from torchship.place.trace import read_trace
    from torchship.sites import sites_or_default

    sites, source = sites_or_default(args.sites)
    if (args.trace is None) == (args.generate is None):
        raise UsageError(
            "give a trace CSV or --generate, one of them",
            "torchship simulate trace.csv, or --generate month --gpus 10000",
        )
    if args.generate is None:
        if args.gpus is not None:
            raise UsageError("--gpus goes with --generate", "leave it out for a trace CSV")
        trace, label = read_trace(args.trace, [s.name for s in sites]), args.trace
    else:
        trace, sites = generated(sites, period_days(args.generate), args.gpus, args.seed)
        label = f"--generate {args.generate} (seed {args.seed})"
        if args.gpus is not None:
            source += f", on-prem grown to {args.gpus} GPUs"
    policies = tuple(dict.fromkeys(args.policy or POLICIES))
    results = [simulate(trace, sites, p) for p in policies]
    ratios = compare(results)
    if args.json:
        print_json({"trace": label, "sites": source,
                    "results": [r.to_dict() for r in results], "ratios": ratios})  # fmt: skip
    else:
        print(f"{len(trace)} jobs from {label}; sites from {source}")
        print(render(results))
        for name, value in ratios.items():
            print(f"{name}: {value:.3f}")
    if args.plot:
        plot(results, Path(args.plot))
    return 0


def render(results: list[PolicyResult]) -> str:
    rows = [
        [r.policy, f"${r.cost_usd:,.0f}", f"{r.makespan_h:.1f} h", f"{r.wait_p50_min:.0f} min",
         f"{r.wait_p95_min:.0f} min", str(r.violations), str(r.refused), str(r.on_public)]
        for r in results
    ]  # fmt: skip
    header = ["POLICY", "COST", "MAKESPAN", "WAIT P50", "WAIT P95", "VIOLATIONS", "REFUSED",
              "ON PUBLIC SITES"]  # fmt: skip
    return table(rows, header)


def compare(results: list[PolicyResult]) -> dict[str, float]:
    """Hybrid against the baselines, where they were simulated."""
    by = {r.policy: r for r in results}
    out: dict[str, float] = {}
    h = by.get("hybrid")
    if h and "cloud-only" in by and by["cloud-only"].cost_usd > 0:
        out["hybrid cost / cloud-only cost"] = h.cost_usd / by["cloud-only"].cost_usd
    if h and "local-only" in by and by["local-only"].wait_p95_min > 0:
        out["hybrid p95 wait / local-only p95 wait"] = (
            h.wait_p95_min / by["local-only"].wait_p95_min
        )
    return out


def plot(results: list[PolicyResult], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            "pip install 'torchship[plot]' (or leave out --plot)",
        ) from None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r in results:
        ax.scatter(r.wait_p95_min / 60, r.cost_usd, s=60)
        label = f"{r.policy}" + (f" ({r.violations} violations)" if r.violations else "")
        ax.annotate(label, (r.wait_p95_min / 60, r.cost_usd), textcoords="offset points",
                    xytext=(6, 6))  # fmt: skip
    ax.set_xlabel("p95 wait (hours)")
    ax.set_ylabel("cost (USD)")
    ax.set_title("Placement policies: cost against wait")
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    from torchship._atomic import open_atomic

    with open_atomic(path) as f:
        f.write(buf.getvalue())
