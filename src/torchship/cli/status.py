"""`torchship status [JOB]`: jobs as their sites report them (the store is reconciled first).

The listing asks each job's site on its own: a job whose site cannot be asked (a cluster that
does not answer, a handle its backend cannot read) is listed with its last recorded state,
marked `?`, and one `warning:` line on stderr; the listing still exits 0. `status JOB` fails on
that job as any command does.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from torchship.cli._output import print_json, table
from torchship.errors import TorchshipError, one_line
from torchship.jobs import get_job, reconcile
from torchship.state import STATES, TERMINAL, Job, JobStore, StoreError

NOTE_CHARS = 200  # a site's error as the listing's warning line shows it


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="jobs and their states (one job: its history)")
    p.add_argument("job", nargs="?", help="a job id (or a unique prefix, or its key)")
    p.add_argument("--state", choices=STATES, help="only jobs in this state (as the site says now)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _row(job: Job, now: float, unsure: bool = False) -> list[str]:
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


def _as_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "site": job.site,
        "state": job.state,
        "exit_code": job.exit_code,
        "handle": job.handle,
        "lock_hash": job.lock_hash,
        "placement": job.placement,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def _reconciled(store: JobStore, job: Job) -> tuple[Job, str | None]:
    """The job as its site says now, or as last recorded with why its site was not asked (a
    damaged store is no one job's trouble: it fails the command)."""
    try:
        return reconcile(store, job), None
    except StoreError:
        raise
    except (TorchshipError, OSError) as e:
        why = e.message if isinstance(e, TorchshipError) else f"{type(e).__name__}: {e}"
        note = one_line(why, NOTE_CHARS)
        print(f"warning: job {job.id} ({job.site}): its site was not asked ({note}); "
              f"shown as last recorded, {job.state}", file=sys.stderr)  # fmt: skip
        return job, note


def run(args: argparse.Namespace) -> int:
    now = time.time()
    with JobStore() as store:
        if args.job:
            job = reconcile(store, get_job(store, args.job))
            events = store.events(job.id)
            if args.json:
                rows = [{"state": e.state, "at": e.at, "detail": e.detail} for e in events]
                print_json({**_as_json(job), "events": rows})
                return 0
            header = ["ID", "NAME", "SITE", "STATE", "EXIT", "SUBMITTED", "TOOK", "HANDLE"]
            print(table([_row(job, now)], header))
            if job.placement:
                print(f"placement: {job.placement.get('reason', '-')}")
            for e in events:
                reason = (e.detail or {}).get("reason")
                detail = f"  {reason}" if reason else ""
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
                print(f"  {stamp}  {e.state}{detail}")
            return 0
        # a job stored as pending may be running by now: reconcile the unfinished, then filter
        wanted = args.state
        stored = store.jobs() if wanted and wanted not in TERMINAL else store.jobs(state=wanted)
        seen = [_reconciled(store, j) for j in stored]
        jobs = [(j, why) for j, why in seen if not wanted or j.state == wanted]
        if args.json:
            print_json([{**_as_json(j), "site_error": why} for j, why in jobs])
        elif jobs:
            header = ["ID", "NAME", "SITE", "STATE", "EXIT", "SUBMITTED", "TOOK", "HANDLE"]
            print(table([_row(j, now, why is not None) for j, why in jobs], header))
        else:
            print("no jobs yet: `torchship run examples/quickstart/job.toml`")
    return 0
