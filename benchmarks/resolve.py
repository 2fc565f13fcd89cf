"""Resolver: correctness over every case, then resolutions per second. Target: >= 10,000/s.

    python benchmarks/resolve.py [--seconds 3]

1. Every torch release x GPU model x driver in the matrix is resolved and compared with the
   independent oracle in tests/oracle.py, on Linux x86_64 and on every other platform with
   wheels for the release and GPUs that can be there (prints cases and mismatches).
2. A seeded mix of realistic requests (a platform, one exact torch or a range, 1-3 GPUs that
   can be on that platform, a driver and a Python most of the time) is resolved in a loop for
   --seconds; prints resolutions/s.
3. The same mix through `resolve --json`'s path (compat.explain.fleet_json, the document the
   CLI prints: every platform's answer, what would fit when nothing does), without process
   start-up: first 2,000 requests never seen before, with the caches of compat.explain
   emptied (each request new), then the mix in a loop as in 2 (what would fit is cached per
   request).
The last two lines are the ratios against the 10,000/s target measured in this run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import oracle

from torchship.compat import Request, load_matrix, lookup_gpu
from torchship.compat import explain as what_fits
from torchship.compat.explain import fleet_json
from torchship.compat.platforms import LINUX_X86_64, PLATFORMS, possible
from torchship.compat.resolve import resolve
from torchship.spec.fields import parse_driver, parse_torch

TARGET_PER_S = 10_000


def correctness() -> tuple[int, int]:
    m = load_matrix()
    data = oracle.raw()
    linux = ((LINUX_X86_64, r, g, d) for r, g, d in oracle.cases(data))
    total = bad = 0
    for platform, release, gpu, driver in (*linux, *oracle.platform_cases(data)):
        t = lookup_gpu(m, gpu["name"])
        spec, _ = parse_torch(release["torch"])
        req = Request(spec, release["torch"], gpus=(t,), platform=platform, platforms=(platform,),
                      driver=parse_driver(driver) if driver else None)  # fmt: skip
        got = resolve(req, m)
        names, pick = oracle.expected(data, release, t.cc, driver)
        total += 1
        bad += (
            list(got.compatible) != names
            or (got.chosen.local_version if got.chosen else None) != pick
        )
    return total, bad


def workload(n: int, seed: int = 7) -> list[Request]:
    m = load_matrix()
    rng = random.Random(seed)
    gpus = [lookup_gpu(m, g.name) for g in m.gpus]
    platforms = [*PLATFORMS, LINUX_X86_64, LINUX_X86_64]  # Linux x86_64 most often
    torches = [r.torch for r in m.releases] + [">=2.7,<2.12", "2.9", ">=2.4"]
    drivers = [None, *oracle.DRIVERS[1:]]
    out = []
    for _ in range(n):
        torch = rng.choice(torches)
        spec, _ = parse_torch(torch)
        d = rng.choice(drivers)
        platform = rng.choice(platforms)
        here = [g for g in gpus if platform in possible(g.gpu)]
        out.append(
            Request(
                torch=spec,
                torch_text=torch,
                gpus=tuple(rng.sample(here, rng.randint(1, 3))) if here else (),
                driver=parse_driver(d) if d else None,
                python=rng.choice([None, "3.11", "3.12", "3.13"]),
                platform=platform,
                platforms=(platform,),
            )
        )
    return out


def throughput(seconds: float) -> tuple[int, float]:
    """(resolutions, seconds) of the mix resolved in a loop for `seconds`."""
    m = load_matrix()
    reqs = workload(2000)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for r in reqs:
            resolve(r, m)
        done += len(reqs)
    return done, time.perf_counter() - start


def json_new(n: int = 2000, seed: int = 8) -> tuple[int, float]:
    """(documents, seconds) of `resolve --json` for `n` requests never seen before (another
    seed than the loop's mix), the caches of what would fit emptied first."""
    m = load_matrix()
    reqs = workload(n, seed)
    what_fits._what_would_fit.cache_clear()
    what_fits._covering_cc.cache_clear()
    start = time.perf_counter()
    for r in reqs:
        fleet_json(r, m)
    return n, time.perf_counter() - start


def json_throughput(seconds: float) -> tuple[int, float]:
    """(documents, seconds) of `resolve --json` over the mix in a loop for `seconds`."""
    m = load_matrix()
    reqs = workload(2000)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for r in reqs:
            fleet_json(r, m)
        done += len(reqs)
    return done, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    total, bad = correctness()
    print(
        f"correctness: {total} cases (platform x release x GPU x driver), "
        f"{bad} disagree with the oracle"
    )
    failing = sum(not resolve(r, load_matrix()).ok for r in workload(2000)) / 20
    done, elapsed = json_new()
    new = done / elapsed
    print(
        f"resolve --json, each request new: {done} documents in {elapsed:.2f} s = {new:,.0f}/s "
        f"({new / TARGET_PER_S:.2f}x the target; {failing:.0f}% of the mix fit nothing)"
    )
    done, elapsed = json_throughput(args.seconds)
    as_json = done / elapsed
    print(f"resolve --json, the mix in a loop: {done} documents in {elapsed:.2f} s")
    done, elapsed = throughput(args.seconds)
    rate = done / elapsed
    print(f"throughput: {done} resolutions in {elapsed:.2f} s = {rate:,.0f}/s")
    print(f"json ratio: {as_json / TARGET_PER_S:.2f}x the {TARGET_PER_S:,}/s target")
    print(f"ratio: {rate / TARGET_PER_S:.2f}x the {TARGET_PER_S:,}/s target")
    return 0 if bad == 0 and min(rate, as_json) >= TARGET_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
