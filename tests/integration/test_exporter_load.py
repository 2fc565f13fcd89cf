"""The exporter under load (issue 17): 50 concurrent scrapers over real sockets against the real
server on 127.0.0.1, 8 fake GPUs and 5,000 jobs in a real SQLite store. The server's threads
stay bounded, the store is read once for the whole run (one snapshot per interval), and the
p99 stays far under a limit generous enough for a loaded 2-core machine. Before the fix the
server started a thread per connection and read the store on every scrape: 50 threads, one
read per scrape, p99 in seconds. benchmarks/exporter.py is the full-size measurement."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO
from tests.prom import samples, scrape
from torchship.monitor.exporter import DEFAULT_CACHE_S, Collector, serve
from torchship.monitor.gpus import FakeGpus
from torchship.state import JobStore

BENCH = REPO / "benchmarks/exporter.py"
SCRAPERS = 50
JOBS = 5_000
SECONDS = 3.0
EVERY_S = 0.25  # each scraper's own interval: 200 scrapes/s in all
P99_LIMIT_MS = 1000.0  # the benchmark's target is 100 ms with 200 scrapers; this is a floor
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def fill(path: Path, n: int) -> None:
    """n jobs in a real store, filled as the benchmark fills its 25,000 (one place for it)."""
    spec = importlib.util.spec_from_file_location("bench_exporter", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_exporter"] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    bench.fill_store(path, n)


async def one(port: int) -> tuple[float, bool]:
    loop = asyncio.get_running_loop()
    t = time.perf_counter()
    with socket.socket() as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(10):
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, REQUEST)
                data = b""
                while chunk := await loop.sock_recv(sock, 65536):
                    data += chunk
            ok = data[:12] in (b"HTTP/1.0 200", b"HTTP/1.1 200") and b"torchship_jobs{" in data
        except (OSError, TimeoutError):
            ok = False
    return (time.perf_counter() - t) * 1e3, ok


async def load(port: int) -> tuple[list[float], int, int]:
    """(latencies in ms, failures, most threads seen in this process)."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + SECONDS
    times: list[float] = []
    failures = 0
    threads = threading.active_count()

    async def scraper(phase: float) -> None:
        nonlocal failures, threads
        await asyncio.sleep(phase)
        while loop.time() < stop:
            due = loop.time() + EVERY_S
            ms, ok = await one(port)
            times.append(ms)
            failures += not ok
            threads = max(threads, threading.active_count())
            await asyncio.sleep(max(0.0, due - loop.time()))

    rng = random.Random(17)
    await asyncio.gather(*(scraper(rng.uniform(0, EVERY_S)) for _ in range(SCRAPERS)))
    return times, failures, threads


def test_bounded_under_concurrent_scrapers(tmp_path: Path) -> None:
    fill(tmp_path / "jobs.db", JOBS)
    opened = []

    def store() -> JobStore:
        opened.append(time.monotonic())
        return JobStore(tmp_path / "jobs.db")

    threads_before = threading.active_count()
    # the default cache (5 s) spans the whole run: the store is read once, by the first scrape
    server = serve(0, "127.0.0.1", collector=Collector(FakeGpus(8), store, "node-a"))
    try:
        times, failures, threads = asyncio.run(load(server.server_port))
        text = scrape(server.server_port)
        intervals = 1 + int((time.monotonic() - opened[0]) / DEFAULT_CACHE_S)
    finally:
        server.shutdown()
    p99 = statistics.quantiles(times, n=100)[98]
    seen = (f"{len(times)} scrapes, {failures} failed, p99 {p99:.0f} ms, "
            f"{threads - threads_before} server threads, {len(opened)} store reads")  # fmt: skip
    assert len(times) > SCRAPERS * 5 and failures == 0, seen
    # the accepting thread and a fixed pool (4), never one per connection
    assert threads - threads_before <= 6, seen
    assert len(opened) <= intervals, seen  # one snapshot per interval: 1 unless it ran late
    assert p99 < P99_LIMIT_MS, seen
    got = samples(text)
    assert got["torchship_exporter_snapshots_total"] == [({}, len(opened))]
    assert sum(v for _, v in got["torchship_jobs"]) == JOBS
    assert threading.active_count() <= threads_before + 1  # the workers are gone (the
    # accepting thread may still be on its way out of its last poll)
