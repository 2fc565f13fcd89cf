"""`torchship cancel JOB`: stop a job on its site and record it."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="stop a job")
    p.add_argument("job", help="a job id (or a unique prefix, or its key)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchship.jobs import cancel, get_job
    from torchship.state import JobStore

    with JobStore() as store:
        before = get_job(store, args.job)
        job = cancel(store, before)
    if job.state == "cancelled" and before.state != "cancelled":
        print(f"job {job.id} cancelled")
    else:
        print(f"job {job.id} had already ended: {job.state}")
    return 0
