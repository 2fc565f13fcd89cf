"""Facts about one machine: what the probe saw, or what a collect_env report said.

Versioned JSON (schema in docs/doctor.md). Every field may be None: a layer that is missing, or
a report that did not say. `sources` names where each non-empty field came from; a field that
was not observed but inferred from the compatibility matrix says so there ("inferred: ...").
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torchship.errors import UsageError

FACTS_SCHEMA_VERSION = 1
FACTS_KIND = "torchship-facts"


@dataclass(frozen=True, slots=True)
class GPUFact:
    index: int
    name: str
    uuid: str | None = None
    cc: str | None = None  # "9.0"
    memory_mib: int | None = None
    mig_mode: str | None = None  # "Enabled" | "Disabled"
    ecc: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    origin: str  # "probe" | "probe-fast" | "collect-env" | "report" (pasted free text)
    hostname: str | None = None
    os: str | None = None
    kernel: str | None = None
    arch: str | None = None
    glibc: str | None = None
    container: str | None = None  # "docker" | "podman" | "kubernetes" | ... ; None: not in one
    cgroup_memory_bytes: int | None = None
    cgroup_cpus: float | None = None
    driver: str | None = None
    driver_cuda: str | None = None  # the newest CUDA the driver supports ("12.4")
    gpus: tuple[GPUFact, ...] = ()
    device_nodes: tuple[str, ...] = ()  # /dev/nvidia0, /dev/nvidiactl, ...
    env: dict[str, str] = field(default_factory=dict)  # relevant variables, secrets redacted
    python: str | None = None
    packages: dict[str, str] = field(default_factory=dict)  # normalised name -> version
    torch: str | None = None  # "2.9.1+cu128"
    torch_cuda: str | None = None  # the CUDA torch was built with; None: not a CUDA build
    # "cuda" | "cpu" | "rocm"; None: not known (a report that does not say). A probe always
    # knows; facts files from before this field read it from torch_cuda (Facts.build).
    torch_build: str | None = None
    torch_arch: tuple[str, ...] | None = None
    torch_cudnn: str | None = None
    torch_nccl: str | None = None
    cuda_available: bool | None = None
    torch_device_count: int | None = None
    distributed_backends: tuple[str, ...] | None = None
    tf32_matmul: bool | None = None
    tf32_cudnn: bool | None = None
    loaded_libs: tuple[str, ...] = ()  # CUDA/cuDNN/NCCL libraries mapped into the process
    library_path_libs: tuple[str, ...] = ()  # the same libraries found on LD_LIBRARY_PATH
    system_cudnn: tuple[str, ...] = ()  # what collect_env calls "cuDNN version" (system files)
    shm_bytes: int | None = None
    ulimits: dict[str, str] = field(default_factory=dict)
    host_nvcc: str | None = None  # the host toolkit's nvcc: NOT what torch uses
    sources: dict[str, str] = field(default_factory=dict)
    schema_version: int = FACTS_SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = FACTS_KIND
        return data

    @property
    def is_cuda_build(self) -> bool:
        return self.torch_cuda is not None

    @property
    def build(self) -> str | None:
        """cuda | cpu | rocm, or None where the facts do not say which build torch is."""
        if self.torch_build or not self.torch:
            return self.torch_build
        if "+" in self.torch:
            build, _ = build_of_tag(self.torch.split("+", 1)[1])
            if build or not self.origin.startswith("probe"):
                return build
        if self.origin.startswith("probe"):
            return "cuda" if self.torch_cuda else "cpu"
        return "cuda" if self.torch_cuda else None


def build_of_tag(tag: str) -> tuple[str | None, str | None]:
    """(build, CUDA) a torch local tag names: `cu128` -> (cuda, 12.8); `cpu`, `cpu.cxx11.abi`
    -> cpu; `rocm6.2` -> rocm; anything else (NGC's `81ea7a4` git hash, `cu1`) -> not known."""
    m = re.fullmatch(r"cu(\d{2,3})", tag)
    if m:
        digits = m.group(1)
        return "cuda", f"{digits[:-1]}.{digits[-1]}"
    if tag == "cpu" or tag.startswith("cpu."):
        return "cpu", None
    if tag.startswith("rocm"):
        return "rocm", None
    return None, None


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "str | None": (str, type(None)),
    "str": (str,),
    "int": (int,),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
    "bool | None": (bool, type(None)),
}


def _check_types(facts: Facts, where: str) -> None:
    for f in fields(Facts):
        value = getattr(facts, f.name)
        kind = str(f.type)
        ok = True
        if kind in _TYPES:
            ok = isinstance(value, _TYPES[kind]) and not (
                isinstance(value, bool) and bool not in _TYPES[kind]
            )
        elif kind.startswith("tuple[str, ...]"):
            ok = (value is None and kind.endswith("None")) or (
                isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            )
        elif kind.startswith("dict[str, str]"):
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            )
        if not ok:
            raise UsageError(
                f"{where}: field {f.name!r} has the wrong type", "collect the facts again"
            )
    for g in facts.gpus:
        if not isinstance(g.index, int) or not isinstance(g.name, str):
            raise UsageError(f"{where}: a GPU entry is malformed", "collect the facts again")


def facts_from_json(data: Any, where: str) -> Facts:
    """Validate a facts document; raises UsageError (exit 2) naming what is wrong."""
    if not isinstance(data, dict) or data.get("kind") != FACTS_KIND:
        raise UsageError(
            f"{where}: not a torchship facts file", "create one with `torchship facts -o F`"
        )
    version = data.get("schema_version")
    if version != FACTS_SCHEMA_VERSION:
        raise UsageError(
            f"{where}: facts schema_version {version!r} is not {FACTS_SCHEMA_VERSION}",
            "collect the facts again with this torchship: `torchship facts -o F`",
        )
    known = {f.name for f in fields(Facts)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            kwargs[key] = (
                _tupled(value) if key not in ("env", "packages", "ulimits", "sources") else value
            )
    try:
        kwargs["gpus"] = tuple(GPUFact(**g) for g in data.get("gpus") or ())
        facts = Facts(**kwargs)
    except TypeError as e:
        raise UsageError(
            f"{where}: malformed facts ({e})", "collect them again: `torchship facts -o F`"
        ) from None
    _check_types(facts, where)
    return facts


def read_facts(path: Path) -> Facts:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})", "check the path") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(
            f"{path}: not JSON ({e})", "pass a file written by `torchship facts -o F`"
        ) from None
    return facts_from_json(data, str(path))
