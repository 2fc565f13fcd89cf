"""Probing this host. All of the doctor's I/O lives here; every fact records where it came from.

So far: the NVIDIA driver version and the GPUs (what `torchship init --detect` records). The
doctor issue extends this module with the rest of the layers.

Sources, in order (the first that answers wins, and is named in the result):
  driver: /sys/module/nvidia/version -> /proc/driver/nvidia/version -> NVML -> nvidia-smi
  GPUs:   NVML (name + compute capability) -> nvidia-smi --query-gpu=name,compute_cap
          -> /proc/driver/nvidia/gpus/*/information (name only)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CommandRunner = Callable[[Sequence[str]], str | None]
"""Runs a command and returns its stdout, or None when it is missing or fails."""

_PROC_DRIVER_RE = re.compile(r"Kernel Module(?: for [\w-]+)?\s+(\d+\.\d+(?:\.\d+)?)")
_VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?$")


@dataclass(frozen=True, slots=True)
class Fact:
    value: str
    source: str


@dataclass(frozen=True, slots=True)
class ProbedGPU:
    name: str
    cc: str | None  # "9.0"; None when the source does not say
    source: str


def run_command(argv: Sequence[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text("utf-8", errors="replace")
    except OSError:
        return None


def _nvml_driver() -> str | None:
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError and friends: no driver, no device, no permission
        return None


def _nvml_gpus() -> list[ProbedGPU] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            out = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                out.append(ProbedGPU(name, f"{major}.{minor}", "nvml"))
            return out
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def driver_version(
    root: Path = Path("/"),
    run: CommandRunner = run_command,
    nvml: Callable[[], str | None] = _nvml_driver,
) -> Fact | None:
    """The loaded NVIDIA kernel driver's version, or None when there is no driver."""
    text = _read(root / "sys/module/nvidia/version")
    if text and _VERSION_RE.match(text.strip()):
        return Fact(text.strip(), "/sys/module/nvidia/version")
    text = _read(root / "proc/driver/nvidia/version")
    if text and (m := _PROC_DRIVER_RE.search(text)):
        return Fact(m.group(1), "/proc/driver/nvidia/version")
    v = nvml()
    if v and _VERSION_RE.match(v.strip()):
        return Fact(v.strip(), "nvml")
    out = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out:
        first = out.strip().splitlines()[0].strip() if out.strip() else ""
        if _VERSION_RE.match(first):
            return Fact(first, "nvidia-smi")
    return None


def gpus(
    root: Path = Path("/"),
    run: CommandRunner = run_command,
    nvml: Callable[[], list[ProbedGPU] | None] = _nvml_gpus,
) -> list[ProbedGPU]:
    """The GPUs this host shows, with compute capability where the source tells it."""
    found = nvml()
    if found:
        return found
    out = run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    if out and out.strip():
        result = []
        for line in out.strip().splitlines():
            name, _, cc = line.rpartition(",")
            if not name:
                name, cc = cc, ""
            cc = cc.strip()
            result.append(
                ProbedGPU(name.strip(), cc if re.match(r"^\d+\.\d$", cc) else None, "nvidia-smi")
            )
        return result
    result = []
    for info in sorted((root / "proc/driver/nvidia/gpus").glob("*/information")):
        text = _read(info) or ""
        m = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        if m:
            result.append(ProbedGPU(m.group(1).strip(), None, str(info.relative_to(root))))
    return result
