"""`torchship state check|repair`: what is wrong with the job store, and a rebuild that keeps
the damaged file (torchship.store_health)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torchship.cli._output import print_json
from torchship.state import busy_timeout, default_path
from torchship.store_health import check, repair


def add_parser(sub: Any) -> None:
    p = sub.add_parser("state", help="check or repair the job store (jobs.db)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser("check", help="say what is wrong with the job store, writing nothing")
    r = verbs.add_parser(
        "repair", help="keep a copy of a damaged job store and rebuild what still reads"
    )
    for q in (c, r):
        q.add_argument("--db", metavar="PATH", help="the store (default: $TORCHSHIP_HOME/jobs.db)")
        q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.db) if args.db else default_path()
    wait_s = min(busy_timeout(), 5.0)
    if args.verb == "check":
        health = check(path, wait_s)
        if args.json:
            print_json(health.to_json())
        elif not health.exists:
            print(f"no job store at {path} yet: nothing to check")
        elif health.ok:
            print(f"job store {path}: ok (schema {health.schema_version}, {health.jobs} jobs, "
                  f"{health.events} events, {health.size_bytes:,} bytes)")  # fmt: skip
        else:
            for p in health.problems:
                print(f"✗ {p.kind}: {p.message}\n    fix: {p.hint}")
        return 0 if health.ok else 1
    done = repair(path, wait_s)
    if args.json:
        print_json(None if done is None else done.to_json())
    elif done is None:
        print(f"job store {path}: nothing to repair")
    else:
        print(f"kept the damaged store as {', '.join(map(str, done.kept)) or 'nothing'}")
        found = f", {done.by_scan} found by scanning its pages" if done.by_scan else ""
        print(f"rebuilt {path}: {done.jobs} job(s) and {done.events} event(s) recovered{found}")
        for note in done.notes[:20]:
            print(f"  {note}")
    return 0
