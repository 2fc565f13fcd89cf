"""`torchship metrics serve`: a Prometheus exporter of GPU metrics, named as NVIDIA's DCGM
exporter names them (so its dashboards keep working), and of torchship's own job metrics.

GPU series carry dcgm-exporter's labels (gpu, UUID, device, modelName, Hostname) plus
`torchship_job`: the job id of the process using the GPU (TORCHSHIP_JOB_ID in its environment,
read from /proc), "" when none. Every scrape reads NVML and the job store afresh (a custom
collector: nothing is cached between scrapes, nothing runs between them).

Without NVML the exporter still serves the job metrics; `torchship_gpu_metrics_enabled` is 0
and serve() says once, on stderr, why GPU metrics are off.
"""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torchship.monitor.gpus import GpuReader, GpuSample
from torchship.state import JobStore

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
DEFAULT_PORT = 9401  # beside dcgm-exporter's 9400, so both can run on one node


def job_of_pids(pids: Sequence[int], proc: Path = Path("/proc")) -> str:
    """The TORCHSHIP_JOB_ID in the environment of the first of these processes that has one."""
    for pid in pids:
        try:
            env = (proc / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or another user's (run the exporter as root on shared hosts)
            continue
        for item in env.split(b"\0"):
            if item.startswith(b"TORCHSHIP_JOB_ID="):
                return item.split(b"=", 1)[1].decode(errors="replace")
    return ""


class Collector:
    """A prometheus_client collector: GPU metrics from `reader`, job metrics from the store."""

    def __init__(
        self,
        reader: GpuReader | None,
        store: Callable[[], JobStore] | None,
        hostname: str | None = None,
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.store = store
        self.hostname = hostname or socket.gethostname()
        self.proc = proc
        self.clock = clock

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

    def job_metrics(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        assert self.store is not None
        store = self.store()
        try:
            rows = store.tallies(self.clock())
        finally:
            store.close()
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


def _family(cls: Any, name: str, doc: str, labels: tuple[str, ...],
            values: Mapping[Any, float]) -> Any:  # fmt: skip
    family = cls(name, doc, labels=list(labels))
    for key, v in sorted(values.items()):
        family.add_metric(list(key), v)
    return family


def serve(
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    reader: GpuReader | None = None,
    why_off: str = "",
    store: Callable[[], JobStore] | None = JobStore,
    collector: Collector | None = None,
) -> Any:
    """Start the HTTP endpoint in a thread; returns the server (call .shutdown() to stop).
    Port 0 picks a free one (server.server_port)."""
    from prometheus_client import CollectorRegistry, start_http_server

    collector = collector or Collector(reader, store)
    if collector.reader is None:
        print(f"torchship metrics: GPU metrics are off: {why_off}; serving job metrics only",
              file=sys.stderr, flush=True)  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, host, registry=registry)
    return server
