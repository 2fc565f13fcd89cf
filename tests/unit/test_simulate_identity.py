"""The event-driven simulator gives exactly what the replaying one gave: on the figures recorded
from it before issue 20's rewrite (tests/data/simulate/expected.json, see the README beside it),
and against that algorithm itself, kept below as the reference, on random small traces."""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import REPO
from torchship.place.policy import Demand, Placer, SiteLoad, cost
from torchship.place.simulate import (
    POLICIES,
    JobOutcome,
    PolicyResult,
    _summarise,
    _violation,
    policy_sites,
    simulate,
)
from torchship.place.sites import GPUPool, Site
from torchship.place.trace import TraceJob, generate_week, read_trace
from torchship.sites import load_sites

EXPECTED = json.loads((REPO / "tests/data/simulate/expected.json").read_text())


def _case_id(case: dict[str, Any]) -> str:
    trace = case["trace"]
    name = (
        trace
        if isinstance(trace, str)
        else "generate_week-{private_gpus}-{seed}".format(**trace["generate_week"])
    )
    return f"{name.rsplit('/', 1)[-1]}-{case['sites'].rsplit('/', 1)[-1]}-{case['policy']}"


def _rows(r: PolicyResult) -> list[list[Any]]:
    return [[o.name, o.decision, o.site, o.submit_s, o.start_s, o.end_s, o.cost_usd, o.violation]
            for o in r.outcomes]  # fmt: skip


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=_case_id)
def test_figures_are_those_recorded_before_the_rewrite(case: dict[str, Any]) -> None:
    ref = case["trace"]
    trace = (
        read_trace(REPO / ref) if isinstance(ref, str) else generate_week(**ref["generate_week"])
    )
    r = simulate(trace, load_sites(REPO / case["sites"]), case["policy"])
    assert r.to_dict() == case["summary"]
    # floats exactly: JSON keeps a float's shortest repr, which reads back to the same float
    assert {k: getattr(r, k) for k in case["exact"]} == case["exact"]
    assert _rows(r) == case["outcomes"]


# --- The reference: the simulator as it was before issue 20, every queue replayed per arrival.


@dataclass(slots=True)
class _RefQueued:
    job: TraceJob
    demand: Demand
    decision: str


@dataclass(slots=True)
class _RefSite:
    site: Site
    capacity: int
    used: int = 0
    running: list[tuple[float, int]] = field(default_factory=list)
    queue: list[_RefQueued] = field(default_factory=list)

    def wait_for(self, now: float, gpus: int) -> float:
        free = self.capacity - self.used
        if free >= gpus:
            return 0.0
        releases = list(self.running)
        t = now
        holds = [(q.job.gpus, self.site.startup_minutes * 60 + q.job.duration_s)
                 for q in self.queue]  # fmt: skip
        for g, dur in [*holds, (gpus, 0.0)]:
            while free < g and releases:
                end, back = heapq.heappop(releases)
                t = max(t, end)
                free += back
            if free < g:
                return math.inf
            free -= g
            heapq.heappush(releases, (t + dur, g))
        return t - now


def reference(trace: Sequence[TraceJob], sites: Sequence[Site], policy: str) -> PolicyResult:
    seen = policy_sites(policy, sites)
    declared = {s.name: s for s in sites}
    placer = Placer(seen)
    states = {s.name: _RefSite(s, s.total_gpus) for s in seen}
    outcomes: dict[str, JobOutcome] = {}
    events: list[tuple[float, int, int, str, TraceJob | None]] = [
        (tj.submit_s, 1, seq, "", tj) for seq, tj in enumerate(trace)
    ]
    seq = len(events)
    heapq.heapify(events)
    while events:
        now, kind, _, name, job = heapq.heappop(events)
        if kind == 0:
            st = states[name]
            st.used -= heapq.heappop(st.running)[1]
        else:
            assert job is not None
            d = _demand(job)
            loads = {n: SiteLoad(s.capacity - s.used, _ref_minutes(s.wait_for(now, job.gpus)))
                     for n, s in states.items()}  # fmt: skip
            p = placer.place(d, loads)
            if p.site is None:
                outcomes[job.name] = JobOutcome(job.name, "refused", None, job.submit_s)
                continue
            st = states[p.site]
            st.queue.append(_RefQueued(job, d, p.decision))
        for end in _ref_start_ready(st, now, declared, outcomes):
            heapq.heappush(events, (end, 0, seq, st.site.name, None))
            seq += 1
    return _summarise(policy, trace, declared, outcomes)


def _demand(job: TraceJob) -> Demand:
    models = frozenset({job.gpu_model}) if job.gpu_model else frozenset()
    return Demand(job.name, job.gpus_per_node, job.nodes, models, job.data_class,
                  job.duration_s / 3600, job.data_gb, job.data_site)  # fmt: skip


def _ref_minutes(seconds: float) -> float:
    return seconds / 60 if math.isfinite(seconds) else 1e12


def _ref_start_ready(
    st: _RefSite, now: float, declared: dict[str, Site], outcomes: dict[str, JobOutcome]
) -> list[float]:
    started, keep = [], []
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
        started.append(end)
    st.queue = keep
    return started


# --- Random small fleets and traces (synthetic: made to stress the queues, not realistic).

ALL = frozenset({"public", "internal", "sensitive"})


def _random_sites(rng: random.Random) -> list[Site]:
    out = []
    for i in range(rng.randint(1, 4)):
        trust = rng.choice(["private", "public"])
        count = rng.choice([1, 2, 4, 8, 12, 16, 32, 40])
        out.append(Site(
            name=f"s{i}", kind="local", tier=rng.randint(0, 2), trust=trust,
            data_classes=ALL if trust == "private" else frozenset({"public", "internal"}),
            gpus=(GPUPool(rng.choice(["A100", "H100"]), count, min(count, 8)),),
            max_nodes=rng.choice([1, 4, 8]), price_per_gpu_hour=rng.choice([0.5, 1.0, 3.0]),
            wait_budget_minutes=rng.choice([0, 10, 30, 120]), wait_share=rng.choice([0, 0.1]),
            startup_minutes=rng.choice([0, 0.5, 5, 7.3]), egress_per_gb=rng.choice([0, 0.1]),
        ))  # fmt: skip
    return out


def _random_trace(rng: random.Random, n: int) -> list[TraceJob]:
    fractional = rng.random() < 0.3  # sums whose rounding depends on their order
    jobs = []
    for i in range(n):
        # ties: several jobs at one time, and run times that end together
        submit = rng.choice([0.0, 100.0, 200.0]) if rng.random() < 0.2 else rng.randint(0, 20000)
        run = rng.choice([60.0, 600.0, 3600.0]) if rng.random() < 0.4 else rng.randint(60, 30000)
        if fractional:
            submit, run = submit + rng.random(), run + rng.random()
        jobs.append(TraceJob(
            f"j{i}", submit, rng.choice([1, 1, 2, 3, 4, 5, 8, 12, 16, 20, 32, 33]), run,
            rng.choice(["public", "internal", "sensitive"]), rng.choice(["", "", "A100", "H100"]),
            10.0, rng.choice([None, "s0"]),
        ))  # fmt: skip
    return jobs


@pytest.mark.parametrize("seed", range(12))
def test_random_traces_give_what_the_reference_gives(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5):
        sites, trace = _random_sites(rng), _random_trace(rng, rng.randint(1, 150))
        for policy in POLICIES:
            # a PolicyResult compares its figures and every outcome
            assert simulate(trace, sites, policy) == reference(trace, sites, policy), policy


def test_long_queues_give_what_the_reference_gives() -> None:
    # Twice the load the example's private GPUs can take: queues grow for days, jobs start past
    # older ones all the time, and the kept shadow schedule is rebuilt and extended often.
    sites = load_sites(REPO / "examples/hybrid/sites.toml")
    trace = generate_week(72, seed=11, days=3)
    for policy in POLICIES:
        assert simulate(trace, sites, policy) == reference(trace, sites, policy), policy
