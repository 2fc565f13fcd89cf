"""Replay a job trace through the placement code with a discrete-event model of site queues.

    simulate(trace, sites, policy) -> PolicyResult

Each arrival is placed by the real `Placer` with each site's load at that moment (free GPUs, and
the wait a FIFO shadow schedule of the running and queued jobs predicts); the job joins that
site's queue, and a site starts queued jobs best-effort FIFO (the oldest that fits the free GPUs,
as Kueue's BestEffortFIFO does), holding the GPUs for the start-up time plus the run time.

The model's simplifications, on purpose: GPUs of a site are interchangeable (nodes and
fragmentation are not modelled); run times are known at placement (the trace's); a decision is
not revisited once made (a job queued on-prem does not move to a cloud later); cloud capacity is
the site's declared GPU count (its quota).

Policies change only the sites placement sees:
- hybrid: the sites as they are: filters, tiers and wait budgets, then cost.
- local-only: the private sites only; jobs wait for them however long.
- cloud-only: the public sites only, taking every data class: what sending everything to the
  cloud costs, and the data-class violations that would make.
- cheapest: every site, one tier, no waiting (start now where free, else queue), every data
  class: a cost-only optimiser that prices on-prem like any other site, unaware of data classes.
Violations are counted against the sites as declared, whatever the policy saw.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torchship.errors import UsageError
from torchship.place.policy import Demand, Placer, SiteLoad, cost
from torchship.place.sites import Site
from torchship.place.trace import TraceJob
from torchship.spec.job import DATA_CLASSES

POLICIES = ("hybrid", "local-only", "cloud-only", "cheapest")


def policy_sites(policy: str, sites: Sequence[Site]) -> tuple[Site, ...]:
    every = frozenset(DATA_CLASSES)
    if policy == "hybrid":
        return tuple(sites)
    if policy == "local-only":
        return tuple(s for s in sites if s.trust == "private")
    if policy == "cloud-only":
        return tuple(replace(s, data_classes=every) for s in sites if s.trust == "public")
    if policy == "cheapest":
        return tuple(
            replace(s, tier=0, wait_budget_minutes=s.startup_minutes, data_classes=every)
            for s in sites
        )
    raise UsageError(f"unknown policy {policy!r}", f"one of: {', '.join(POLICIES)}")


@dataclass(frozen=True, slots=True)
class JobOutcome:
    name: str
    decision: str  # run | queue | refused
    site: str | None
    submit_s: float
    start_s: float | None = None  # when it runs (after start-up); None when refused
    end_s: float | None = None
    cost_usd: float = 0.0
    violation: str | None = None

    @property
    def wait_s(self) -> float | None:
        return None if self.start_s is None else self.start_s - self.submit_s


@dataclass(frozen=True, slots=True)
class PolicyResult:
    policy: str
    jobs: int
    ran: int
    refused: int
    cost_usd: float
    makespan_h: float
    wait_p50_min: float
    wait_p95_min: float
    violations: int
    on_public: int
    by_site: tuple[tuple[str, int], ...]
    outcomes: tuple[JobOutcome, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "jobs": self.jobs,
            "ran": self.ran,
            "refused": self.refused,
            "cost_usd": round(self.cost_usd, 2),
            "makespan_h": round(self.makespan_h, 2),
            "wait_p50_min": round(self.wait_p50_min, 1),
            "wait_p95_min": round(self.wait_p95_min, 1),
            "violations": self.violations,
            "on_public_sites": self.on_public,
            "jobs_by_site": dict(self.by_site),
        }


@dataclass(slots=True)
class _Queued:
    job: TraceJob
    demand: Demand
    decision: str


@dataclass(slots=True)
class _SiteState:
    site: Site
    capacity: int
    used: int = 0
    running: list[tuple[float, int]] = field(default_factory=list)  # heap of (end_s, gpus)
    queue: list[_Queued] = field(default_factory=list)

    def wait_for(self, now: float, gpus: int) -> float:
        """Seconds until `gpus` GPUs are free for a new job at the back of a strict FIFO queue
        (conservative: the real queue lets smaller jobs start early)."""
        free = self.capacity - self.used
        if free >= gpus:
            return 0.0  # best-effort FIFO starts it now, whatever waits ahead
        releases = list(self.running)  # already a heap
        t = now
        for g, dur in [(q.job.gpus, self._hold_s(q.job)) for q in self.queue] + [(gpus, 0.0)]:
            while free < g and releases:
                end, back = heapq.heappop(releases)
                t = max(t, end)
                free += back
            if free < g:
                return math.inf
            free -= g
            heapq.heappush(releases, (t + dur, g))
        return t - now

    def _hold_s(self, job: TraceJob) -> float:
        return self.site.startup_minutes * 60 + job.duration_s


def _demand(job: TraceJob) -> Demand:
    models = frozenset({job.gpu_model}) if job.gpu_model else frozenset()
    return Demand(
        name=job.name,
        gpus_per_node=job.gpus_per_node,
        nodes=job.nodes,
        gpu_models=models,
        data_class=job.data_class,
        hours=job.duration_s / 3600,
        data_gb=job.data_gb,
        data_site=job.data_site,
    )


def simulate(trace: Sequence[TraceJob], sites: Sequence[Site], policy: str) -> PolicyResult:
    """Replay `trace` under `policy`; every job is either run (after its wait) or refused."""
    seen = policy_sites(policy, sites)
    declared = {s.name: s for s in sites}
    placer = Placer(seen)
    states = {s.name: _SiteState(s, s.total_gpus) for s in seen}
    outcomes: dict[str, JobOutcome] = {}
    events: list[tuple[float, int, int, str, TraceJob | None]] = []  # (t, kind, seq, site, job)
    seq = 0
    for tj in trace:
        events.append((tj.submit_s, 1, seq, "", tj))
        seq += 1
    heapq.heapify(events)
    while events:
        now, kind, _, name, job = heapq.heappop(events)
        if kind == 0:  # a job ended at `name`: free its GPUs, start what now fits
            st = states[name]
            st.used -= heapq.heappop(st.running)[1]  # the earliest end there: this one
            started = _start_ready(st, now, declared, outcomes)
        else:
            assert job is not None
            d = _demand(job)
            loads = {
                n: SiteLoad(st.capacity - st.used, _minutes(st.wait_for(now, job.gpus)))
                for n, st in states.items()
            }
            p = placer.place(d, loads)
            if p.site is None:
                outcomes[job.name] = JobOutcome(job.name, "refused", None, job.submit_s)
                continue
            st = states[p.site]
            st.queue.append(_Queued(job, d, p.decision))
            started = _start_ready(st, now, declared, outcomes)
        for end, site_name in started:
            heapq.heappush(events, (end, 0, seq, site_name, None))
            seq += 1
    return _summarise(policy, trace, declared, outcomes)


def _minutes(seconds: float) -> float:
    return seconds / 60 if math.isfinite(seconds) else 1e12


def _start_ready(
    st: _SiteState, now: float, declared: dict[str, Site], outcomes: dict[str, JobOutcome]
) -> list[tuple[float, str]]:
    """Best-effort FIFO: start, oldest first, every queued job that fits the free GPUs."""
    started = []
    keep = []
    for q in st.queue:
        if q.job.gpus > st.capacity - st.used:
            keep.append(q)
            continue
        start = now + st.site.startup_minutes * 60
        end = start + q.job.duration_s
        st.used += q.job.gpus
        heapq.heappush(st.running, (end, q.job.gpus))
        site = declared[st.site.name]
        outcomes[q.job.name] = JobOutcome(
            q.job.name, q.decision, site.name, q.job.submit_s, start, end,
            cost(q.demand, site), _violation(q.job, site),
        )  # fmt: skip
        started.append((end, st.site.name))
    st.queue = keep
    return started


def _violation(job: TraceJob, site: Site) -> str | None:
    if job.data_class not in site.data_classes:
        return f"{job.data_class} data on {site.name} ({site.trust})"
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[k]


def _summarise(
    policy: str,
    trace: Sequence[TraceJob],
    declared: dict[str, Site],
    outcomes: dict[str, JobOutcome],
) -> PolicyResult:
    done = [o for o in outcomes.values() if o.start_s is not None]
    waits = [(o.wait_s or 0.0) / 60 for o in done]
    ends = [o.end_s for o in done if o.end_s is not None]
    first = min((j.submit_s for j in trace), default=0.0)
    by_site: dict[str, int] = {}
    for o in done:
        by_site[o.site or ""] = by_site.get(o.site or "", 0) + 1
    return PolicyResult(
        policy=policy,
        jobs=len(trace),
        ran=len(done),
        refused=sum(1 for o in outcomes.values() if o.decision == "refused"),
        cost_usd=sum(o.cost_usd for o in done),
        makespan_h=(max(ends) - first) / 3600 if ends else 0.0,
        wait_p50_min=percentile(waits, 50),
        wait_p95_min=percentile(waits, 95),
        violations=sum(1 for o in done if o.violation),
        on_public=sum(1 for o in done if declared[o.site or ""].trust == "public"),
        by_site=tuple(sorted(by_site.items())),
        outcomes=tuple(sorted(outcomes.values(), key=lambda o: (o.submit_s, o.name))),
    )
