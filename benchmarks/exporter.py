"""The metrics exporter: scrape latency and CPU. Targets: p99 < 50 ms with 8 GPUs (faked through
the NVML seam), and < 1% of a core at a 15 s scrape interval.

    python benchmarks/exporter.py [--gpus 8] [--jobs 1000] [--scrapes 500]

A real HTTP endpoint on 127.0.0.1 (`serve()`, the one `torchship metrics serve` starts) with
FakeGpus(8), each GPU used by a process whose /proc environ carries a job id (a temporary
/proc tree), and a real SQLite job store holding `--jobs` jobs with placement records. The
scraper is urllib in this process. CPU is the process's CPU time over all scrapes (the
scraper's share included, so it is an upper bound) per scrape, divided by 15 s. Baseline in the
same run: the same server with an empty registry (HTTP alone). The last line is both ratios to
their targets (< 1 passes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from torchship.monitor.exporter import Collector, serve
from torchship.monitor.gpus import FakeGpus
from torchship.state import JobStore

TARGET_P99_MS = 50.0
TARGET_CPU_PCT = 1.0
INTERVAL_S = 15.0


def fill_store(path: Path, n: int) -> None:
    sites = ("workstation", "onprem", "aws-p5", "gcp-a2")
    with JobStore(path) as s:
        for i in range(n):
            placed = {"site": sites[i % 4], "decision": "run", "usd_per_hour": 1.5 * (i % 4)}
            job, _ = s.submit(f"k{i}", f"job{i}", {}, site="kubernetes", placement=placed)
            s.transition(job.id, ("running", "succeeded", "failed", "pending")[i % 4])


def fake_proc(root: Path, gpus: int) -> dict[int, tuple[int, ...]]:
    pids = {}
    for i in range(gpus):
        pid = 10_000 + i
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "environ").write_bytes(f"TORCHSHIP_JOB_ID=job-{i // 4}\0".encode())
        pids[i] = (pid,)
    return pids


def measure(port: int, scrapes: int) -> tuple[list[float], float, int]:
    url = f"http://127.0.0.1:{port}/metrics"
    for _ in range(20):  # warm up
        urllib.request.urlopen(url, timeout=10).read()
    times = []
    cpu0 = time.process_time()
    size = 0
    for _ in range(scrapes):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as r:
            size = len(r.read())
        times.append((time.perf_counter() - t) * 1e3)
    return times, (time.process_time() - cpu0) / scrapes, size


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=500)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fill_store(root / "jobs.db", a.jobs)
        gpus = FakeGpus(a.gpus)
        gpus.pids = fake_proc(root / "proc", a.gpus)
        collector = Collector(gpus, lambda: JobStore(root / "jobs.db"), "bench", root / "proc")
        ours = serve(0, "127.0.0.1", collector=collector)
        bare = serve(0, "127.0.0.1", collector=Collector(None, None), why_off="baseline")
        try:
            base_times, base_cpu, _ = measure(bare.server_port, a.scrapes)
            times, cpu, size = measure(ours.server_port, a.scrapes)
        finally:
            ours.shutdown()
            bare.shutdown()
    cpu_pct = cpu / INTERVAL_S * 100
    print(f"{a.gpus} fake GPUs, {a.jobs} jobs in the store, {a.scrapes} scrapes, {size} bytes")
    print(f"baseline (empty endpoint): p50 {statistics.median(base_times):.2f} ms, "
          f"p99 {p99(base_times):.2f} ms, CPU {base_cpu * 1e3:.2f} ms/scrape")  # fmt: skip
    print(f"exporter: p50 {statistics.median(times):.2f} ms, p99 {p99(times):.2f} ms, CPU "
          f"{cpu * 1e3:.2f} ms/scrape = {cpu_pct:.3f}% of a core at {INTERVAL_S:g} s")  # fmt: skip
    print(f"p99 vs baseline: {p99(times) / p99(base_times):.2f}x")
    print(f"ratios to target: p99 {p99(times) / TARGET_P99_MS:.3f} (of {TARGET_P99_MS:g} ms), "
          f"CPU {cpu_pct / TARGET_CPU_PCT:.3f} (of {TARGET_CPU_PCT:g}%)")  # fmt: skip


if __name__ == "__main__":
    main()
