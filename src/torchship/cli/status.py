"""`torchship status [JOB]`: jobs as their sites report them (the store is reconciled first).

The listing shows the active jobs and the 50 most recent (`--limit`, `--all`, `--since`,
`--state`, `--site`: each alone an index range of the store, so the time does not grow with the
history; combined, one range sieved by the others: docs/state.md), `--archived` the jobs moved
to the archive. Only the active jobs it covers are reconciled, with one call per site. A job
whose site cannot be asked (a cluster that does not answer, a handle its backend cannot read)
is listed with its last recorded state, marked `?`, and one `warning:` line on stderr; the
listing still exits 0. `status JOB` fails on that job as any command does. `--json` streams:
one job in memory at a time.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from torchship.errors import TorchshipError, UsageError, one_line
from torchship.state import STATES, TERMINAL, Job, JobStore, Line, Query

NOTE_CHARS = 200  # a site's error as the listing's warning line shows it
DEFAULT_LIMIT = 50
CHUNK = 1000  # a long table is aligned this many rows at a time, never held whole
HEADER = ["ID", "NAME", "SITE", "STATE", "EXIT", "SUBMITTED", "TOOK", "HANDLE"]
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="jobs and their states (one job: its history)")
    p.add_argument("job", nargs="?", help="a job id (or a unique prefix, or its key)")
    p.add_argument("--state", choices=STATES, action="append",
                   help="only jobs in this state, as the site says now (repeatable)")  # fmt: skip
    p.add_argument("--site", help="only jobs of this site (its name)")
    p.add_argument("--since", metavar="WHEN",
                   help="only jobs submitted since WHEN: an age (30m, 12h, 7d, 2w) or a date "
                   "(2026-11-01, 2026-11-01T08:00)")  # fmt: skip
    p.add_argument("--limit", type=int, metavar="N",
                   help=f"the N most recent jobs, besides the active ones (default "
                   f"{DEFAULT_LIMIT})")  # fmt: skip
    p.add_argument("--all", action="store_true", help="every job that matches, oldest first")
    p.add_argument("--archived", action="store_true",
                   help="list the archive (jobs past their retention), not the store")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.ASCII | re.IGNORECASE)
MAX_LIMIT = 10**9  # more rows than any store holds; SQLite's integers end at 2**63


def since_time(text: str, now: float) -> float:
    """`--since`: an age before now (30m, 12h, 7d, 2w) or a date, as seconds since the epoch."""
    value = text.strip()
    hint = "give an age (30m, 12h, 7d, 2w) or a date (2026-11-01, 2026-11-01T08:00)"
    age = _AGE.fullmatch(value)
    if age:
        return now - float(age.group(1)) * UNITS[age.group(2).lower()]
    from datetime import datetime

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {one_line(text, 80)!r}: not an age or a date", hint) from None
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):  # year 1 in a zone west of UTC, say
        raise UsageError(f"--since {text!r}: a date this machine cannot count from", hint) from None


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _row(job: Job | Line, now: float, unsure: bool = False) -> list[str]:
    took = job.updated_at - job.created_at if job.state in TERMINAL else now - job.created_at
    return [
        job.id,
        job.name,
        job.site or "-",
        job.state + ("?" if unsure else ""),
        "-" if job.exit_code is None else str(job.exit_code),
        _age(now - job.created_at) + " ago",
        _age(took),
        job.handle or "-",
    ]


def _as_json(job: Job | Line) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "site": job.site,
        "state": job.state,
        "exit_code": job.exit_code,
        "handle": job.handle,
        "lock_hash": job.lock_hash,
        "placement": job.placement if isinstance(job, Job) else job.placement(),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def _table(rows: Iterator[list[str]]) -> Iterator[str]:
    """The table, CHUNK rows at a time, each part aligned on its own under its own header."""
    from torchship.cli._output import table

    chunk: list[list[str]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield table(chunk, HEADER)
            chunk = []
    if chunk:
        yield table(chunk, HEADER)


def _json_list(items: Iterator[dict[str, Any]]) -> int:
    """A JSON array as print_json writes it, one element at a time; how many."""
    import json

    out, n = sys.stdout, 0
    try:
        for item in items:
            text = json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            out.write(("[\n  " if not n else ",\n  ") + text)
            n += 1
    except TorchshipError:  # a store damaged mid-listing: the output stays one JSON document,
        out.write("[]\n" if not n else "\n]\n")  # cut short, and the exit code says so
        raise
    out.write("[]\n" if not n else "\n]\n")
    return n


def _one(store: JobStore, ref: str, as_json: bool, now: float) -> int:
    from torchship.jobs import get_job, reconcile
    from torchship.store_archive import archived_events

    job = reconcile(store, get_job(store, ref))
    events = archived_events(store, job.id) if job.archived else store.events(job.id)
    if as_json:
        from torchship.cli._output import print_json

        rows = [{"state": e.state, "at": e.at, "detail": e.detail} for e in events]
        print_json({**_as_json(job), "archived": job.archived, "events": rows})
        return 0
    from torchship.cli._output import table

    print(table([_row(job, now)], HEADER))
    if job.archived:
        print("archived: past the retention period (TORCHSHIP_RETENTION_DAYS)")
    if isinstance(job.placement, dict):
        print(f"placement: {job.placement.get('reason', '-')}")
    for e in events:
        reason = (e.detail or {}).get("reason")
        detail = f"  {reason}" if reason else ""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        print(f"  {stamp}  {e.state}{detail}")
    return 0


def _reconciled(store: JobStore, query: Query, now: float) -> dict[str, str]:
    """Reconcile the active jobs the listing covers, one call per site; why each job whose
    site was not asked (warned on stderr)."""
    if not store.has_active():
        return {}
    from torchship.jobs import reconcile_all

    notes = {}
    for job, why in reconcile_all(store, store.active(query.site, query.since), now):
        if why is not None:
            note = one_line(why, NOTE_CHARS)
            print(f"warning: job {job.id} ({job.site}): its site was not asked ({note}); "
                  f"shown as last recorded, {job.state}", file=sys.stderr)  # fmt: skip
            notes[job.id] = note
    return notes


def _check(args: argparse.Namespace) -> None:
    """What the flags cannot mean together, or an empty value, as usage errors."""
    if args.job is not None:
        given = [f for f, on in (("--state", args.state), ("--site", args.site is not None),
                                 ("--since", args.since is not None),
                                 ("--limit", args.limit is not None), ("--all", args.all),
                                 ("--archived", args.archived)) if on]  # fmt: skip
        if given:
            raise UsageError(
                f"{', '.join(given)} select jobs for the listing; `status {one_line(args.job, 40)}`"
                " shows that one job wherever it is",
                "drop the job to list, or the flags to see the job",
            )
    if args.all and args.limit is not None:
        raise UsageError("--all and --limit: every job, or the N most recent?", "pass one")
    if args.limit is not None and not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"--limit {args.limit}: must be 1 to {MAX_LIMIT:,}", "or pass --all")
    for flag, value in (("--since", args.since), ("--site", args.site)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is empty", f"give {flag} a value, or leave it out")


def run(args: argparse.Namespace) -> int:
    now = time.time()
    _check(args)
    since = since_time(args.since, now) if args.since is not None else None
    limit = None if args.all else (args.limit or DEFAULT_LIMIT)
    query = Query(tuple(args.state or ()), args.site, since, limit, placement=args.json)
    with JobStore() as store:
        if args.job is not None:
            return _one(store, args.job, args.json, now)
        if args.archived:
            return _archived(store, query, args.json, now)
        notes = _reconciled(store, query, now)
        return _list(store, notes, query, args.json, now)


def _list(store: JobStore, notes: dict[str, str], query: Query, as_json: bool, now: float,
          archived: bool = False) -> int:  # fmt: skip
    lines = store.lines(query)

    def more() -> bool:
        return store.more_than(query)

    shown = 0
    if as_json:
        shown = _json_list({**_as_json(x), "site_error": notes.get(x.id)} for x in lines)
    else:
        for part in _table(_row(x, now, x.id in notes) for x in lines):
            print(part)
            shown += part.count("\n")
        if not shown and archived:
            print("the archive holds no jobs" if query == Query() else "no archived jobs match")
        elif not shown:
            print("no jobs yet: `torchship run examples/quickstart/job.toml`" if query == Query()
                  else "no jobs match")  # fmt: skip
    if query.limit is not None and shown >= query.limit and more():  # on stderr, JSON or not
        print(f"(the active jobs and the {query.limit} most recent: --all, --limit N or --since "
              f"for more{'' if archived else ', --archived for the archive'})",
              file=sys.stderr)  # fmt: skip
    return 0


def _archived(store: JobStore, query: Query, as_json: bool, now: float) -> int:
    from torchship.store_archive import archive_path, naming_archive

    path = archive_path(store.path)
    if not path.is_file():
        from torchship.store_errors import file_problem

        problem = file_problem(path) if path.exists() or path.is_symlink() else None
        if problem is not None:  # a folder or a link to nothing where the archive should be
            with naming_archive(path):
                raise problem
        if as_json:
            print("[]")
        else:
            print(f"no archive yet ({path}): jobs move there after the retention period")
        return 0
    with naming_archive(path), JobStore(path, store.busy_timeout_s) as archive:
        return _list(archive, {}, query, as_json, now, archived=True)
