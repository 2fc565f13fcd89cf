"""The trace simulation: the queue model's arithmetic on hand-made traces, the policies'
promises (hybrid never breaks a data class; cloud-only sends every sensitive job out and says
so), the generator's fit to the published figures, and the trace parser's errors."""

from __future__ import annotations

import contextlib
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from torchship.errors import SpecError
from torchship.place.simulate import percentile, policy_sites, simulate
from torchship.place.sites import GPUPool, Site
from torchship.place.trace import (
    HELIOS_VENUS,
    SIZES,
    TraceJob,
    capped_mean_duration_s,
    generate_week,
    parse_trace,
    read_trace,
    size_distribution,
    study_utilisation,
    write_trace,
)
from torchship.sites import load_sites

SITES = load_sites(REPO / "examples/hybrid/sites.toml")
ALL = frozenset({"public", "internal", "sensitive"})


def site(name: str, gpus: int, tier: int = 0, price: float = 1.0, **kw: object) -> Site:
    trust = str(kw.pop("trust", "private"))
    classes = ALL if trust == "private" else frozenset({"public", "internal"})
    return Site(name=name, kind="local", tier=tier, trust=trust, data_classes=classes,
                gpus=(GPUPool("A100", gpus, min(gpus, 8)),), max_nodes=4,
                price_per_gpu_hour=price, **kw)  # type: ignore[arg-type]  # fmt: skip


def job(name: str, submit_s: float, gpus: int, duration_s: float, cls: str = "public") -> TraceJob:
    return TraceJob(name, submit_s, gpus, duration_s, cls)


def test_fifo_queue_arithmetic_on_one_site() -> None:
    # 4 GPUs: a fills them for an hour; b (2 GPUs) waits for a; c (2) starts beside b.
    trace = [job("a", 0, 4, 3600), job("b", 60, 2, 600), job("c", 120, 2, 600)]
    r = simulate(trace, [site("box", 4)], "local-only")
    got = {o.name: (o.start_s, o.end_s) for o in r.outcomes}
    assert got == {"a": (0, 3600), "b": (3600, 4200), "c": (3600, 4200)}
    assert r.makespan_h == pytest.approx(4200 / 3600)
    assert r.cost_usd == pytest.approx((4 * 3600 + 2 * 600 + 2 * 600) / 3600 * 1.0)
    assert r.wait_p95_min == pytest.approx((3600 - 60) / 60)


def test_best_effort_fifo_lets_a_small_job_past_a_big_one() -> None:
    # 4 GPUs, 3 busy: big (4) waits; small (1) fits the free GPU and starts at once.
    trace = [job("busy", 0, 3, 3600), job("big", 10, 4, 60), job("small", 20, 1, 60)]
    r = simulate(trace, [site("box", 4)], "local-only")
    got = {o.name: o.start_s for o in r.outcomes}
    assert got == {"busy": 0, "big": 3600, "small": 20}


def test_hybrid_bursts_only_past_the_wait_budget_and_startup_counts_as_wait() -> None:
    sites = [site("box", 4, wait_budget_minutes=30),
             site("cloud", 64, tier=2, price=4.0, trust="public", startup_minutes=5)]  # fmt: skip
    trace = [job("long", 0, 4, 7200), job("patient", 10, 4, 600), job("secret", 20, 4, 600,
             "sensitive")]  # fmt: skip
    r = simulate(trace, sites, "hybrid")
    by = {o.name: o for o in r.outcomes}
    assert by["long"].site == "box"
    assert by["patient"].site == "cloud" and by["patient"].wait_s == 300  # burst: start-up only
    assert by["secret"].site == "box" and by["secret"].start_s == 7200  # waits, never leaves
    assert r.violations == 0 and r.on_public == 1
    # With a budget longer than the wait, the same job waits for the box instead.
    patient = [site("box", 4, wait_budget_minutes=180), sites[1]]
    assert {o.name: o.site for o in simulate(trace, patient, "hybrid").outcomes}["patient"] == "box"


def test_wait_share_keeps_long_jobs_home() -> None:
    sites = [site("box", 4, wait_budget_minutes=30, wait_share=0.1),
             site("cloud", 64, tier=2, price=4.0, trust="public")]  # fmt: skip
    trace = [job("first", 0, 4, 7200), job("week", 10, 4, 7 * 86400), job("short", 20, 4, 600)]
    by = {o.name: o.site for o in simulate(trace, sites, "hybrid").outcomes}
    # 2 h wait against 10% of a week (16.8 h): stays; against 10% of 10 min: bursts.
    assert by == {"first": "box", "week": "box", "short": "cloud"}


def test_baselines_count_what_they_would_break() -> None:
    trace = read_trace(REPO / "examples/hybrid/trace-week.csv")
    sensitive = sum(1 for j in trace if j.data_class == "sensitive")
    cloud = simulate(trace, SITES, "cloud-only")
    assert cloud.violations == sensitive and cloud.on_public == len(trace)
    assert all("sensitive data on" in (o.violation or "") for o in cloud.outcomes
               if o.violation)  # fmt: skip
    local = simulate(trace, SITES, "local-only")
    assert local.on_public == 0 and local.violations == 0
    assert {s.name for s in policy_sites("local-only", SITES)} == {"workstation", "onprem"}
    cheapest = policy_sites("cheapest", SITES)
    assert {s.tier for s in cheapest} == {0}


def test_the_bundled_week_meets_the_targets() -> None:
    trace = read_trace(REPO / "examples/hybrid/trace-week.csv")
    r = {p: simulate(trace, SITES, p) for p in ("hybrid", "local-only", "cloud-only")}
    assert all(x.ran == len(trace) for x in r.values())
    assert r["hybrid"].violations == 0
    assert r["hybrid"].cost_usd <= 0.40 * r["cloud-only"].cost_usd
    assert r["hybrid"].wait_p95_min <= 0.20 * r["local-only"].wait_p95_min


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20_000), st.sampled_from((1, 2, 4, 8, 16, 32, 64)),
                          st.integers(60, 50_000),
                          st.sampled_from(("public", "internal", "sensitive"))),
                min_size=1, max_size=40))  # fmt: skip
def test_hybrid_never_breaks_a_data_class_and_every_job_ends(
    rows: list[tuple[int, int, int, str]],
) -> None:
    trace = [job(f"j{i}", *row) for i, row in enumerate(rows)]
    r = simulate(trace, SITES, "hybrid")
    assert r.violations == 0
    for o in r.outcomes:
        if o.decision == "refused":  # 64 GPUs: only the clouds have room; never sensitive there
            assert o.site is None
            continue
        assert o.start_s is not None and o.end_s is not None and o.start_s >= o.submit_s
        s = next(s for s in SITES if s.name == o.site)
        t = next(t for t in trace if t.name == o.name)
        assert t.data_class in s.data_classes and t.gpus <= s.total_gpus
    assert r.ran + r.refused == len(trace)


def test_generator_follows_the_published_figures() -> None:
    probs = size_distribution()
    assert probs[0] == 0.5  # median 1 GPU
    assert sum(s * p for s, p in zip(SIZES, probs, strict=True)) == pytest.approx(
        HELIOS_VENUS.gpus_mean
    )
    assert study_utilisation() == pytest.approx(0.772, abs=0.001)
    trace = generate_week(36, seed=7)
    assert statistics.median_low(j.gpus for j in trace) == 1  # exactly half are 1 GPU
    assert statistics.mean(j.gpus for j in trace) == pytest.approx(HELIOS_VENUS.gpus_mean, rel=0.05)
    assert statistics.median(j.duration_s for j in trace) == pytest.approx(204, rel=0.1)
    assert statistics.mean(j.duration_s for j in trace) == pytest.approx(
        capped_mean_duration_s(), rel=0.15
    )
    expected = (
        study_utilisation() * 36 * 7 * 86400 / (HELIOS_VENUS.gpus_mean * capped_mean_duration_s())
    )
    assert abs(len(trace) - expected) < 4 * math.sqrt(expected)  # Poisson count
    assert generate_week(36, seed=7) == trace  # seeded
    assert parse_trace(write_trace(trace), "t.csv") == trace  # round trip


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("", "line 1", "empty trace"),
        ("name,gpus,duration_s\n", "line 1", "no 'submit_s' column"),
        ("name,submit_s,gpus,duration_s,colour\n", "line 1", "unknown column 'colour'"),
        ("name,submit_s,gpus,duration_s\n", "line 2", "no jobs"),
        ("name,submit_s,gpus,duration_s\na,0,1\n", "line 2", "3 fields"),
        ("name,submit_s,gpus,duration_s\na,zero,1,60\n", "line 2.submit_s", "not a number"),
        ("name,submit_s,gpus,duration_s\na,0,0,60\n", "line 2.gpus", "out of range"),
        ("name,submit_s,gpus,duration_s\na,0,1.5,60\n", "line 2.gpus", "not a whole number"),
        ("name,submit_s,gpus,duration_s\na,0,1,nan\n", "line 2.duration_s", "out of range"),
        (
            "name,submit_s,gpus,duration_s,data_class\na,0,1,60,secret\n",
            "line 2.data_class",
            "unknown data class",
        ),
        ("name,submit_s,gpus,duration_s\na,0,1,60\na,5,1,60\n", "line 3.name", "appears twice"),
        ("name,submit_s,gpus,duration_s\n,0,1,60\n", "line 2.name", "empty"),
    ],
)
def test_trace_errors_name_the_line_and_field(text: str, where: str, what: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_trace(text, "t.csv")
    assert e.value.field == where and what in e.value.message and e.value.hint


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_trace_parser_fuzz_raises_only_spec_errors(text: str) -> None:
    with contextlib.suppress(SpecError):
        parse_trace("name,submit_s,gpus,duration_s,data_class\n" + text, "t.csv")


def test_trace_gpu_models_use_the_matrix_names() -> None:
    text = "name,submit_s,gpus,duration_s,gpu_model\na,0,1,60,h100-80gb\n"
    assert parse_trace(text, "t.csv")[0].gpu_model == "H100"
    with pytest.raises(SpecError) as e:
        parse_trace("name,submit_s,gpus,duration_s,gpu_model\na,0,1,60,H1000\n", "t.csv")
    assert e.value.field == "line 2.gpu_model"
