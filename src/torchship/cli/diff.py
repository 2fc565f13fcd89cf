"""`torchship diff A B`: what differs between two machines' facts, most consequential first."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torchship.cli._output import print_json
from torchship.doctor.diff import diff
from torchship.doctor.facts import read_facts


def add_parser(sub: Any) -> None:
    p = sub.add_parser("diff", help="what differs between two facts files, and what matters")
    p.add_argument("a", help="facts file (torchship facts -o a.json)")
    p.add_argument("b", help="facts file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    a, b = read_facts(Path(args.a)), read_facts(Path(args.b))
    diffs = diff(a, b)
    if args.json:
        print_json({"a": args.a, "b": args.b, "differences": [d.to_json() for d in diffs]})
        return 0
    if not diffs:
        print("no differences in what both machines reported")
        return 0
    for d in diffs:
        mark = "!" if d.matters else "·"
        print(f"{mark} {d.field}: {d.a} → {d.b}")
        print(f"    {d.consequence}")
    return 0
