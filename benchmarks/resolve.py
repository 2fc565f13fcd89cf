"""Resolver: correctness over every case, then resolutions per second. Target: >= 10,000/s.

    python benchmarks/resolve.py [--seconds 3]

1. Every torch release x GPU model x driver in the matrix is resolved and compared with the
   independent oracle in tests/oracle.py, on Linux x86_64 and on every other platform with
   wheels for the release and GPUs that can be there (prints cases and mismatches).
2. A seeded mix of realistic requests (a platform, one exact torch or a range, 1-3 GPUs that
   can be on that platform, a driver and a Python most of the time) is resolved in a loop for
   --seconds; prints resolutions/s.
The last line is the ratio against the 10,000/s target measured in this run.
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


def throughput(seconds: float, full: bool = False) -> tuple[int, float]:
    """Resolutions/s; with `full`, each also renders its JSON including the suggestions."""
    m = load_matrix()
    reqs = workload(2000)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for r in reqs:
            res = resolve(r, m)
            if full:
                res.to_json()
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
    done, elapsed = throughput(args.seconds, full=True)
    failing = sum(not resolve(r, load_matrix()).ok for r in workload(2000)) / 20
    print(
        f"with JSON and what-would-fit suggestions: {done / elapsed:,.0f}/s "
        f"({failing:.0f}% of the mix fit nothing)"
    )
    done, elapsed = throughput(args.seconds)
    rate = done / elapsed
    print(f"throughput: {done} resolutions in {elapsed:.2f} s = {rate:,.0f}/s")
    print(f"ratio: {rate / TARGET_PER_S:.2f}x the {TARGET_PER_S:,}/s target")
    return 0 if bad == 0 and rate >= TARGET_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
