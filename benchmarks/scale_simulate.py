"""The simulator at scale (issue 20): a month of a 10,000-GPU cluster under all four policies in
under 60 s, the time growing no faster than n^1.15 per 10× jobs.

    python benchmarks/scale_simulate.py [--gpus 100,1000,10000] [--days 30] [--seed 2021]

Each size is a month (--days) drawn at the Helios study's job rate for that many GPUs
(`trace.generate`: 0.677 jobs per GPU a day, ~203,000 for 10,000 GPUs) on the hybrid example's
sites grown to match (`simulate.scale_sites`: onprem to that many GPUs, the clouds' quotas
alike, the 4-GPU workstation as it is): the job density grows with the cluster, 10× a step.
Printed per size: jobs, seconds per policy and in all (wall; CPU beside it, which another
process on the machine does not inflate), peak RSS of this process so far, and the growth
exponent from the size before (log of the time ratio over log of the job ratio: 1 is linear).
Baseline, measured in the same run: the bare event loop of the same trace (every arrival and end
pushed on and popped off one heapq, what any discrete-event replay does at least); the last
line is the simulator's time over it at the largest size. benchmarks/scale.py calls `run()`.
"""

from __future__ import annotations

import argparse
import heapq
import math
import resource
import time
from collections.abc import Sequence
from pathlib import Path

from torchship.place.simulate import POLICIES, scale_sites, simulate
from torchship.place.trace import TraceJob, generate
from torchship.sites import load_sites

ROOT = Path(__file__).resolve().parent.parent
TARGET_S, TARGET_EXPONENT = 60.0, 1.15


def bare_events(trace: Sequence[TraceJob]) -> float:
    """Seconds to push every arrival and end of `trace` on one heap and pop them all."""
    start = time.perf_counter()
    events = [(j.submit_s, 1, i) for i, j in enumerate(trace)]
    heapq.heapify(events)
    while events:
        t, kind, i = heapq.heappop(events)
        if kind:
            heapq.heappush(events, (t + trace[i].duration_s, 0, i))
    return time.perf_counter() - start


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(
    gpus: Sequence[int] = (100, 1_000, 10_000), days: float = 30, seed: int = 2021
) -> list[str]:
    """Print (and return) every figure, the ratio to the baseline last."""
    base = load_sites(ROOT / "examples/hybrid/sites.toml")
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    before: tuple[int, float] | None = None
    wall = baseline = 0.0
    for size in gpus:
        trace, sites = generate(days, size, seed), scale_sites(base, size)
        per_policy, cpu_start = [], time.process_time()
        for policy in POLICIES:
            start = time.perf_counter()
            simulate(trace, sites, policy)
            per_policy.append(f"{policy} {time.perf_counter() - start:.2f}")
        cpu = time.process_time() - cpu_start
        wall = sum(float(p.rsplit(" ", 1)[1]) for p in per_policy)
        baseline = bare_events(trace)
        growth = ""
        if before is not None:
            exponent = math.log(wall / before[1]) / math.log(len(trace) / before[0])
            growth = f"; exponent {exponent:.2f} per 10x jobs (target <= {TARGET_EXPONENT})"
        say(f"{size} GPUs, {days:g} days: {len(trace)} jobs, 4 policies in {wall:.2f} s "
            f"(CPU {cpu:.2f} s; {', '.join(per_policy)}), peak RSS {_peak_rss_mib():.0f} MiB, "
            f"bare event loop {baseline:.3f} s{growth}")  # fmt: skip
        before = (len(trace), wall)
    say(f"month of {gpus[-1]} GPUs: {wall:.2f} s (target < {TARGET_S:g} s), "
        f"{wall / baseline:.0f}x the bare event loop")  # fmt: skip
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpus", default="100,1000,10000", help="cluster sizes, comma-separated")
    p.add_argument("--days", type=float, default=30)
    p.add_argument("--seed", type=int, default=2021)
    a = p.parse_args()
    run(tuple(int(g) for g in a.gpus.split(",")), a.days, a.seed)


if __name__ == "__main__":
    main()
