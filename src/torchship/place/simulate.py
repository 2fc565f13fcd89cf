"""Replay a job trace through the placement code with a discrete-event model of site queues.

    simulate(trace, sites, policy) -> PolicyResult

Each arrival is placed as the real `Placer` places it, with each site's load at that moment
(free GPUs, and the wait a strict-FIFO shadow schedule of the running and queued jobs predicts);
the job joins that site's queue, and a site starts queued jobs best-effort FIFO (the oldest that
fits the free GPUs, as Kueue's BestEffortFIFO does), holding the GPUs for the start-up time plus
the run time.

Events cost O(log n), not a replay of the queues: running jobs are a heap of ends; queued jobs
are kept per size in FIFO order (the oldest that fits is the oldest head among the sizes that
fit); the wait at a site with no queue reads the few earliest ends off the heap without popping
it; the shadow schedule is kept, extended by each job that joins the queue, and stays right
while jobs start in queue order. A job that starts past an older one (backfill) changes every
later start in it, so it is rebuilt when next read, at the queue's length: a site overloaded
for long, its queue growing without end, still costs that per backfill. Outcomes are those of
replaying every queue per arrival, as the simulator did before (tests/unit/
test_simulate_identity.py holds the two to each other and to the figures recorded then).

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
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torchship.errors import UsageError
from torchship.place.policy import Demand, Placer, SiteLoad, cost, fit_filter, wait_minutes
from torchship.place.sites import Site
from torchship.place.trace import TraceJob, generate
from torchship.spec.job import DATA_CLASSES

POLICIES = ("hybrid", "local-only", "cloud-only", "cheapest")
PERIODS = {"week": 7.0, "month": 30.0}  # days


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


def clusters(sites: Sequence[Site]) -> tuple[Site, ...]:
    """The private sites that span nodes: the on-prem clusters (a workstation runs one node)."""
    return tuple(s for s in sites if s.trust == "private" and s.max_nodes > 1)


def scale_sites(sites: Sequence[Site], gpus: int) -> tuple[Site, ...]:
    """The sites grown so that the on-prem clusters hold `gpus` GPUs: every site that spans
    nodes (clouds included: their quota) scaled by the one factor that does it, each pool's
    count rounded; one-node sites kept as they are. The hybrid example for 10,000 GPUs: onprem
    32 → 10,000 A100s, aws-p5 64 → 20,000 H100s, gcp-a2 32 → 10,000; the workstation keeps 4."""
    have = sum(s.total_gpus for s in clusters(sites))
    if not have:
        raise UsageError("no on-prem cluster to scale (a private site with max_nodes > 1)",
                         "add one to the sites file, or leave out --gpus")  # fmt: skip
    factor = gpus / have

    def grown(s: Site) -> Site:
        pools = tuple(replace(g, count=max(g.per_node, round(g.count * factor))) for g in s.gpus)
        return replace(s, gpus=pools)

    return tuple(grown(s) if s.max_nodes > 1 else s for s in sites)


def period_days(text: str) -> float:
    """`week`, `month` or a number of days."""
    days = PERIODS.get(text.strip().lower())
    if days is None:
        try:
            days = float(text)
        except ValueError:
            days = math.nan
    if not math.isfinite(days) or days <= 0:
        raise UsageError(f"--generate {text!r}: not a period", "week, month or a number of days")
    return days


def generated(
    sites: Sequence[Site], days: float, gpus: int | None, seed: int
) -> tuple[tuple[TraceJob, ...], tuple[Site, ...]]:
    """A trace of `days` days drawn at the study's job rate for `gpus` GPUs (trace.generate),
    and the sites grown to match (scale_sites); `gpus` None: the on-prem clusters as they are.
    The jobs' data lives on the first on-prem cluster."""
    if gpus is not None and gpus < 1:
        raise UsageError(f"--gpus {gpus}: not a GPU count", "--gpus 10000, say")
    scaled = tuple(sites) if gpus is None else scale_sites(sites, gpus)
    home = clusters(scaled)
    if not home:
        raise UsageError(
            "no on-prem cluster to generate jobs for (a private site with max_nodes > 1)",
            "use a sites file with one, or give a trace CSV",
        )
    total = sum(s.total_gpus for s in home)
    return generate(days, total, seed, data_site=home[0].name), scaled


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


@dataclass(slots=True, eq=False)
class _Queued:
    seq: int  # arrival order at its site: FIFO order
    job: TraceJob
    demand: Demand
    decision: str
    hold_s: float  # start-up + run time: how long it holds its GPUs once started
    started: bool = False


@dataclass(slots=True)
class _Shadow:
    """The strict-FIFO shadow schedule of a site's queue as it stands after its last job: when
    that job starts, the GPUs free then, and the releases still to come (a heap of (end_s,
    gpus)). A new job at the back starts once enough of those releases are in."""

    start_s: float
    free: int
    releases: list[tuple[float, int]]

    def extend(self, gpus: int, hold_s: float) -> None:
        """Put a job at the back: it starts once `gpus` are free, no earlier than the last."""
        if math.isinf(self.start_s):
            return
        releases = self.releases
        t, free = self.start_s, self.free
        while free < gpus and releases:
            end, back = heapq.heappop(releases)
            t = max(t, end)
            free += back
        if free < gpus:  # larger than the site: nothing after it starts either
            self.start_s = math.inf
            return
        self.start_s, self.free = t, free - gpus
        heapq.heappush(releases, (t + hold_s, gpus))

    def start_of(self, gpus: int) -> float:
        if math.isinf(self.start_s):
            return math.inf
        return _first_fit(self.releases, self.start_s, self.free, gpus)


def _first_fit(releases: list[tuple[float, int]], t: float, free: int, gpus: int) -> float:
    """When `gpus` are free, no earlier than `t`: releases taken in order of end (then size)
    until enough are in, as popping the heap would take them, without popping it. A heap's
    smallest entries are found best-first from its root; a job needs at most `gpus - free` of
    them (each frees a GPU or more), so this costs O(gpus · log gpus) whatever the heap holds."""
    if free >= gpus:
        return t
    n = len(releases)
    frontier: list[tuple[float, int, int]] = [(*releases[0], 0)] if n else []
    while frontier:
        end, back, i = heapq.heappop(frontier)
        free += back
        if free >= gpus:
            return max(t, end)
        for child in (2 * i + 1, 2 * i + 2):
            if child < n:
                heapq.heappush(frontier, (*releases[child], child))
    return math.inf


@dataclass(slots=True)
class _SiteState:
    """A site's GPUs, its running jobs (a heap of (end_s, gpus)) and its queue: FIFO order in
    `fifo` (started entries are dropped lazily), and per job size the waiting jobs in FIFO
    order, so that the oldest job that fits is the oldest head of the sizes that fit."""

    site: Site
    capacity: int
    used: int = 0
    running: list[tuple[float, int]] = field(default_factory=list)
    fifo: deque[_Queued] = field(default_factory=deque)
    by_size: dict[int, deque[_Queued]] = field(default_factory=dict)
    waiting: int = 0
    shadow: _Shadow | None = None  # None: out of date, rebuilt when next read

    def wait_for(self, now: float, gpus: int) -> float:
        """Seconds until `gpus` GPUs are free for a new job at the back of a strict FIFO queue
        (conservative: the real queue lets smaller jobs start early)."""
        free = self.capacity - self.used
        if free >= gpus:
            return 0.0  # best-effort FIFO starts it now, whatever waits ahead
        if not self.waiting:
            return _first_fit(self.running, now, free, gpus) - now
        if self.shadow is None:  # independent of `now`: the head waits for a release
            self.shadow = _Shadow(now, free, list(self.running))  # a heap's copy is a heap
            for q in self.fifo:
                if not q.started:
                    self.shadow.extend(q.job.gpus, q.hold_s)
        return self.shadow.start_of(gpus) - now

    def enqueue(self, q: _Queued) -> None:
        if self.shadow is not None:
            self.shadow.extend(q.job.gpus, q.hold_s)
        self.fifo.append(q)
        self.by_size.setdefault(q.job.gpus, deque()).append(q)
        self.waiting += 1

    def next_fitting(self) -> _Queued | None:
        """The oldest queued job that fits the free GPUs."""
        free = self.capacity - self.used
        best: _Queued | None = None
        for gpus, same in self.by_size.items():
            if gpus <= free and (best is None or same[0].seq < best.seq):
                best = same[0]
        return best

    def dequeue(self, q: _Queued, now: float, end: float) -> None:
        """Take `q` out of the queue to start it `now`, to end at `end`. The shadow schedule
        stays right when `q` is the head and ends when the shadow has it end (see
        docs/placement.md); a job starting past an older one (backfill) makes it out of date."""
        fifo = self.fifo
        while fifo[0].started:
            fifo.popleft()
        if fifo[0] is not q or end != now + q.hold_s:
            self.shadow = None
        q.started = True
        same = self.by_size[q.job.gpus]
        same.popleft()
        if not same:
            del self.by_size[q.job.gpus]
        self.waiting -= 1
        if not self.waiting:
            self.shadow = None
            fifo.clear()
        elif len(fifo) > 2 * self.waiting + 64:  # drop the started entries left mid-queue
            self.fifo = deque(x for x in fifo if not x.started)

    def launch(self, gpus: int, end: float) -> None:
        self.used += gpus
        heapq.heappush(self.running, (end, gpus))


class _Decider:
    """Placement's decision for each arrival as `Placer.place` makes it (policy.py), without
    the why-here record, which costs more than the decision and is never read here: the fit
    filters once per job shape (policy.fit_filter), then, tier by tier, the sites that start
    the job within their wait budget, the cheapest (then the shorter wait, then the name);
    when none can, queued where it starts soonest. A site's wait is worked out only when
    placement would read it (the job does not fit its free GPUs). Trace jobs have no budget,
    so no budget filter. tests/unit/test_simulate_identity.py holds it to `Placer.place`."""

    def __init__(self, sites: Sequence[Site], states: dict[str, _SiteState]) -> None:
        self.placer = Placer(sites)
        self.states = states
        self._tiers: dict[tuple[Any, ...], tuple[tuple[Site, ...], ...]] = {}

    def tiers(self, d: Demand) -> tuple[tuple[Site, ...], ...]:
        """The sites that may run a job of this shape, by tier, lowest first."""
        key = (d.data_class, d.gpu_models, d.gpus_per_node, d.nodes, d.data_reach)
        hit = self._tiers.get(key)
        if hit is None:
            fit = [s for s in self.placer.sites if fit_filter(d, s) is None]
            levels = sorted({s.tier for s in fit})  # sites-file order within a tier
            hit = self._tiers[key] = tuple(tuple(s for s in fit if s.tier == t) for t in levels)
        return hit

    def decide(self, d: Demand, job: TraceJob) -> tuple[str, str | None]:
        """(run | queue | refused, the site)."""
        now = job.submit_s
        tiers = self.tiers(d)
        gpus, minutes, gpu_hours = d.gpus, d.hours * 60, d.gpus * d.hours
        for tier in tiers:
            best: tuple[float, float, str] | None = None
            for s in tier:
                w = s.startup_minutes
                st = self.states[s.name]
                if st.capacity - st.used < gpus:
                    wait = _minutes(st.wait_for(now, job.gpus))
                    if wait > 0:
                        w += wait
                if w <= max(s.wait_budget_minutes, s.wait_share * minutes):
                    c = gpu_hours * s.price_per_gpu_hour
                    if d.data_site is not None and d.data_site != s.name:
                        c += d.data_gb * s.egress_per_gb
                    if best is None or (c, w, s.name) < best:
                        best = (c, w, s.name)
            if best is not None:
                return "run", best[2]
        if not tiers:
            return "refused", None
        *_, name = min((wait_minutes(d, s, self.load(s, now, job.gpus)), s.tier, s.name)
                       for t in tiers for s in t)  # fmt: skip
        return "queue", name

    def load(self, s: Site, now: float, gpus: int) -> SiteLoad:
        st = self.states[s.name]
        return SiteLoad(st.capacity - st.used, _minutes(st.wait_for(now, gpus)))


@dataclass(slots=True)
class _Run:
    """One replay: the sites as the policy sees them, the ends to come, what became of jobs."""

    states: dict[str, _SiteState]
    declared: dict[str, Site]
    decider: _Decider
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    ends: list[tuple[float, int, str]] = field(default_factory=list)  # heap: (end_s, seq, site)
    seq: int = 0
    arrivals: int = 0
    shapes: dict[tuple[int, str], tuple[int, int, frozenset[str]]] = field(default_factory=dict)

    def arrive(self, job: TraceJob) -> None:
        d = self.demand(job)
        decision, where = self.decider.decide(d, job)
        if where is None:
            self.outcomes[job.name] = JobOutcome(job.name, "refused", None, job.submit_s)
            return
        st = self.states[where]
        self.arrivals += 1
        q = _Queued(self.arrivals, job, d, decision, st.site.startup_minutes * 60 + job.duration_s)
        if not st.waiting and job.gpus <= st.capacity - st.used:
            self.start(st, q, job.submit_s)  # what enqueue then start_ready would do, sooner
        else:
            st.enqueue(q)
            self.start_ready(st, job.submit_s)

    def end(self) -> None:
        """The next end: free its GPUs, start what now fits there."""
        now, _, name = heapq.heappop(self.ends)
        st = self.states[name]
        st.used -= heapq.heappop(st.running)[1]  # the earliest end there: this one
        if st.waiting:
            self.start_ready(st, now)

    def start_ready(self, st: _SiteState, now: float) -> None:
        """Best-effort FIFO: start, oldest first, every queued job that fits the free GPUs."""
        while (q := st.next_fitting()) is not None:
            st.dequeue(q, now, now + st.site.startup_minutes * 60 + q.job.duration_s)
            self.start(st, q, now)

    def start(self, st: _SiteState, q: _Queued, now: float) -> None:
        start = now + st.site.startup_minutes * 60
        end = start + q.job.duration_s
        st.launch(q.job.gpus, end)
        site = self.declared[st.site.name]
        self.outcomes[q.job.name] = JobOutcome(
            q.job.name, q.decision, site.name, q.job.submit_s, start, end,
            cost(q.demand, site), _violation(q.job, site),
        )  # fmt: skip
        heapq.heappush(self.ends, (end, self.seq, st.site.name))
        self.seq += 1

    def demand(self, job: TraceJob) -> Demand:
        shape = self.shapes.get((job.gpus, job.gpu_model))
        if shape is None:
            models = frozenset({job.gpu_model}) if job.gpu_model else frozenset()
            shape = self.shapes[(job.gpus, job.gpu_model)] = (job.nodes, job.gpus_per_node, models)
        nodes, per_node, models = shape
        return Demand(job.name, per_node, nodes, models, job.data_class, job.duration_s / 3600,
                      job.data_gb, job.data_site)  # fmt: skip


def simulate(trace: Sequence[TraceJob], sites: Sequence[Site], policy: str) -> PolicyResult:
    """Replay `trace` under `policy`; every job is either run (after its wait) or refused.

    Events in time order; at one time, ends before arrivals, ends in the order their jobs
    started, arrivals in trace order (as one event heap of (time, kind, seq) orders them)."""
    seen = policy_sites(policy, sites)
    states = {s.name: _SiteState(s, s.total_gpus) for s in seen}
    run = _Run(states, {s.name: s for s in sites}, _Decider(seen, states), seq=len(trace))
    for job in sorted(trace, key=lambda j: j.submit_s):  # stable: ties keep trace order
        while run.ends and run.ends[0][0] <= job.submit_s:
            run.end()
        run.arrive(job)
    while run.ends:
        run.end()
    return check_finite(_summarise(policy, trace, run.declared, run.outcomes))


def check_finite(result: PolicyResult) -> PolicyResult:
    """`result`, refused if a figure of it is inf or nan: a second wall behind the bounds
    trace.py and the sites file put on their numbers (JSON has no Infinity, a table no use
    for a 300-digit cost)."""
    for key, value in result.to_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(
                f"policy {result.policy}: {key} came out as {value}, past what a number holds",
                "a number in the trace or the sites file is too large; check the sizes, times "
                "and prices",
            )
    return result


def _minutes(seconds: float) -> float:
    return seconds / 60 if math.isfinite(seconds) else 1e12


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
