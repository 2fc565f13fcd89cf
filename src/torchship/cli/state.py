"""`torchship state check|repair|prune|vacuum`: what is wrong with the job store, a rebuild
that keeps the damaged file (torchship.store_health), and keeping it small: finished jobs past
their retention moved to the archive, and the freed space given back (torchship.store_archive).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torchship.cli._output import print_json
from torchship.errors import UsageError
from torchship.state import busy_timeout, default_path


def add_parser(sub: Any) -> None:
    p = sub.add_parser("state", help="check, repair, prune or vacuum the job store (jobs.db)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser("check", help="say what is wrong with the job store, writing nothing")
    r = verbs.add_parser(
        "repair", help="keep a copy of a damaged job store and rebuild what still reads"
    )
    pr = verbs.add_parser(
        "prune", help="move finished jobs past their retention to the archive (jobs-archive.db)"
    )
    pr.add_argument("--older-than", metavar="DAYS", type=float,
                    help="finished this many days ago or more (default: TORCHSHIP_RETENTION_DAYS,"
                    " or 30)")  # fmt: skip
    v = verbs.add_parser("vacuum", help="give the space of moved jobs back to the file system")
    for q in (c, r, pr, v):
        q.add_argument("--db", metavar="PATH", help="the store (default: $TORCHSHIP_HOME/jobs.db)")
        q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.db is not None and not args.db.strip():
        raise UsageError("--db is empty", "give the store's path, or leave --db out")
    path = Path(args.db) if args.db else default_path()
    from torchship.store_errors import folder_problem

    problem = folder_problem(path)  # TORCHSHIP_HOME a file: no store can be there, say so
    if problem is not None:
        raise problem
    if args.verb in ("prune", "vacuum"):
        return _keep_small(args, path)
    from torchship.store_health import check, repair

    wait_s = min(busy_timeout(), 5.0)
    if args.verb == "check":
        from torchship.state import archive_path

        health = check(path, wait_s)
        archive = archive_path(path)
        there = archive.exists() or archive.is_symlink()
        beside = check(archive, wait_s) if there and not args.db else None
        ok = health.ok and (beside is None or beside.ok)
        if args.json:
            doc = {**_with_db(health.to_json(), path, args.db is not None), "ok": ok,
                   "store_ok": health.ok,
                   "archive": beside and _with_db(beside.to_json(), archive, True)}  # fmt: skip
            print_json(doc)
            return 0 if ok else 1
        for h in (health, beside):
            if h is not None:
                _say(h, h is beside or args.db is not None)
        return 0 if ok else 1
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


def _with_db(doc: dict[str, Any], path: Path, named: bool) -> dict[str, Any]:
    """A health document whose problems' hints name `--db PATH` where the store is not the
    default one (`state repair` alone would repair jobs.db)."""
    if not named:
        return doc
    from torchship.store_errors import naming

    problems = [{**p, "hint": naming(p["hint"], path)} for p in doc.get("problems", [])]
    return {**doc, "problems": problems}


def _say(health: Any, named: bool) -> None:
    """`state check` in words; hints that say to run `state check` are cut to what remains, and
    name the store with --db where it is not the default one (`named`: the archive, --db)."""
    from torchship.state import archived_store
    from torchship.store_errors import naming

    what = "archive" if archived_store(health.path) else "job store"
    if not health.exists:
        print(f"no {what} at {health.path} yet: nothing to check")
    elif health.ok:
        print(f"{what} {health.path}: ok (schema {health.schema_version}, {health.jobs} jobs, "
              f"{health.events} events, {health.size_bytes:,} bytes)")  # fmt: skip
    for p in health.problems:
        hint = p.hint.split("; ", 1)[-1] if p.hint.startswith(_CHECK_FIRST) else p.hint
        if named:
            hint = naming(hint, health.path)
        print(f"✗ {p.kind}: {p.message}\n    fix: {hint}")


_CHECK_FIRST = "see what is wrong: `torchship state check`"


def _keep_small(args: argparse.Namespace, path: Path) -> int:
    from torchship.state import JobStore
    from torchship.store_archive import move_due, retention_s, vacuum
    from torchship.store_errors import file_problem

    if args.verb == "prune":  # a bad value is refused whether or not there is a store
        if args.older_than is not None and not 0 <= args.older_than * 86400 < float("inf"):
            raise UsageError(f"--older-than {args.older_than:g}: not a number of days",
                             "give a number of days, e.g. --older-than 30")  # fmt: skip
        keep = args.older_than * 86400 if args.older_than is not None else retention_s()
    if not path.is_file():
        problem = file_problem(path) if path.exists() or path.is_symlink() else None
        if problem is not None:
            raise problem
        print(f"no job store at {path} yet: nothing to {args.verb}")
        return 0
    with JobStore(path) as store:
        if args.verb == "vacuum":
            done: list[Any] = []
            try:
                vacuum(store, done)
            finally:  # what was given back is said, whatever came of the rest
                if args.json:
                    print_json([{"path": str(d.path), "before_bytes": d.before_bytes,
                                 "after_bytes": d.after_bytes} for d in done])  # fmt: skip
                for d in [] if args.json else done:
                    print(f"{d.path}: {d.before_bytes:,} → {d.after_bytes:,} bytes")
            return 0
        if keep is None:
            print("retention is off (TORCHSHIP_RETENTION_DAYS=never): pass --older-than DAYS")
            return 0
        moved = move_due(store, keep)
    if args.json:
        print_json({"jobs": moved.jobs, "events": moved.events, "archive": str(moved.archive)})
    else:
        print(f"moved {moved.jobs:,} finished job(s) and {moved.events:,} event(s) older than "
              f"{keep / 86400:g} days to {moved.archive}")  # fmt: skip
        if moved.jobs:
            print(f"the space they held is free inside {path}: `torchship state vacuum` gives "
                  "it back to the file system")  # fmt: skip
    return 0
