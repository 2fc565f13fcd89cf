"""`torchship metrics serve`: a Prometheus exporter of GPU metrics, named as NVIDIA's DCGM
exporter names them (so its dashboards keep working), and of torchship's own job metrics.

GPU series carry dcgm-exporter's labels (gpu, UUID, device, modelName, Hostname) plus
`torchship_job`: the job id of the process using the GPU (TORCHSHIP_JOB_ID in its environment,
read from /proc), "" when none.

Under load: one snapshot — NVML and the job store read once, the exposition rendered
once per format — serves every scrape for `cache_s` seconds; nothing runs between scrapes. A
scrape that finds it stale takes the next one; scrapes arriving meanwhile get the previous
snapshot (at most one refresh old), or wait for that one refresh when there is none to give.
The server answers on a fixed pool of threads fed by a bounded queue: a connection that finds
the queue full gets 503, and a client has `timeout_s` in all to send its request and take the
answer, so idle or slow clients cannot hold the pool.

A store that cannot be opened or read (missing rights, not SQLite, damaged pages) costs only the
job metrics: the GPU metrics and the exporter's own series are still served, with
`torchship_store_up` 0, and one line on stderr says so each time that condition changes.
Without NVML the exporter still serves the job metrics; `torchship_gpu_metrics_enabled` is 0
and serve() says once, on stderr, why GPU metrics are off.
"""

from __future__ import annotations

import gzip
import queue
import socket
import socketserver
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchship.conventions import JOB_ID_ENV
from torchship.monitor.gpus import GpuReader, GpuSample
from torchship.state import JobStore, StoreError
from torchship.store_errors import file_problem

# (metric, sample field, type, help) — names, types and units as dcgm-exporter's
# etc/default-counters.csv declares them (github.com/NVIDIA/dcgm-exporter)
DCGM: tuple[tuple[str, str, str, str], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "util_pct", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "mem_copy_util_pct", "gauge", "Memory utilization (in %)."),
    ("DCGM_FI_DEV_FB_USED", "fb_used_mib", "gauge", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_FB_FREE", "fb_free_mib", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_GPU_TEMP", "temp_c", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "power_w", "gauge", "Power draw (in W)."),
    # a counter in dcgm-exporter; prometheus_client would rename a counter family to *_total,
    # so it is exposed untyped under its own name (rate() works the same)
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "energy_mj", "unknown",
     "Total energy consumption since boot (in mJ)."),
    ("DCGM_FI_DEV_SM_CLOCK", "sm_clock_mhz", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "mem_clock_mhz", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_XID_ERRORS", "xid", "gauge", "Value of the last XID error encountered."),
)  # fmt: skip
GPU_LABELS = ("gpu", "UUID", "device", "modelName", "Hostname", "torchship_job")
_JOB_MARK = JOB_ID_ENV.encode() + b"="
DEFAULT_PORT = 9401  # beside dcgm-exporter's 9400, so both can run on one node
# Below the 15 s scrape interval of Prometheus' example configuration (and its 10 s scrape
# timeout), so one Prometheus still sees new values on every scrape, while any number of
# scrapers within 5 s share one read of NVML and the store (a few ms of SQLite at any history:
# the finished jobs are counted by triggers, see JobStore.tallies).
DEFAULT_CACHE_S = 5.0
# A few, so that slow clients (each holding one for up to TIMEOUT_S) do not stall the rest;
# answering from a snapshot is ~0.2 ms of CPU (benchmarks/exporter.py), so more would only add
# switching between threads that wait on the one GIL.
WORKERS = 4
QUEUED = 256  # accepted connections waiting for a worker; beyond, 503 at once
BACKLOG = 512  # the listen backlog (capped by net.core.somaxconn), for bursts of connects
TIMEOUT_S = 5.0  # per connection, to send the request and take the answer (half Prometheus' 10)
HEAD_MAX_BYTES = 8192  # a scraper's request head is ~200 bytes; longer is answered 400
STORE_ERRORS = (StoreError, sqlite3.Error, OSError, ValueError)
# why a connection got no metrics: the queue was full (503), no request within the time, not a
# request, or the client went away
REJECTED = ("busy", "timeout", "bad_request", "dropped")


def job_of_pids(pids: Sequence[int], proc: Path = Path("/proc")) -> str:
    """The TORCHSHIP_JOB_ID in the environment of the first of these processes that has one."""
    for pid in pids:
        try:
            env = (proc / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or another user's (run the exporter as root on shared hosts)
            continue
        for item in env.split(b"\0"):
            if item.startswith(_JOB_MARK):
                return item.split(b"=", 1)[1].decode(errors="replace")
    return ""


def say(line: str) -> None:
    print(f"torchship metrics: {line}", file=sys.stderr, flush=True)


class Collector:
    """A prometheus_client collector: GPU metrics from `reader`, job metrics from the store.
    `say` hears one line each time the store goes down (with why) or comes back."""

    def __init__(
        self,
        reader: GpuReader | None,
        store: Callable[[], JobStore] | None,
        hostname: str | None = None,
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] = say,
    ) -> None:
        self.reader = reader
        self.store = store
        self.hostname = hostname or socket.gethostname()
        self.proc = proc
        self.clock = clock
        self.say = say
        self.store_down: str | None = None  # why the job metrics are off, while they are
        self._store: JobStore | None = None  # open between snapshots
        self._opened: tuple[int, int] | None = None  # the file it opened (device, inode)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        on = GaugeMetricFamily(
            "torchship_gpu_metrics_enabled", "1 when GPU metrics are read through NVML, 0 when off"
        )
        on.add_metric([], 1.0 if self.reader is not None else 0.0)
        yield on
        if self.reader is not None:
            yield from self.gpu_metrics(self.reader.read())
        if self.store is not None:
            yield from self.job_metrics()

    def gpu_metrics(self, samples: Sequence[GpuSample]) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        label_sets = [
            (str(s.index), s.uuid, f"nvidia{s.index}", s.name, self.hostname,
             job_of_pids(s.pids, self.proc))
            for s in samples
        ]  # fmt: skip
        for name, attr, typ, doc in DCGM:
            m = Metric(name, doc, typ)
            for s, labels in zip(samples, label_sets, strict=True):
                m.add_sample(name, dict(zip(GPU_LABELS, labels, strict=True)), getattr(s, attr))
            yield m

    def tallies(self) -> list[tuple[str, str, str, str, int, float]] | None:
        """The store's tallies, read through one connection kept open from one snapshot to the
        next; None when it cannot be opened or read (`say` hears why, once per change). A
        kept connection that fails, or whose file another took the place of (a repair, a
        restore), is opened again at once: what is said is what a fresh reader finds."""
        held = self._store
        if held is not None and (_identity(held.path) != self._opened or file_problem(held.path)):
            self.close()  # replaced, or damaged (a garbage WAL): a kept reader would not see it
        kept = self._store is not None
        rows, why = self._read()
        if rows is None and kept:
            rows, why = self._read()
        if rows is None:
            self._down(why)
            return None
        if self.store_down is not None:
            self.say("job metrics are back: the job store reads again")
        self.store_down = None
        return rows

    def _read(self) -> tuple[list[tuple[str, str, str, str, int, float]] | None, str]:
        assert self.store is not None
        if self._store is None:
            try:
                self._store = self.store()
                self._opened = _identity(self._store.path)
            except STORE_ERRORS as e:
                return None, _why(e, "cannot open the job store")
        try:
            return self._store.tallies(self.clock()), ""
        except STORE_ERRORS as e:
            why = _why(e, f"cannot read the job store {self._store.path}")
            self.close()
            return None, why

    def close(self) -> None:
        if self._store is not None:
            with suppress(*STORE_ERRORS):
                self._store.close()
            self._store = None

    def _down(self, why: str) -> None:
        if why != self.store_down:
            self.say(f"job metrics are off: {why}; serving the rest (torchship_store_up 0) and "
                     "trying again at each snapshot")  # fmt: skip
        self.store_down = why

    def job_metrics(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rows = self.tallies()
        up = GaugeMetricFamily("torchship_store_up", "1 when the job store was read, 0 when it "
                               "could not be (the job metrics are missing then)")  # fmt: skip
        up.add_metric([], 0.0 if rows is None else 1.0)
        yield up
        if rows is None:
            return
        states: Counter[tuple[str, str]] = Counter()
        decisions: Counter[tuple[str, str]] = Counter()
        cost: dict[str, float] = {}
        for state, site, placed, decision, n, usd in rows:
            states[(state, site)] += n
            decisions[(placed, decision)] += n
            if usd:
                cost[placed] = cost.get(placed, 0.0) + usd
        yield _family(GaugeMetricFamily, "torchship_jobs", "Jobs in the store by state and site",
                      ("state", "site"), states)  # fmt: skip
        yield _family(CounterMetricFamily, "torchship_placements", "Placement decisions by site "
                      "and decision (run, queue; asked: --site named)", ("site", "decision"),
                      decisions)  # fmt: skip
        yield _family(CounterMetricFamily, "torchship_cost_usd", "Cost accrued by jobs (GPUs × "
                      "the site's price per GPU-hour × time since submission)", ("site",),
                      {(site,): round(v, 6) for site, v in cost.items()})  # fmt: skip


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _why(e: Exception, what: str) -> str:
    """A StoreError's own message (it names the store), else `what: e`."""
    return e.message if isinstance(e, StoreError) else f"{what}: {e}"


def _family(cls: Any, name: str, doc: str, labels: tuple[str, ...],
            values: Mapping[Any, float]) -> Any:  # fmt: skip
    family = cls(name, doc, labels=list(labels))
    for key, v in sorted(values.items()):
        family.add_metric(list(key), v)
    return family


def health_metrics(snapshots: int, collect_s: float, rejected: Mapping[str, int]) -> Iterator[Any]:
    """The exporter's own series: snapshots taken, this one's collection time, and the
    connections answered without metrics, by reason."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    taken = CounterMetricFamily(
        "torchship_exporter_snapshots",
        "Snapshots taken (NVML and the job store read once, for every scrape within --cache-s)",
    )
    taken.add_metric([], snapshots)
    yield taken
    took = GaugeMetricFamily("torchship_exporter_collect_seconds",
                             "Time this snapshot took to read NVML and the job store")  # fmt: skip
    took.add_metric([], round(collect_s, 6))
    yield took
    yield _family(CounterMetricFamily, "torchship_exporter_rejected", "Connections answered "
                  "without metrics: busy (503, queue full), timeout, bad_request, dropped",
                  ("reason",), {(r,): rejected.get(r, 0) for r in REJECTED})  # fmt: skip


class Snapshot:
    """The families collected at one moment (a prometheus_client collector of them), rendered
    once per format asked for."""

    MAX_BODIES = 8  # formats kept; an odd Accept header past them is rendered, not kept

    def __init__(self, families: Sequence[Any], taken_at: float) -> None:
        self.families = tuple(families)
        self.taken_at = taken_at
        self._bodies: dict[tuple[str, bool], bytes] = {}
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Any]:
        return self.families

    def body(self, accept: str = "", gzipped: bool = False) -> tuple[bytes, str]:
        """(bytes, content type) in the format `accept` (an Accept header) asks for."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        key = (content_type, gzipped)
        with self._lock:
            data = self._bodies.get(key)
            if data is None:
                data = encoder(self)
                data = gzip.compress(data, compresslevel=6) if gzipped else data
                if len(self._bodies) < self.MAX_BODIES:
                    self._bodies[key] = data
        return data, content_type


class Snapshots:
    """A snapshot from `collect`, taken at most once every `max_age_s` (by `clock`)."""

    def __init__(self, collect: Callable[[], Iterable[Any]], max_age_s: float = DEFAULT_CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.collect = collect
        self.max_age_s = max_age_s
        self.clock = clock
        self.taken = 0  # snapshots taken
        self._current: Snapshot | None = None
        self._taking = False
        self._cond = threading.Condition()

    def get(self) -> Snapshot:
        with self._cond:
            while True:
                snap = self._current
                age = self.clock() - snap.taken_at if snap is not None else 0.0
                if snap is not None and age < self.max_age_s:
                    return snap
                if not self._taking:
                    self._taking = True
                    break
                if snap is not None and age < 2 * self.max_age_s:
                    return snap  # one refresh old, while that refresh runs
                self._cond.wait()
        try:
            snap = self._take()
        finally:
            with self._cond:
                self._taking = False
                self._cond.notify_all()
        return snap

    def _take(self) -> Snapshot:
        self.taken += 1
        snap = Snapshot(tuple(self.collect()), self.clock())
        with self._cond:
            self._current = snap
        return snap


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    accept: str  # the Accept header: text format or OpenMetrics
    gzip: bool


def parse_request(head: bytes) -> Request | None:
    """The request line and the two headers the exporter reads, from a request head up to its
    blank line; None when it is not one."""
    from prometheus_client.exposition import gzip_accepted

    text, blank, _ = head.decode("latin-1").partition("\r\n\r\n")
    lines = text.split("\r\n")
    words = lines[0].split(" ")
    if not blank or len(words) != 3 or not words[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            return None
        headers[name.strip().lower()] = value.strip()
    return Request(words[0], words[1].partition("?")[0], headers.get("accept", ""),
                   gzip_accepted(headers.get("accept-encoding", "")))  # fmt: skip


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
             headers: Sequence[str] = ()) -> bytes:  # fmt: skip
    head = (f"HTTP/1.1 {status}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", "Connection: close", *headers)  # fmt: skip
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body


def answer(req: Request | None, snapshots: Snapshots) -> bytes:
    """The whole response to one request."""
    if req is None:
        return response("400 Bad Request", b"not an HTTP/1.x request\n")
    if req.method not in ("GET", "HEAD"):
        return response("405 Method Not Allowed", b"GET /metrics\n", headers=("Allow: GET, HEAD",))
    if req.path not in ("/", "/metrics"):
        return response("404 Not Found", b"GET /metrics\n")
    body, content_type = snapshots.get().body(req.accept, req.gzip)
    out = response("200 OK", body, content_type, ("Content-Encoding: gzip",) if req.gzip else ())
    return out[: len(out) - len(body)] if req.method == "HEAD" else out


def read_head(conn: socket.socket, deadline: float) -> bytes:
    """A request head: up to its blank line, or HEAD_MAX_BYTES, or what came before the client
    stopped sending; TimeoutError past `deadline` (time.monotonic)."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < HEAD_MAX_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        chunk = conn.recv(HEAD_MAX_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head


class MetricsServer(socketserver.TCPServer):
    """/metrics on a fixed pool of `workers` threads. The accepting thread hands connections to
    them through a queue of at most `queued`, and answers 503 itself when it is full; each
    connection has `timeout_s` in all. Call .shutdown() to stop it."""

    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(self, host: str, port: int, collect: Callable[[], Iterable[Any]],
                 cache_s: float = DEFAULT_CACHE_S, workers: int = WORKERS, queued: int = QUEUED,
                 timeout_s: float = TIMEOUT_S) -> None:  # fmt: skip
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), socketserver.BaseRequestHandler)
        self.timeout_s = timeout_s
        self.rejected: Counter[str] = Counter()
        self._rejected_lock = threading.Lock()
        self.snapshots = Snapshots(lambda: self._families(collect), cache_s)
        self._pending: queue.Queue[socket.socket | None] = queue.Queue(queued)
        self._workers = [threading.Thread(target=self._work, name=f"torchship-metrics-{i}",
                                          daemon=True) for i in range(workers)]  # fmt: skip
        for w in self._workers:
            w.start()

    @property
    def server_port(self) -> int:
        return int(self.server_address[1])

    def _families(self, collect: Callable[[], Iterable[Any]]) -> Iterator[Any]:
        t = time.perf_counter()
        families = tuple(collect())
        took = time.perf_counter() - t
        with self._rejected_lock:
            rejected = dict(self.rejected)
        yield from families
        yield from health_metrics(self.snapshots.taken, took, rejected)

    def _reject(self, reason: str) -> None:
        with self._rejected_lock:
            self.rejected[reason] += 1

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accepting thread: queue the connection, or say 503 when the queue is full."""
        try:
            self._pending.put_nowait(request)
        except queue.Full:
            self._reject("busy")
            busy = response("503 Service Unavailable", b"busy\n", headers=("Retry-After: 1",))
            try:
                request.setblocking(False)  # a fresh socket's buffer takes it; never wait here
                request.send(busy)
            except OSError:
                pass
            self.shutdown_request(request)

    def _work(self) -> None:
        while (conn := self._pending.get()) is not None:
            try:
                self._serve(conn)
            finally:
                self.shutdown_request(conn)

    def _serve(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            head = read_head(conn, deadline)
            if not head:  # connected and closed: a port probe
                self._reject("dropped")
                return
            req = parse_request(head)
            if req is None:
                self._reject("bad_request")
            try:
                data = answer(req, self.snapshots)
            except Exception as e:  # a collector's bug fails this scrape, not the server
                data = response("500 Internal Server Error", f"collect failed: {e!r}\n".encode())
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            conn.sendall(data)  # the timeout bounds the whole call (Python >= 3.5)
        except TimeoutError:
            self._reject("timeout")
        except OSError:  # the client went away
            self._reject("dropped")

    def shutdown(self) -> None:
        """Stop accepting, close what is still queued, let the workers finish, close."""
        super().shutdown()
        while True:
            try:
                conn = self._pending.get_nowait()
            except queue.Empty:
                break
            if conn is not None:
                self.shutdown_request(conn)
        for _ in self._workers:
            self._pending.put(None)
        for w in self._workers:
            w.join(self.timeout_s + 1.0)
        self.server_close()


def read_only_store() -> JobStore:
    """The default job store, read only: the exporter never writes it."""
    return JobStore(readonly=True)


def serve(
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    reader: GpuReader | None = None,
    why_off: str = "",
    store: Callable[[], JobStore] | None = None,
    collector: Collector | None = None,
    cache_s: float = DEFAULT_CACHE_S,
    workers: int = WORKERS,
    timeout_s: float = TIMEOUT_S,
) -> MetricsServer:
    """Start the HTTP endpoint in a thread; returns the server (call .shutdown() to stop).
    Port 0 picks a free one (server.server_port)."""
    collector = collector or Collector(reader, store or read_only_store)
    if collector.reader is None:
        say(f"GPU metrics are off: {why_off}; serving job metrics only")
    server = MetricsServer(host, port, collector.collect, cache_s, workers, timeout_s=timeout_s)
    threading.Thread(target=server.serve_forever, name="torchship-metrics", daemon=True).start()
    return server
