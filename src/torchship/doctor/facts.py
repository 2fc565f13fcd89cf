"""Facts about one machine: what the probe saw, or what a collect_env report said.

Versioned JSON (schema in docs/doctor.md). Every field may be None: a layer that is missing, or
a report that did not say. `sources` names where each non-empty field came from; a field that
was not observed but inferred from the compatibility matrix says so there ("inferred: ...").
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torchship._files import parse_json, read_user_text
from torchship.errors import UsageError, excerpt, key_text

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


# What a facts file holds: the fields of Facts (and of GPUFact for each GPU), each of one JSON
# type. Every key is checked, unknown ones too: a facts file is written by `torchship facts`
# alone, so a key it does not know is a typo or another tool's file, never something to ignore.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
    "bool | None": (bool, type(None)),
}
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
# Version fields that checks turn into numbers (int(torch_cuda.split(".")[0]) for the driver
# floor): digits and dots, as the probe and nvidia-smi write them.
_DOTTED = re.compile(r"\d{1,6}(\.\d{1,6}){0,3}")
_DOTTED_FIELDS = ("torch_cuda", "driver_cuda")
_EXTRA_KEYS = ("kind",)  # written by to_json, not a field
_HINT = "collect the facts again with this torchship: `torchship facts -o F`"


def _bad(where: str, field_path: str, problem: str) -> UsageError:
    return UsageError(f"{where}:{field_path}: {problem}", _HINT)


def _unknown(where: str, prefix: str, key: str, known: list[str]) -> UsageError:
    import difflib  # only for a misspelt key

    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else _HINT
    return UsageError(f"{where}:{prefix}{key_text(key)}: unknown field", hint)


_JSON_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), "a value")


def _value(kind: str, value: Any, where: str, path: str) -> Any:
    """The JSON `value` of a field typed `kind` as Facts holds it (lists as tuples), or
    UsageError naming the field and what it should be."""
    if kind in _JSON_TYPES:
        allowed = _JSON_TYPES[kind]
        ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
        if ok and isinstance(value, float) and not math.isfinite(value):
            raise _bad(where, path, f"is {value}, not a finite number")
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(t, "null") for t in allowed)
            raise _bad(where, path, f"must be {want}, not {_json_kind(value)}")
        return value
    if kind.startswith("tuple[str, ...]"):
        if value is None and kind.endswith("None"):
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(where, path, f"must be a list of strings, not {_json_kind(value)}")
        return tuple(value)
    if kind.startswith("dict[str, str]"):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _bad(where, path, "must be an object of strings")
        return dict(value)
    raise AssertionError(f"facts field {path} of type {kind} has no JSON form")  # a bug


def _gpus(raw: Any, where: str) -> tuple[GPUFact, ...]:
    if not isinstance(raw, list):
        raise _bad(where, "gpus", f"must be a list of objects, not {_json_kind(raw)}")
    known = {f.name: str(f.type) for f in fields(GPUFact)}
    out = []
    for i, g in enumerate(raw):
        if not isinstance(g, dict):
            raise _bad(where, f"gpus[{i}]", f"must be an object, not {_json_kind(g)}")
        for key in g:
            if key not in known:
                raise _unknown(where, f"gpus[{i}].", key, list(known))
        for name in ("index", "name"):
            if name not in g:
                raise _bad(where, f"gpus[{i}].{name}", "missing")
        kw = {k: _value(known[k], v, where, f"gpus[{i}].{k}") for k, v in g.items()}
        out.append(GPUFact(**kw))
    return tuple(out)


def facts_from_json(data: Any, where: str) -> Facts:
    """Validate a facts document; raises UsageError (exit 2) naming the field that is wrong."""
    if not isinstance(data, dict) or data.get("kind") != FACTS_KIND:
        raise UsageError(
            f"{where}: not a torchship facts file", "create one with `torchship facts -o F`"
        )
    version = data.get("schema_version")
    if version != FACTS_SCHEMA_VERSION or isinstance(version, bool):
        raise UsageError(
            f"{where}: facts schema_version {excerpt(version)} is not {FACTS_SCHEMA_VERSION}",
            _HINT,
        )
    known = {f.name: str(f.type) for f in fields(Facts)}
    for key in data:
        if key not in known and key not in _EXTRA_KEYS:
            raise _unknown(where, "", key, list(known))
    if "origin" not in data:
        raise _bad(where, "origin", "missing")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _EXTRA_KEYS:
            continue
        kwargs[key] = (
            _gpus(value, where) if key == "gpus" else _value(known[key], value, where, key)
        )
    for key in _DOTTED_FIELDS:
        value = kwargs.get(key)
        if value is not None and not _DOTTED.fullmatch(value):
            raise _bad(where, key, f"{excerpt(value)} is not a version such as '12.8'")
    return Facts(**kwargs)


def read_facts(path: Path) -> Facts:
    """A facts file (bounded: see torchship._files)."""
    text = read_user_text(path, "facts file", "create one with `torchship facts -o F`")
    return facts_from_json(parse_json(text, str(path), _HINT), str(path))


def platform_of(f: Facts) -> str | None:
    """linux | windows | macos, from what the facts say; None when they do not."""
    os_ = (f.os or "").lower()
    if "windows" in os_:
        return "windows"
    if "mac" in os_ or "darwin" in os_:
        return "macos"
    if os_ or f.glibc:
        return "linux"
    return None
