"""Jobs: submit a job.toml to a site, and keep the job store in step with what sites say.

submit = preflight (doctor against the lock, read for the job) → plan (pure) → record in
the store (idempotent key) → apply on the site. The store is a cache: `reconcile` asks the
site for the truth and records any change as a state transition.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from torchship.backends import Backend, Request, backend_for_site, create_backend
from torchship.backends.preflight import blocking, preflight
from torchship.doctor.checks import Finding
from torchship.doctor.facts import Facts
from torchship.env.sync import AGENT_VAR, DROPPED, Printer
from torchship.errors import TorchshipError, UsageError
from torchship.lock import check_lock_file
from torchship.lock.model import LOCK_FILE, Lock, read_lock
from torchship.place.sites import Site
from torchship.spec.job import JobSpec, load_job
from torchship.state import TERMINAL, Job, JobStore, abandoned, new_job_id, owner_id

if TYPE_CHECKING:  # the local site's module starts its supervisor's imports: load it lazily
    from torchship.backends.local import LocalBackend


class PreflightError(TorchshipError):
    """The preflight found errors; `findings` holds all of them."""

    def __init__(self, message: str, hint: str, findings: list[Finding]) -> None:
        super().__init__(message, hint)
        self.findings = findings


@dataclass(frozen=True, slots=True)
class Submission:
    spec: JobSpec
    request: Request
    findings: list[Finding]
    lock_path: Path | None
    job: Job | None = None  # None for a dry run
    created: bool = False  # this call started it: a new job, or a retry of one never started
    environment: str | None = None  # "cpu (…/envs/cpu-1a2b…): why", for a synced local run


def find_lock(job_file: Path) -> Path | None:
    """The nearest torchship.lock in the job file's folder or above it."""
    for folder in [job_file.resolve().parent, *job_file.resolve().parents]:
        if (folder / LOCK_FILE).is_file():
            return folder / LOCK_FILE
    return None


def submit(
    path: str | Path,
    site: str = "local",
    *,
    store: JobStore | None = None,
    force: bool = False,
    dry_run: bool = False,
    key: str | None = None,
    facts: Facts | None = None,
    backend: Backend | None = None,
    sites: str | Path | None = None,
    sync: bool = True,
    env_name: str | None = None,
    say: Printer | None = None,
    stream: TextIO | None = None,
) -> Submission:
    """`sync`: a local run happens in the lock's environment for this machine (`env_name`, or
    picked), synced first, with `say` and `stream` getting the sync's progress."""
    spec = load_job(path)
    placement: dict[str, Any] = {"site": site, "reason": f"asked for with --site {site}"}
    placement["rejected"] = []
    if site == "auto":
        chosen, placement, peers = choose_site(spec, sites)
        site = chosen.kind
        backend = backend or backend_for_site(chosen, peers)
    lock_path = find_lock(Path(spec.source))
    lock: Lock | None = read_lock(lock_path) if lock_path else None
    backend = backend or create_backend(site)
    if facts is None:
        from torchship.doctor.probe import probe

        # a synced local run reads the Python side from its environment, not this interpreter
        synced_here = sync and lock is not None and backend.capabilities().kind == "local"
        facts = probe(python=not synced_here)
    caps = backend.capabilities()
    environment = None
    from torchship.backends.local import LocalBackend

    if sync and isinstance(backend, LocalBackend) and lock is not None:
        backend, facts, environment = in_environment(
            backend, lock, lock_path, facts, env_name, dry_run, say, stream
        )
    # A remote site's nodes are not this machine: its preflight would judge the wrong host.
    findings = [] if caps.remote else preflight(spec, lock, facts, containers=caps.containers)
    site_findings = getattr(backend, "site_findings", None)  # checks only that site can make
    if site_findings is not None:
        findings += site_findings(spec, lock)
    job_id = new_job_id()
    request = backend.plan(spec, lock, job_id)
    if dry_run:
        return Submission(spec, request, findings, lock_path, environment=environment)
    errors = blocking(findings)
    if errors and not force:
        raise PreflightError(
            f"preflight: {len(errors)} error(s) on this machine for {spec.name} "
            f"({', '.join(sorted({f.code for f in errors}))})",
            "fix them as shown, or pass --force to run anyway",
            findings,
        )
    if store is None:
        raise UsageError("submit needs a job store", "pass store=JobStore()")
    if errors:
        placement["forced_past"] = sorted({f.code for f in errors})
    owner = owner_id()
    job, created = store.submit(
        key or job_id,
        spec.name,
        asdict(spec),
        lock.content_hash if lock else None,
        site,
        placement,
        job_id=job_id,
        owner=owner,
    )
    if not created:  # the same key again: the job it started, untouched, unless it never started
        same_job(job, spec, site, key or job_id)
        retry = store.claim(job.id, owner)
        if retry is None:  # started, or being started by another process right now
            return Submission(spec, request, findings, lock_path, job, False, environment)
        job, request = retry, backend.plan(spec, lock, retry.id)
    job = apply(store, job, backend, request)
    return Submission(spec, request, findings, lock_path, job, True, environment)


def same_job(job: Job, spec: JobSpec, site: str, key: str) -> None:
    """A key names one job: a retry with another job file, or placed on another kind of
    site, would run something else under the first job's record."""
    now = json.loads(json.dumps({**asdict(spec), "source": None}))
    if {**job.spec, "source": None} != now or job.site != site:
        what = "the job file changed" if job.site == site else f"now placed on {site}"
        raise UsageError(
            f"key {key!r} belongs to job {job.id} ({job.name} on {job.site}); {what}",
            "use a new --key for a different job, or run the same file again",
        )


def apply(store: JobStore, job: Job, backend: Backend, request: Request) -> Job:
    """Start a claimed job on its site and record it `pending` with its handle; a failed start
    is recorded `failed` with its reason (a retry with the same key starts it again)."""
    try:
        handle = backend.apply(request)
    except BaseException as e:
        why = e.message if isinstance(e, TorchshipError) else f"{type(e).__name__}: {e}"
        with contextlib.suppress(TorchshipError, sqlite3.Error):  # the first error is the news
            store.transition(job.id, "failed", detail={"reason": f"apply failed: {why}"})
        raise
    try:
        return store.transition(job.id, "pending", handle=handle, detail={"request": request.text})
    except UsageError:
        now = store.get(job.id)
        if now is None or now.state != "cancelled":
            raise
        backend.cancel(handle)  # cancelled while it was being started: it does not run
        return now


def in_environment(
    backend: LocalBackend,
    lock: Lock,
    lock_path: Path | None,
    facts: Facts,
    env_name: str | None,
    dry_run: bool,
    say: Printer | None,
    stream: TextIO | None,
) -> tuple[LocalBackend, Facts, str]:
    """The local site running inside the lock's environment for this machine, synced (for a
    dry run only looked up), and the facts of that environment for the preflight."""
    import sys

    from torchship.compat.matrix import load_matrix
    from torchship.env import agent_path, env_facts, envs_dir, pick_environment, run_env, sync
    from torchship.env.sync import SyncedEnv, env_path

    if lock_path is not None:
        check_lock_file(lock, lock_path)
    pick = pick_environment(lock, facts, load_matrix(), env_name)
    synced = None if dry_run else sync(pick.env, None, (), say, stream, lock.name)
    if synced is None:  # a dry run builds nothing: where it would be
        synced = SyncedEnv(pick.env.name, pick.env.key, env_path(pick.env, envs_dir()), False)
    if synced.python.exists():
        facts = env_facts(facts, synced)
    else:  # a dry run before the first sync: what the sync would install
        facts = replace(
            facts,
            python=None,  # whichever interpreter of that version the sync finds
            packages={p.name: p.version for p in pick.env.packages},
            torch=pick.env.torch,
            torch_cuda=pick.env.cuda,
            sources={**facts.sources, "packages": f"lock environment {pick.env.name} (not synced)"},
        )
    o = backend.options
    environ = run_env(synced, agent_path(), os.environ)
    extra = {k: environ[k] for k in ("VIRTUAL_ENV", "PATH", AGENT_VAR)}
    options = replace(
        o,
        python=str(synced.python),
        env=extra,
        supervisor=o.supervisor or sys.executable,
        environment=pick.env.name,
        unset=DROPPED,
    )
    note = f"{pick.env.name} ({synced.path}): {pick.reason}"
    return type(backend)(options), facts, note


def choose_site(
    spec: JobSpec, sites_file: str | Path | None
) -> tuple[Site, dict[str, Any], tuple[Site, ...]]:
    """`--site auto`: place the job across the sites; the site to run on, the placement
    record (decision, reason, every rejected site) stored with the job, and all the sites."""
    from torchship.place.policy import demand_from_job, place
    from torchship.place.sites import sites_or_default

    sites, source = sites_or_default(sites_file)
    demand = demand_from_job(spec)
    p = place(demand, sites)
    if p.decision == "refused":
        raise UsageError(
            f"{spec.source}: no site may run {spec.name}: {p.reason}",
            f"see why: `torchship plan {spec.source}`",
        )
    chosen = next(x for x in sites if x.name == p.site)
    # the rate the job is billed at there: the exporter's cost accrued
    rate = demand.gpus * chosen.price_per_gpu_hour
    return chosen, {**p.to_dict(), "sites": source, "usd_per_hour": round(rate, 4)}, sites


def workload_summary(sub: Submission) -> dict[str, Any] | None:
    """The reference workload's summary.json from the run folder, when the run wrote one."""
    from torchship.backends.local import read_json

    return read_json(Path(sub.request.run_dir) / "summary.json") if sub.request.run_dir else None


def get_job(store: JobStore, ref: str) -> Job:
    job = store.get(ref)
    if job is None:
        matches = store.prefix_matches(ref)
        if len(matches) > 1:
            raise UsageError(
                f"{ref!r} is the start of {len(matches)}{'+' if len(matches) == 5 else ''} job "
                f"ids ({', '.join(matches[:3])}{', …' if len(matches) > 3 else ''})",
                "give more of the id",
            )
        raise UsageError(f"no job {ref!r}", "see `torchship status` for the jobs there are")
    return job


def reconcile(store: JobStore, job: Job, backend: Backend | None = None) -> Job:
    """Ask the job's site how it is, and record any change (a job's end at the time the site
    says it ended). A job recorded but never started, whose client died, is recorded failed."""
    if abandoned(job):
        why = (
            f"its submission ended before it started ({job.claimed_by or 'no claim'}); "
            "run it again with the same --key to start it"
        )
        return store.transition(job.id, "failed", detail={"reason": why})
    if job.state in TERMINAL or not job.handle or not job.site:
        return job
    st = (backend or create_backend(job.site)).status(job.handle)
    if st.state == job.state and (not st.reason or st.reason == last_reason(store, job)):
        return job  # nothing new (a new reason in the same state is news: an orphaned job)
    detail = {"reason": st.reason} if st.reason else None
    at = st.ended_at if st.state in TERMINAL else None
    return store.transition(job.id, st.state, exit_code=st.exit_code, detail=detail, at=at)


def last_reason(store: JobStore, job: Job) -> str | None:
    events = store.events(job.id)
    reason = (events[-1].detail or {}).get("reason") if events else None
    return reason if isinstance(reason, str) else None


def wait(store: JobStore, job: Job, poll_s: float = 0.5, backend: Backend | None = None) -> Job:
    while job.state not in TERMINAL and job.state != "lost":
        time.sleep(poll_s)
        job = reconcile(store, job, backend)
    return job


def follow(
    store: JobStore, job: Job, backend: Backend | None = None, every_s: float = 0.5
) -> Iterator[tuple[str, Job]]:
    """The job's log lines as they come, each with the job as last recorded: until the job is
    seen running, the store is reconciled on its first line and then at most every `every_s`
    (a followed job is recorded `running`, not only `pending` then its end)."""
    be = backend or (create_backend(job.site) if job.site else None)
    seen = 0.0
    for line in logs(job, True, be):
        if job.state in ("submitted", "pending") and time.monotonic() - seen >= every_s:
            job, seen = reconcile(store, job, be), time.monotonic()
        yield line, job


def logs(job: Job, follow: bool = False, backend: Backend | None = None) -> Iterator[str]:
    if not job.handle or not job.site:
        raise UsageError(f"job {job.id} never started on a site", "see `torchship status`")
    return (backend or create_backend(job.site)).logs(job.handle, follow)


def cancel(store: JobStore, job: Job, backend: Backend | None = None) -> Job:
    job = reconcile(store, job, backend)
    if job.state in TERMINAL:
        return job
    if not job.handle or not job.site:
        return store.transition(job.id, "cancelled", detail={"reason": "cancelled before start"})
    be = backend or create_backend(job.site)
    be.cancel(job.handle)
    deadline = time.time() + 60
    while time.time() < deadline:
        job = reconcile(store, job, be)
        if job.state in TERMINAL:
            return job
        time.sleep(0.2)
    raise TorchshipError(
        f"job {job.id} did not stop within 60 s", f"see `torchship status {job.id}`"
    )
