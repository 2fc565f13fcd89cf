"""`torchship report JOB [-o FILE]`: a self-contained HTML page about one run (plots of loss,
throughput, GPU utilisation and memory; where it ran, why, and what it cost)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torchship.errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="an HTML page about one run, with plots")
    p.add_argument("job", help="a job id (or a unique prefix, or its key)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write it (default: report.html in the job's run folder, "
                   "or ./report-<job id>.html when the run folder is elsewhere)")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("torchship report draws its plots with matplotlib, which is not "
                         "installed", "pip install 'torchship[plot]'") from None  # fmt: skip
    from torchship._atomic import write_text_atomic
    from torchship.conventions import data_dir, run_dir
    from torchship.jobs import get_job, reconcile
    from torchship.monitor.report import gather, render
    from torchship.state import JobStore

    with JobStore() as store:
        job = reconcile(store, get_job(store, args.job))
        events = store.events(job.id)
    folder = run_dir(data_dir(), job.id)
    report = gather(job, events, folder)
    if args.output:
        out = Path(args.output)
    elif report.run_dir is not None:
        out = report.run_dir / "report.html"
    else:
        out = Path(f"report-{job.id}.html")
    if out.is_dir():
        raise UsageError(f"--output {out} is a folder", "give a file name, e.g. report.html")
    if not out.parent.is_dir():
        raise UsageError(f"--output {out}: no folder {out.parent}", "create it, or pick another")
    write_text_atomic(out, render(report))
    print(out)
    for note in report.notes:
        print(f"note: {note}")
    return 0
