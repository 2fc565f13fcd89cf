"""Facts as the reader finds them: each with the line it came from (the first sighting wins; a
structured one beats one from prose), and the parts of the text they belong to."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torchship.doctor.facts import GPUFact

_NOT_COLLECTED = {"could not collect", "n/a", "none", "", "unknown", "not found", "no"}


_VERSION = r"\d+(?:\.\d+){1,3}(?:[.\w]*?)(?:\+[\w.]+)?"


_TORCH_VERSION_RE = re.compile(r"^(\d+\.\d+(?:\.\d+)?(?:(?:a|b|rc|\.dev|\.post)\d+)*)(\+[\w.]+)?$")


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


@dataclass(frozen=True, slots=True)
class Part:
    kind: str  # collect-env, nvidia-smi, pip-list, traceback, docker, kernel-log, ...
    first: int  # 1-based line numbers
    last: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "lines": [self.first, self.last]}


@dataclass(slots=True)
class _Builder:
    """Facts as they are found: the first sighting of a fact wins, with its line; a structured
    sighting (a report's key, a table) always beats one from prose (`hint`)."""

    lines: list[str]
    values: dict[str, Any] = field(default_factory=dict)
    weak: dict[str, tuple[Any, str]] = field(default_factory=dict)
    smi_gpu: int | None = None  # the GPU whose rows an nvidia-smi table is showing
    q_gpus: int = 0  # GPUs counted in `nvidia-smi -q` output
    sources: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    gpus: list[GPUFact] = field(default_factory=list)
    gpu_source: str = ""
    parts: list[Part] = field(default_factory=list)

    def where(self, n: int) -> str:
        return f"line {n}: {self.lines[n - 1].strip()[:160]}"

    def put(self, key: str, value: Any, n: int) -> None:
        if value is None or key in self.values:
            return
        self.values[key] = value
        self.sources[key] = self.where(n)

    def hint(self, key: str, value: Any, n: int) -> None:
        """A fact from prose: used only where no structured part gives it."""
        if value is not None and key not in self.weak:
            self.weak[key] = (value, self.where(n))

    def settle(self) -> None:
        for key, (value, where) in self.weak.items():
            if key not in self.values:
                self.values[key] = value
                self.sources[key] = where

    def part(self, kind: str, first: int, last: int) -> None:
        if self.parts and self.parts[-1].kind == kind and self.parts[-1].last >= first - 2:
            self.parts[-1] = Part(kind, self.parts[-1].first, last)
        else:
            self.parts.append(Part(kind, first, last))

    def gpu(self, index: int, name: str, n: int, uuid: str | None = None) -> None:
        if any(g.index == index for g in self.gpus):
            return
        self.gpus.append(GPUFact(index=index, name=name.strip(), uuid=uuid))
        self.gpu_source = self.gpu_source or self.where(n)

    def mig(self, index: int, mode: str, n: int) -> None:
        for i, g in enumerate(self.gpus):
            if g.index == index and g.mig_mode is None:
                self.gpus[i] = GPUFact(g.index, g.name, g.uuid, g.cc, g.memory_mib, mode, g.ecc)
                if mode == "Enabled":
                    self.sources.setdefault("mig_mode", self.where(n))

    def package(self, name: str, version: str, n: int) -> None:
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key not in self.packages:
            self.packages[key] = version
            self.sources.setdefault(f"package:{key}", self.where(n))


def _value(text: str | None) -> str | None:
    if text is None:
        return None
    t = text.strip().strip("`*").strip()
    return None if t.lower() in _NOT_COLLECTED else t


def _bool(text: str | None) -> bool | None:
    t = (text or "").strip().strip("`*").strip().lower()
    return True if t in ("true", "yes") else False if t in ("false", "no") else None


def _torch_version(text: str) -> tuple[str, bool | None] | None:
    """'2.1.0+cu121 (True)' -> ('2.1.0+cu121', True); None when it is not a torch version."""
    m = re.match(r"^\s*v?([\w.+]{1,40})\s*(?:\((True|False)\))?", text)
    if not m or not _TORCH_VERSION_RE.match(m.group(1)):
        return None
    avail = None if m.group(2) is None else m.group(2) == "True"
    return m.group(1), avail


def _size(number: str, unit: str) -> int:
    return int(float(number) * _SIZE_UNITS.get(unit.lower(), 1))
