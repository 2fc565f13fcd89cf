"""`torchship logs JOB [-f]`: a job's output, from its site."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("logs", help="a job's output")
    p.add_argument("job", help="a job id (or a unique prefix, or its key)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchship.jobs import follow, get_job, logs
    from torchship.state import JobStore

    with JobStore() as store:
        job = get_job(store, args.job)
        # following: the store learns the job runs as its lines come (jobs.follow)
        lines = (x for x, _ in follow(store, job)) if args.follow else logs(job)
        for line in lines:
            sys.stdout.write(line)
            sys.stdout.flush()
    return 0
