"""Jobs: submit a job.toml to a site, and keep the job store in step with what sites say.

submit = preflight (doctor against the lock, read for the job) → plan (pure) → record in
the store (idempotent key) → apply on the site. The store is a cache: `reconcile` asks the
site for the truth and records any change as a state transition.

A job is recorded with its site's name. Asking about it later (status, logs, cancel) needs its
kind's backend: the kind is the one whose handles have the job's handle's scheme (where the job
really is), with the site of that name, from the sites file the job was placed from (else the
default one), for its settings. A site since removed from the sites file, renamed or broken
still has its jobs asked about by their handles: every kind's backend works from the handle
alone (a Kubernetes handle names its context and cluster, a SkyPilot one its cluster, a local
or docker one this machine). A job whose handle no registered kind writes, and whose site is
gone, cannot be asked: that is said, with the handle.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from torchship.errors import SpecError, TorchshipError, UsageError, one_line
from torchship.state import (
    NEVER,
    TERMINAL,
    Job,
    JobStore,
    StoreError,
    abandoned,
    new_job_id,
    owner_id,
)

if TYPE_CHECKING:  # the listing commands (status, logs, cancel) import this module: keep it light
    from torchship.backends.base import Backend, Request, SiteStatus
    from torchship.doctor.checks import Finding
    from torchship.doctor.facts import Facts
    from torchship.env.sync import Printer
    from torchship.lock.model import Lock
    from torchship.place.sites import Site
    from torchship.spec.job import JobSpec

# A lost job (its site does not know it: no container, no object, unknown to Slurm) is asked
# about again later and later, then not at all: a site that forgot a job seldom remembers it.
# A site that cannot be reached raises instead, and is never taken for lost.
LOST_FIRST_S = 60.0  # the first check again, a minute after it was seen lost
LOST_MAX_S = 3600.0  # then every half of its time lost, at most hourly
LOST_CHECK_FOR_S = 7 * 86400.0  # and no more after a week (`status JOB` still asks)


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
    from torchship.lock.model import LOCK_FILE

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
    """`site`: a site's name in the sites file `sites` (or the default one; local and docker
    need none), or "auto" to place it. `sync`: a site that runs jobs in the lock's environment
    for this machine (its backend has `in_environment`: local) runs it in `env_name`, or the
    one picked, synced first, with `say` and `stream` getting the sync's progress."""
    from torchship.backends import backend_for_site
    from torchship.backends.preflight import blocking, preflight
    from torchship.lock.model import read_lock
    from torchship.spec.job import load_job

    spec = load_job(path)
    placement: dict[str, Any] = {"site": site, "reason": f"asked for with --site {site}"}
    placement["rejected"] = []
    if site == "auto":
        chosen, placement, peers = choose_site(spec, sites)
        site = chosen.name
        backend = backend or backend_for_site(chosen, peers)
    elif backend is None:  # a site given by its name (a test may hand in its own backend)
        from torchship.sites import site_named

        chosen, peers, placement["sites"] = site_named(site, sites)
        backend = backend_for_site(chosen, peers)
    lock_path = find_lock(Path(spec.source))
    lock: Lock | None = read_lock(lock_path) if lock_path else None
    # a site that runs jobs in the lock's environment for this machine syncs it first
    synced = getattr(backend, "in_environment", None) if sync and lock is not None else None
    if facts is None:
        from torchship.doctor.probe import probe

        # a synced run reads the Python side from its environment, not this interpreter
        facts = probe(python=synced is None)
    caps = backend.capabilities()
    environment = None
    if synced is not None and lock is not None:
        backend, facts, environment = synced(lock, lock_path, facts, env_name, dry_run, say, stream)
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
    _archive_due(store)
    return Submission(spec, request, findings, lock_path, job, True, environment)


def _archive_due(store: JobStore) -> None:
    """After a submission, move the jobs past retention to the archive, at most hourly and a
    bounded batch (torchship.store_archive); the job already started, so a store that cannot
    move them now costs nothing but the move."""
    from torchship.store_archive import move_if_due

    with contextlib.suppress(TorchshipError, sqlite3.Error, OSError):
        move_if_due(store)


def same_job(job: Job, spec: JobSpec, site: str, key: str) -> None:
    """A key names one job: a retry with another job file, or placed on another site, would
    run something else under the first job's record."""
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


def choose_site(
    spec: JobSpec, sites_file: str | Path | None
) -> tuple[Site, dict[str, Any], tuple[Site, ...]]:
    """`--site auto`: place the job across the sites; the site to run on, the placement
    record (decision, reason, every rejected site) stored with the job, and all the sites."""
    from torchship.place.policy import demand_from_job, place
    from torchship.sites import live_loads, sites_or_default

    sites, source = sites_or_default(sites_file)
    demand = demand_from_job(spec)
    loads, _ = live_loads(sites)
    p = place(demand, sites, loads)
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
    from torchship.conventions import SUMMARY_FILE, read_json

    return read_json(Path(sub.request.run_dir) / SUMMARY_FILE) if sub.request.run_dir else None


def get_job(store: JobStore, ref: str) -> Job:
    """The job of id, key or unique id prefix `ref`, in the store or else in its archive (a
    prefix must be unique across both)."""
    from torchship.store_archive import archived_job, archived_prefix_matches

    if not ref.strip():  # `cancel "$JOB"` with JOB unset must not pick the only job there is
        raise UsageError("the job is empty", "give a job id, a unique prefix of one, or its key")
    job = store.get(ref)
    exact = job is not None and ref in (job.id, job.key)
    if not exact:
        matches = sorted({*store.prefix_matches(ref), *archived_prefix_matches(store, ref)})
        if len(matches) > 1:
            raise UsageError(
                f"{ref!r} is the start of {len(matches)}{'+' if len(matches) >= 5 else ''} job "
                f"ids ({', '.join(matches[:3])}{', …' if len(matches) > 3 else ''})",
                "give more of the id",
            )
    job = job or archived_job(store, ref)
    if job is None:
        lower = ref.lower()
        hexadecimal = all(c in "0123456789abcdef" for c in lower)
        if lower != ref and hexadecimal and store.prefix_matches(lower, 1):
            hint = f"job ids are lower-case: {lower!r}"
        else:
            hint = "see `torchship status` for the jobs there are"
        raise UsageError(f"no job {one_line(ref, 80)!r}", hint)
    return job


def reconcile(store: JobStore, job: Job, backend: Backend | None = None) -> Job:
    """Ask the job's site how it is, and record any change (a job's end at the time the site
    says it ended). A job recorded but never started, whose client died, is recorded failed.
    Asked for by name, a lost job is asked about whatever its checks' schedule."""
    settled = _settled(store, job)
    if settled is not None:
        return settled
    assert job.handle is not None
    return _record(store, job, (backend or backend_for_job(job)).status(job.handle))


def _settled(store: JobStore, job: Job) -> Job | None:
    """The job when its site need not be asked (finished, never started, or abandoned by its
    client: then recorded failed); None when it must be."""
    if abandoned(job):
        why = (
            f"its submission ended before it started ({job.claimed_by or 'no claim'}); "
            "run it again with the same --key to start it"
        )
        return store.transition(job.id, "failed", detail={"reason": why})
    if job.state in TERMINAL or not job.handle or job.archived:
        return job
    return None


def _record(store: JobStore, job: Job, st: SiteStatus, now: float | None = None) -> Job:
    """What the site said, recorded when it is news; a lost job still lost is asked again
    later (LOST_FIRST_S…), and after LOST_CHECK_FOR_S not any more, with why."""
    if job.state == st.state == "lost":  # still lost, whatever the words: not news
        if job.recheck_at == NEVER:
            return job  # its checks have stopped (asked for by name, it stays as it was)
        now = time.time() if now is None else now
        lost_for = now - job.updated_at
        if lost_for >= LOST_CHECK_FOR_S:
            why = (f"torchship stopped asking: its site has not known it for "
                   f"{lost_for / 86400:.0f} days ({st.reason or 'no reason given'})")  # fmt: skip
            return store.stop_checking(job.id, why, now)
        return store.recheck_at(job.id, now + min(max(LOST_FIRST_S, lost_for / 2), LOST_MAX_S))
    if st.state == job.state and (not st.reason or st.reason == last_reason(store, job)):
        return job  # nothing new (a new reason in the same state is news: an orphaned job)
    detail = {"reason": st.reason} if st.reason else None
    at = st.ended_at if st.state in TERMINAL else None
    return store.transition(job.id, st.state, exit_code=st.exit_code, detail=detail, at=at)


def reconcile_all(
    store: JobStore, jobs: Sequence[Job], now: float | None = None
) -> list[tuple[Job, str | None]]:
    """Reconcile many jobs with one call per site (a backend's `statuses`; one job at a time
    for a backend without it): each job as its site says now, or as last recorded with why its
    site was not asked. A lost job is asked about only when its next check is due. A damaged
    store fails the whole call."""
    now = time.time() if now is None else now
    out: dict[str, tuple[Job, str | None]] = {}
    groups: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        settled = _settled(store, job)
        if settled is not None or (job.state == "lost" and (job.recheck_at or 0.0) > now):
            out[job.id] = (settled or job, None)
        else:
            groups.setdefault(_site_key(job), []).append(job)
    for members in groups.values():
        out.update(_ask_site(store, members, now))
    return [out[j.id] for j in jobs]


def _site_key(job: Job) -> tuple[Any, ...]:
    """Jobs asked about together: one kind, one recorded site, one sites file."""
    from torchship.backends import kind_of_handle

    assert job.handle is not None
    return kind_of_handle(job.handle), job.site, _placed_from(job)


def _ask_site(store: JobStore, jobs: list[Job], now: float) -> dict[str, tuple[Job, str | None]]:
    from torchship.backends.base import one_by_one

    handles = [j.handle for j in jobs if j.handle]
    try:
        backend = backend_for_job(jobs[0])
        batch = getattr(backend, "statuses", None)
        said = batch(handles) if batch is not None else one_by_one(backend, handles)
    except StoreError:
        raise
    except (TorchshipError, OSError) as e:
        return {j.id: (j, _why(e)) for j in jobs}
    out: dict[str, tuple[Job, str | None]] = {}
    for job in jobs:
        st = said.get(job.handle or "")
        if st is None or isinstance(st, TorchshipError):
            out[job.id] = (job, _why(st) if st is not None else "its site did not answer for it")
        else:
            out[job.id] = (_record(store, job, st, now), None)
    return out


def _why(e: BaseException) -> str:
    return e.message if isinstance(e, TorchshipError) else f"{type(e).__name__}: {e}"


def backend_for_job(job: Job) -> Backend:
    """The backend to ask about a started job (see the module's docstring): its handle's
    kind, with the site of its name when that site is still of that kind."""
    from torchship.backends import create_backend, kind_of_handle

    assert job.handle is not None
    kind = kind_of_handle(job.handle)
    site = _recorded_site(job, required=kind is None)
    if kind is None:
        if site is None:
            raise UsageError(
                f"job {job.id}'s site {job.site!r} is in no sites file, and no kind of site "
                f"writes handles like {job.handle!r}: torchship cannot ask about it",
                "add the site back to the sites file, or see `torchship status --json`",
            )
        kind = site.kind
    if site is not None and site.kind != kind:  # the name now means another site
        site = None
    return create_backend(kind, site)


def _recorded_site(job: Job, required: bool) -> Site | None:
    """The site the job was recorded with, from the sites file it was placed from (else the
    default file, else the implicit site of a kind of that name); None when there is none, or
    the sites file does not read and the handle suffices (`required` False)."""
    from torchship.sites import site_named

    if not job.site:
        return None
    recorded = _placed_from(job)
    path = recorded if isinstance(recorded, str) and Path(recorded).is_file() else None
    try:
        return site_named(job.site, path)[0]
    except SpecError:  # the sites file does not read
        if required:
            raise
        return None
    except UsageError:  # no site of that name (any more)
        return None


def _placed_from(job: Job) -> object:
    """The sites file the job was placed from, as its placement record says (a record that is
    not an object, from a damaged or hand-edited store, says nothing)."""
    return job.placement.get("sites") if isinstance(job.placement, dict) else None


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
    be = backend or (backend_for_job(job) if job.handle else None)
    seen = 0.0
    for line in logs(job, True, be):
        if job.state in ("submitted", "pending") and time.monotonic() - seen >= every_s:
            job, seen = reconcile(store, job, be), time.monotonic()
        yield line, job


def logs(job: Job, follow: bool = False, backend: Backend | None = None) -> Iterator[str]:
    if not job.handle:
        raise UsageError(f"job {job.id} never started on a site", "see `torchship status`")
    return (backend or backend_for_job(job)).logs(job.handle, follow)


def cancel(store: JobStore, job: Job, backend: Backend | None = None) -> Job:
    job = reconcile(store, job, backend)
    if job.state in TERMINAL:
        return job
    if not job.handle:
        return store.transition(job.id, "cancelled", detail={"reason": "cancelled before start"})
    be = backend or backend_for_job(job)
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
