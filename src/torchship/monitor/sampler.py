"""GPU samples over a job's life, for its report: the supervisor of a local job reads the
GPUs every few seconds and appends one JSON line per GPU to `gpus.jsonl` in the run folder.
`job` is true on GPUs where a process of this job computes (TORCHSHIP_JOB_ID in its
environment), so a report shows the job's own GPUs on a shared machine.

    {"time": 1795000000.0, "gpu": 0, "uuid": "GPU-…", "name": "NVIDIA H100 80GB HBM3",
     "util_pct": 97.0, "mem_used_mib": 61234.0, "mem_total_mib": 81559.0, "temp_c": 71.0,
     "power_w": 612.5, "job": true}
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from torchship.conventions import GPU_FILE
from torchship.monitor.exporter import job_of_pids
from torchship.monitor.gpus import GpuReader, GpuSample

FILE = GPU_FILE
INTERVAL_ENV = "TORCHSHIP_GPU_SAMPLE_S"
DEFAULT_INTERVAL_S = 5.0


def interval_s() -> float:
    """TORCHSHIP_GPU_SAMPLE_S, or 5 s; anything not a positive number means the default."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def row(s: GpuSample, now: float, mine: bool) -> dict[str, object]:
    return {
        "time": round(now, 3), "gpu": s.index, "uuid": s.uuid, "name": s.name,
        "util_pct": s.util_pct, "mem_used_mib": round(s.fb_used_mib, 1),
        "mem_total_mib": round(s.fb_used_mib + s.fb_free_mib, 1), "temp_c": s.temp_c,
        "power_w": round(s.power_w, 1), "job": mine,
    }  # fmt: skip


class Sampler:
    """A daemon thread appending a line per GPU to `path` every `every_s` until stop()."""

    def __init__(
        self,
        reader: GpuReader,
        path: Path,
        job_id: str,
        every_s: float,
        clock: Callable[[], float] = time.time,
        proc: Path = Path("/proc"),
    ) -> None:
        self.reader, self.path, self.job_id = reader, path, job_id
        self.every_s, self.clock, self.proc = every_s, clock, proc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self.errors = 0

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def sample_once(self) -> None:
        now = self.clock()
        lines = [
            json.dumps(row(s, now, job_of_pids(s.pids, self.proc) == self.job_id))
            for s in self.reader.read()
        ]
        if lines:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                self.errors += 1
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
