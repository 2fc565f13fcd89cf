"""Resolver: correctness over every case, then resolutions per second. Target: >= 10,000/s.

    python benchmarks/resolve.py [--seconds 3]

1. Every torch release x GPU model x driver in the matrix is resolved and compared with the
   independent oracle in tests/oracle.py, on Linux x86_64 and on every other platform with
   wheels for the release and GPUs that can be there (prints cases and mismatches).
2. A seeded mix of realistic requests (a platform, one exact torch or a range, 1-3 GPUs that
   can be on that platform, a driver and a Python most of the time) is resolved in a loop for
   --seconds x 2, in turn with the paths of 3 (the fastest pass of each); prints
   resolutions/s.
3. The same mix through `resolve --json`'s path: compat.explain.fleet_json, the document the
   CLI prints (every platform's answer, what would fit when nothing does), without process
   start-up and without printing; then the same with json.dumps (compact, C encoder) and with
   the CLI's own dump (indent=2, ensure_ascii=False: the pure-Python encoder). The mix as in 2;
   then 2,000 other requests (another seed) the same way; then those once each with every
   cache of the resolver emptied first (compat.explain.clear_caches). No cache holds an
   answer to a request: they are per matrix, platform, build, torch specifier and one
   target (a GPU kind, a driver, a Python), so the mix gains from them only what any
   process gains by its second request.
Every rate is printed with its ratio to the 10,000/s target, all measured in this run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import oracle

from torchship.compat import Request, load_matrix, lookup_gpu
from torchship.compat.explain import clear_caches, fleet_json
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


def _resolve(r: Request) -> object:
    return resolve(r, load_matrix())


def _json(r: Request) -> object:
    return fleet_json(r, load_matrix())


def _json_dumps(r: Request) -> object:
    return json.dumps(fleet_json(r, load_matrix()))


def _json_cli(r: Request) -> object:  # as cli/_output.print_json writes it
    return json.dumps(fleet_json(r, load_matrix()), indent=2, ensure_ascii=False)


PATHS: dict[str, Callable[[Request], object]] = {
    "resolver": _resolve,
    "resolve --json document": _json,
    "  + json.dumps": _json_dumps,
    "  + the CLI's dump (indent=2)": _json_cli,
}


def interleaved(reqs: list[Request], seconds: float) -> dict[str, float]:
    """Requests per second of each path over `reqs`: passes over the mix taken in turn, path
    after path, for `seconds`; each path's fastest pass (the machine is shared, and a burst of
    someone else's work should slow neither path alone)."""
    best = dict.fromkeys(PATHS, 0.0)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or not all(best.values()):
        for name, fn in PATHS.items():
            t = time.perf_counter()
            for r in reqs:
                fn(r)
            best[name] = max(best[name], len(reqs) / (time.perf_counter() - t))
    return best


def cold(fn: Callable[[Request], object], reqs: list[Request]) -> float:
    """Requests per second of `fn` over `reqs` once, every cache emptied first."""
    clear_caches()
    start = time.perf_counter()
    for r in reqs:
        fn(r)
    return len(reqs) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    total, bad = correctness()
    print(
        f"correctness: {total} cases (platform x release x GPU x driver), "
        f"{bad} disagree with the oracle"
    )
    mix, new = workload(2000), workload(2000, seed=8)
    failing = sum(not resolve(r, load_matrix()).ok for r in mix) / 20
    print(f"the mix: 2,000 requests, {failing:.0f}% fit nothing (suggestions computed)")
    rates = interleaved(mix, args.seconds * 2)
    for name, rate in rates.items():
        print(f"{name + ', the mix:':48s} {rate:8,.0f}/s = {rate / TARGET_PER_S:.2f}x")
    for name, rate in interleaved(new, args.seconds).items():
        print(f"{name + ', 2,000 others:':48s} {rate:8,.0f}/s = {rate / TARGET_PER_S:.2f}x")
    for name, fn in PATHS.items():
        rate = cold(fn, new)
        print(
            f"{name + ', 2,000 new, cold caches:':48s} {rate:8,.0f}/s = {rate / TARGET_PER_S:.2f}x"
        )
    rate, as_json = rates["resolver"], rates["resolve --json document"]
    print(f"json ratio: {as_json / TARGET_PER_S:.2f}x the {TARGET_PER_S:,}/s target")
    print(f"ratio: {rate / TARGET_PER_S:.2f}x the {TARGET_PER_S:,}/s target")
    return 0 if bad == 0 and min(rate, as_json) >= TARGET_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
