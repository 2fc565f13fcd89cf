"""`torchship run JOB`: preflight, submit to a site, follow the logs, print a summary."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from torchship.cli._output import findings_lines, print_json
from torchship.errors import UsageError

if TYPE_CHECKING:  # jobs and the store load when a job is run, not to parse its flags
    from torchship.doctor.checks import Finding
    from torchship.jobs import Submission
    from torchship.state import Job, JobStore


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a job (job.toml) on a site, after a preflight")
    p.add_argument("job", help="a job.toml, or a folder holding one")
    p.add_argument(
        "--site",
        default="local",
        help="a site's name in the sites file (local and docker need none), or auto: placed "
        "across the sites file (default: local)",
    )
    p.add_argument("--sites", metavar="S", help="sites file for --site auto")
    p.add_argument("--dry-run", action="store_true", help="print the preflight and the plan")
    p.add_argument("--force", action="store_true", help="run despite preflight errors")
    p.add_argument("--detach", "-d", action="store_true", help="start it and return")
    p.add_argument("--key", help="idempotency key: the same key never starts a second job")
    p.add_argument("--json", action="store_true", help="print the submission (and result) as JSON")
    p.add_argument(
        "--no-sync",
        action="store_true",
        help="local site: run in this Python, not the lock's synced environment",
    )
    p.add_argument("--env", metavar="NAME", help="local site: this environment of the lock")
    p.set_defaults(run=run)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _submit(args: argparse.Namespace, **kw: Any) -> Submission:
    from torchship.jobs import submit

    quiet = args.json
    return submit(
        args.job,
        args.site,
        force=args.force,
        sites=args.sites,
        sync=not args.no_sync,
        env_name=args.env,
        say=None if quiet else _progress,
        stream=None if quiet else sys.stderr,
        **kw,
    )


def findings_text(findings: list[Finding]) -> str:
    lines = findings_lines(findings, info_fixes=False)
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    lines.append(f"preflight: {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


def summary_text(job: Job, sub: Submission, elapsed_s: float) -> str:
    from torchship.jobs import workload_summary

    head = f"job {job.id} {job.state} on {job.handle} in {elapsed_s:.1f} s"
    if job.exit_code:
        head += f" (exit code {job.exit_code})"
    s = workload_summary(sub)
    if not s:
        return head
    parts = []
    if s.get("first_loss") is not None:
        parts.append(f"loss {s['first_loss']:.4f} → {s['final_loss']:.4f}")
    if s.get("tokens_per_s"):
        parts.append(f"{s['tokens_per_s']:,.0f} tokens/s")
    if s.get("mfu"):
        parts.append(f"MFU {s['mfu']:.1%}")
    parts.append(f"{s['world_size']} rank(s) on {s['device']} ({s['backend'] or 'single'})")
    if s["world_size"] > 1:
        same = "identical" if s.get("params_identical") else "DIFFERENT"
        parts.append(f"parameters {same} on all ranks")
    if s.get("resumed_from_step"):
        parts.append(f"resumed from step {s['resumed_from_step']}")
    return head + "\n  " + " · ".join(parts)


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        sub = _submit(args, dry_run=True)
        would = not any(f.severity == "error" for f in sub.findings) or args.force
        if args.json:
            print_json(_json(sub, None))
        else:
            if sub.environment:
                print(f"environment {sub.environment}")
            print(findings_text(sub.findings))
            where = f"{sub.request.site}, lock {sub.lock_path or 'none'}"
            print(f"plan ({where}):\n  {sub.request.text}")
            print("would run" if would else "would refuse: preflight errors (--force runs anyway)")
        return 0 if would else 1
    if args.key is not None and not args.key.strip():
        raise UsageError("--key is empty", "give a key that names this job, or leave --key out")
    from torchship.jobs import PreflightError
    from torchship.state import JobStore

    with JobStore() as store:
        try:
            sub = _submit(args, store=store, key=args.key)
        except PreflightError as e:
            print(findings_text(e.findings), file=sys.stderr)
            raise
        assert sub.job is not None
        if not args.json:
            if sub.environment:
                print(f"environment {sub.environment}")
            print(findings_text(sub.findings))
            print(f"job {sub.job.id} {_verb(sub)}: {sub.job.handle or '-'}", flush=True)
        if args.detach or not sub.created:
            if args.json:
                print_json(_json(sub, sub.job))
            return 0
        return _follow(store, sub, args.json)


def _verb(sub: Submission) -> str:
    assert sub.job is not None
    if sub.created:
        return "started"
    if sub.job.state == "submitted" and not sub.job.handle:
        return f"is being started by another process ({sub.job.claimed_by})"
    return "already submitted with this key"


def _follow(store: JobStore, sub: Submission, as_json: bool) -> int:
    from torchship.jobs import cancel, follow, wait

    assert sub.job is not None
    started = time.time()
    job = sub.job
    try:
        for line, seen in follow(store, job):
            job = seen
            if not as_json:
                sys.stdout.write(line)
                sys.stdout.flush()
        job = wait(store, job, poll_s=0.2)
    except KeyboardInterrupt:
        print(f"\ncancelling job {job.id} …", file=sys.stderr)
        job = cancel(store, job)
    if as_json:
        print_json(_json(sub, job))
    else:
        print(summary_text(job, sub, time.time() - started))
    return 0 if job.state == "succeeded" else 1


def _json(sub: Submission, job: Job | None) -> dict[str, Any]:
    from torchship.jobs import workload_summary

    return {
        "job": None if job is None else {"id": job.id, "state": job.state, "handle": job.handle},
        "exit_code": None if job is None else job.exit_code,
        "plan": sub.request.text,
        "lock": None if sub.lock_path is None else str(sub.lock_path),
        "environment": sub.environment,
        "findings": [f.to_json() for f in sub.findings],
        "summary": workload_summary(sub),
    }
