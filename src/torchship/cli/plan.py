"""`torchship plan JOB [--sites S] [-o DIR]`: where the job would run, why, and what would be
applied there (written into DIR: what the site's kind exports, e.g. the Kubernetes objects as
YAML, else the command as `<job>.<kind>.sh`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship.cli._output import print_json, table
from torchship.errors import UsageError

if TYPE_CHECKING:
    from torchship.place.policy import Placement
    from torchship.place.sites import Site


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="place a job across the sites and explain the choice")
    p.add_argument("job", help="a job.toml, or a folder holding one")
    p.add_argument("--sites", metavar="S", help="sites file (default: see `torchship site list`)")
    p.add_argument("-o", "--output", metavar="DIR", help="write what would be applied into DIR")
    p.add_argument("--json", action="store_true", help="print the placement as JSON")
    p.add_argument("--image-digest", metavar="sha256:…",
                   help="the pushed image's digest: Kubernetes pulls it by digest")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchship.jobs import find_lock
    from torchship.lock import read_lock
    from torchship.place.policy import demand_from_job, place
    from torchship.sites import live_loads, sites_or_default
    from torchship.spec.job import load_job

    job = load_job(args.job)
    sites, source = sites_or_default(args.sites)
    loads, notes = live_loads(sites)
    placement = place(demand_from_job(job), sites, loads)
    lock_path = find_lock(Path(job.source))
    lock = read_lock(lock_path) if lock_path else None
    if args.json:
        print_json(
            {"sites": source, "placement": placement.to_dict(), "data_declared": bool(job.data)}
        )
    else:
        print(explain(placement, source))
        for note in notes:
            print(f"note: {note}")
        if not job.data:
            print("no data declared: treated as public (declare it with [[job.data]])")
    site = next((s for s in sites if s.name == placement.site), None)
    if args.output and site is not None:
        for w in write_plan(Path(args.output), job, lock, site, args.image_digest):
            print(f"wrote {w}", file=sys.stderr)
    return 0 if placement.decision != "refused" else 1


def explain(p: Placement, source: str) -> str:
    head = {
        "run": f"{p.job} → {p.site}: {p.reason}",
        "queue": f"{p.job} → queued at {p.site}: {p.reason}",
        "refused": f"{p.job}: refused: {p.reason}",
    }[p.decision]
    rows = [[r.site, r.code, r.reason] for r in p.rejected]
    lines = [f"sites from {source}", head]
    if rows:
        lines += ["", "not chosen:", table(rows, ["SITE", "WHY", "DETAIL"])]
    return "\n".join(lines)


def _inside(out: Path, name: str) -> Path:
    """out/name, refused unless it resolves inside out (the job name is validated when the job
    is read; this is the second wall)."""
    path = out / name
    if path.resolve().parent != out.resolve():
        raise UsageError(
            f"{name!r} would be written outside {out}", 'give the job a plain name (name = "train")'
        )
    return path


def write_plan(
    out: Path, job: Any, lock: Any, site: Site, image_digest: str | None = None
) -> list[str]:
    """What would be applied on `site`, written into `out`: the files its kind exports, else
    its backend's plan as `<job>.<kind>.sh`. Every name is checked before anything is written."""
    from torchship._atomic import write_text_atomic
    from torchship.backends import backend_for_site, site_kind
    from torchship.state import new_job_id

    kind = site_kind(site.kind)
    job_id = new_job_id()
    if kind.export is not None:
        files = kind.export(job, lock, site, job_id, out, image_digest)
    else:
        plan = backend_for_site(site).plan(job, lock, job_id)
        files = {f"{job.name}.{site.kind}.sh": plan.text + "\n"}
    paths = [(_inside(out, name), text) for name, text in files.items()]
    out.mkdir(parents=True, exist_ok=True)
    for path, text in paths:
        write_text_atomic(path, text)
    return [str(path) for path, _ in paths]
