"""The simulator at scale: the cost of a job does not grow with the queue or the cluster, the
month generator follows the study's job rate, and `torchship simulate --generate` uses both."""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Callable

import pytest

from tests.conftest import REPO, run_cli
from torchship.place.simulate import POLICIES, scale_sites, simulate
from torchship.place.sites import GPUPool, Site
from torchship.place.trace import (
    HELIOS_VENUS,
    MAX_DURATION_S,
    TraceJob,
    generate,
    jobs_per_gpu_day,
    max_duration_s,
)
from torchship.sites import load_sites

SITES = load_sites(REPO / "examples/hybrid/sites.toml")
ALL = frozenset({"public", "internal", "sensitive"})


def _best_of(runs: int, f: Callable[[], object]) -> float:
    best = math.inf
    for _ in range(runs):
        t = time.process_time()
        f()
        best = min(best, time.process_time() - t)
    return best


def _backlog(n: int) -> list[TraceJob]:
    """Synthetic: 1-GPU jobs of 30 to 90 min every 225 s on 8 GPUs, twice what they can run:
    the queue grows all along (to n/2 jobs), and with one size no job ever starts past another."""
    rng = random.Random(n)
    return [TraceJob(f"j{i}", i * 225.0, 1, float(rng.randint(1800, 5400))) for i in range(n)]


def test_a_growing_queue_costs_log_n_per_job() -> None:
    # Replaying the queue per arrival (the simulator before issue 20) took 130x the time for
    # 10x these jobs (0.068 s → 8.9 s for 500 → 5,000); the kept shadow schedule takes ~10x.
    box = [Site(name="box", kind="local", tier=0, trust="private", data_classes=ALL,
                gpus=(GPUPool("A100", 8, 8),), price_per_gpu_hour=1.0)]  # fmt: skip
    small, large = _backlog(1_000), _backlog(10_000)
    r = simulate(large, box, "local-only")
    assert r.wait_p95_min > 50 * 60  # the queue did grow: the last jobs wait days
    t_small = _best_of(3, lambda: simulate(small, box, "local-only"))
    t_large = _best_of(3, lambda: simulate(large, box, "local-only"))
    assert t_large < 20 * t_small, (t_small, t_large)


def test_a_bigger_cluster_costs_no_more_per_job() -> None:
    # 10x the GPUs and 10x the jobs at the study's rate: ~10x the time (log factors aside).
    small = (generate(7, 100, seed=3), scale_sites(SITES, 100))
    large = (generate(7, 1_000, seed=3), scale_sites(SITES, 1_000))
    assert 8 < len(large[0]) / len(small[0]) < 12
    t_small = _best_of(3, lambda: [simulate(*small, p) for p in POLICIES])
    t_large = _best_of(2, lambda: [simulate(*large, p) for p in POLICIES])
    per_job = (t_large / len(large[0])) / (t_small / len(small[0]))
    assert per_job < 2, (t_small, t_large)


def test_the_month_generator_follows_the_study_at_its_job_rate() -> None:
    assert jobs_per_gpu_day() == pytest.approx(125_303 / 181 / 1_022)
    assert jobs_per_gpu_day() * 10_000 * 30 == pytest.approx(203_214, abs=1)
    trace = generate(30, 1_000, seed=5)
    mean = jobs_per_gpu_day() * 1_000 * 30
    assert abs(len(trace) - mean) < 4 * math.sqrt(mean)  # a Poisson count
    assert statistics.median_low(j.gpus for j in trace) == 1
    assert statistics.mean(j.gpus for j in trace) == pytest.approx(HELIOS_VENUS.gpus_mean, rel=0.02)
    assert statistics.median(j.duration_s for j in trace) == pytest.approx(204, rel=0.05)
    assert min(j.duration_s for j in trace) >= 60
    assert max(j.duration_s for j in trace) <= max_duration_s(30) == 29 * 86_400
    assert max_duration_s(7) == MAX_DURATION_S  # the week's cap
    assert all(0 <= j.submit_s <= 30 * 86_400 for j in trace)
    assert [j.submit_s for j in trace] == sorted(j.submit_s for j in trace)
    shares = {c: sum(j.data_class == c for j in trace) / len(trace) for c in ALL}
    assert shares == pytest.approx({"public": 0.4, "internal": 0.3, "sensitive": 0.3}, abs=1e-3)
    assert generate(30, 1_000, seed=5) == trace  # seeded
    assert generate(30, 1_000, seed=6) != trace


def test_sites_grow_to_the_cluster_asked_for() -> None:
    grown = {s.name: s for s in scale_sites(SITES, 10_000)}
    assert {n: s.total_gpus for n, s in grown.items()} == {
        "workstation": 4,  # one machine stays one machine
        "onprem": 10_000,  # 32 x 312.5
        "aws-p5": 20_000,  # the clouds' quotas grow alike
        "gcp-a2": 10_000,
    }
    assert grown["onprem"].gpus[0].per_node == 8 and grown["onprem"].max_nodes == 4


def test_simulate_generates_a_trace_for_the_cluster_asked_for() -> None:
    sites = str(REPO / "examples/hybrid/sites.toml")
    r = run_cli("simulate", "--generate", "2", "--gpus", "300", "--sites", sites, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["trace"] == "--generate 2 (seed 2021)"
    assert out["sites"].endswith("on-prem grown to 300 GPUs")
    jobs = len(generate(2, 300, seed=2021))
    assert [x["policy"] for x in out["results"]] == list(POLICIES)
    assert all(x["jobs"] == jobs and x["ran"] == jobs for x in out["results"])
    for args, message in [
        (("--generate", "month", "trace.csv"), "give a trace CSV or --generate, one of them"),
        (("trace.csv", "--gpus", "10"), "--gpus goes with --generate"),
        (("--generate", "fortnight"), "--generate 'fortnight': not a period"),
    ]:
        r = run_cli("simulate", *args, "--sites", sites)
        assert r.returncode == 2 and r.stderr.splitlines()[0] == f"error: {message}", r.stderr
        assert r.stderr.splitlines()[1].startswith("hint: ")


@pytest.mark.e2e
def test_a_month_of_10000_gpus_under_all_four_policies_in_a_minute() -> None:
    trace, sites = generate(30, 10_000, seed=2021), scale_sites(SITES, 10_000)
    start = time.perf_counter()
    results = [simulate(trace, sites, p) for p in POLICIES]
    assert time.perf_counter() - start < 60
    assert all(r.ran == len(trace) > 190_000 for r in results)
    assert results[0].violations == 0
