"""GPU readings for the exporter, through an injectable seam.

`GpuReader.read()` returns one `GpuSample` per GPU. `NvmlReader` reads NVML (nvidia-ml-py,
imported lazily; the `nvml` extra); `FakeGpus` is the seam's fake for tests and benchmarks
(deterministic readings that move with time, like a training job's). `open_reader()` gives the
real reader, or None with the reason NVML is not usable here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    util_pct: float  # DCGM_FI_DEV_GPU_UTIL
    mem_copy_util_pct: float  # DCGM_FI_DEV_MEM_COPY_UTIL
    fb_used_mib: float  # DCGM_FI_DEV_FB_USED
    fb_free_mib: float  # DCGM_FI_DEV_FB_FREE
    temp_c: float  # DCGM_FI_DEV_GPU_TEMP
    power_w: float  # DCGM_FI_DEV_POWER_USAGE
    energy_mj: float  # DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (since the driver loaded)
    sm_clock_mhz: float  # DCGM_FI_DEV_SM_CLOCK
    mem_clock_mhz: float  # DCGM_FI_DEV_MEM_CLOCK
    xid: int = 0  # DCGM_FI_DEV_XID_ERRORS: the last XID seen (0: none)
    pids: tuple[int, ...] = field(default_factory=tuple)  # compute processes on it


class GpuReader(Protocol):
    def read(self) -> Sequence[GpuSample]: ...


class FakeGpus:
    """`count` GPUs whose readings follow a slow sine, so plots and alerts have shape."""

    def __init__(self, count: int, name: str = "NVIDIA H100 80GB HBM3", clock: Any = None) -> None:
        import time

        self.count = count
        self.name = name
        self.clock = clock or time.monotonic
        self.pids: dict[int, tuple[int, ...]] = {}  # GPU index → pids, set by tests
        self.xids: dict[int, int] = {}

    def read(self) -> list[GpuSample]:
        t = self.clock()
        out = []
        for i in range(self.count):
            wave = 0.5 + 0.5 * math.sin(t / 30 + i)
            used = 20_000 + 50_000 * wave
            out.append(GpuSample(
                index=i, uuid=f"GPU-00000000-0000-0000-0000-{i:012d}", name=self.name,
                util_pct=round(60 + 40 * wave), mem_copy_util_pct=round(30 * wave),
                fb_used_mib=round(used), fb_free_mib=round(81_559 - used),
                temp_c=round(45 + 30 * wave), power_w=round(150 + 500 * wave, 1),
                energy_mj=round(t * 400_000), sm_clock_mhz=1980, mem_clock_mhz=2619,
                xid=self.xids.get(i, 0), pids=self.pids.get(i, ()),
            ))  # fmt: skip
        return out


class NvmlReader:
    """NVML through nvidia-ml-py. XID errors come from an NVML event set, drained each read."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i)
                        for i in range(nvml.nvmlDeviceGetCount())]  # fmt: skip
        self.last_xid = [0] * len(self.handles)
        self.events: Any = None
        try:
            self.events = nvml.nvmlEventSetCreate()
            for h in self.handles:
                nvml.nvmlDeviceRegisterEvents(h, nvml.nvmlEventTypeXidCriticalError, self.events)
        except nvml.NVMLError:
            self.events = None  # not supported (some vGPUs, MIG): XIDs stay 0

    def _drain_xids(self) -> None:
        if self.events is None:
            return
        nvml = self.nvml
        while True:
            try:
                ev = nvml.nvmlEventSetWait_v2(self.events, 0)
            except nvml.NVMLError:
                return  # timeout: nothing pending
            for i, h in enumerate(self.handles):
                if nvml.nvmlDeviceGetUUID(ev.device) == nvml.nvmlDeviceGetUUID(h):
                    self.last_xid[i] = int(ev.eventData)

    def read(self) -> list[GpuSample]:
        nvml = self.nvml
        self._drain_xids()
        out = []
        for i, h in enumerate(self.handles):
            util = nvml.nvmlDeviceGetUtilizationRates(h)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            try:
                procs = nvml.nvmlDeviceGetComputeRunningProcesses(h)
            except nvml.NVMLError:
                procs = []
            out.append(GpuSample(
                index=i, uuid=_text(nvml.nvmlDeviceGetUUID(h)),
                name=_text(nvml.nvmlDeviceGetName(h)),
                util_pct=float(util.gpu), mem_copy_util_pct=float(util.memory),
                fb_used_mib=mem.used / 2**20, fb_free_mib=mem.free / 2**20,
                temp_c=float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
                power_w=nvml.nvmlDeviceGetPowerUsage(h) / 1000,
                energy_mj=float(_maybe(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, h)),
                sm_clock_mhz=float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
                mem_clock_mhz=float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
                xid=self.last_xid[i], pids=tuple(int(p.pid) for p in procs),
            ))  # fmt: skip
        return out


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _maybe(nvml: Any, fn: Any, h: Any) -> float:
    try:
        return float(fn(h))
    except nvml.NVMLError:
        return 0.0  # before Volta: no energy counter


def open_reader() -> tuple[NvmlReader | None, str]:
    """The NVML reader, or None and why GPU metrics are off."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install 'torchship[nvml]')"
    try:
        pynvml.nvmlInit()
        return NvmlReader(pynvml), ""
    except pynvml.NVMLError as e:
        return None, f"NVML did not start ({e}): no NVIDIA driver here"
