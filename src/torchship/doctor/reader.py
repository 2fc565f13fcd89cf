"""Read what people paste: a GitHub issue body, a chat message, a log. Find the parts in it
(collect_env of any version, `transformers-cli env`, tracebacks, nvidia-smi tables and -q/-L
output, pip list/freeze, conda list, docker/compose/Kubernetes snippets, environment dumps,
ldd/ldconfig, dmesg/journal lines) and turn each into facts, every fact with the line it came
from (`Facts.sources`).

Partial input is normal: a fact the text does not give stays None, and `unseen()` says which of
the facts that decide most failures were not in it. Nothing here guesses: a torch version
without a build tag is interpreted only where the platform is known (Linux x86_64 from PyPI: that
release's default CUDA build; Windows and macOS PyPI wheels: CPU builds), and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torchship.compat.matrix import Matrix
from torchship.doctor.facts import Facts, GPUFact
from torchship.doctor.signatures import AMPERE_NAME

MAX_STRUCTURED_LINE = 2000  # longer lines (progress bars, minified JSON) carry no facts
_NOT_COLLECTED = {"could not collect", "n/a", "none", "", "unknown", "not found", "no"}
_VERSION = r"\d+(?:\.\d+){1,3}(?:[.\w]*?)(?:\+[\w.]+)?"
_TORCH_VERSION_RE = re.compile(r"^(\d+\.\d+(?:\.\d+)?(?:(?:a|b|rc|\.dev|\.post)\d+)*)(\+[\w.]+)?$")

# collect_env keys (torch 1.x to 2.15, vLLM's copy) and the bullets of issue templates and
# `transformers-cli env`, normalised: lower case, no "(e.g., ...)", no markup.
_KEYS = {
    "pytorch version": "torch",
    "pytorch version (gpu?)": "torch",
    "torch version": "torch",
    "torch": "torch",
    "pytorch": "torch",
    "cuda used to build pytorch": "built_cuda",
    "rocm used to build pytorch": "built_rocm",
    "is cuda available": "cuda_available",
    "cuda available": "cuda_available",
    "cuda runtime version": "host_nvcc",
    "nvidia driver version": "driver",
    "driver version": "driver",
    "gpu models and configuration": "gpus",
    "gpu model": "gpus",
    "cudnn version": "system_cudnn",
    "os": "os",
    "platform": "platform",
    "python platform": "platform",
    "libc version": "libc",
    "python version": "python",
    "python": "python",
    "cuda_module_loading set to": "CUDA_MODULE_LOADING",
}
_KEY_RE = re.compile(
    r"^\s*(?:[-*+]\s+)?(?:\*\*)?`?([A-Za-z][A-Za-z0-9 _/()?'.,-]{0,60}?)`?(?:\*\*)?\s*:\s*(.*)$"
)
_EG_RE = re.compile(r"\s*\((?:e\.g\.|eg|e\.g)[^)]*\)", re.IGNORECASE)
_GPU_LINE_RE = re.compile(r"^\s*GPU (\d+):\s*(.+?)(?:\s*\(UUID:\s*([^)]+)\))?\s*$")
_MIG_LINE_RE = re.compile(r"^\s*MIG \S+\s+Device\s+\d+:")
_SMI_HEADER_RE = re.compile(
    r"NVIDIA-SMI\s+(?P<smi>[\d.]+)\s+Driver Version:\s*(?P<driver>[\d.]+)"
    r"(?:\s+CUDA Version:\s*(?P<cuda>[\d.]+|N/A))?"
)
_SMI_ROW_RE = re.compile(
    r"^\|\s*(?P<index>\d+)\s+(?P<name>[A-Za-z][\w .()/-]*?)\s+(?:On|Off)\s*\|\s*"
    r"(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d)"
)
_SMI_Q_RE = re.compile(r"^\s*(Driver Version|CUDA Version|Product Name)\s{2,}:\s*(\S.*?)\s*$")
_PROC_DRIVER_RE = re.compile(
    r"NVRM(?: version)?:? (?:loading )?NVIDIA UNIX [\w-]+ Kernel Module(?: for [\w-]+)?"
    r"\s+(\d+\.\d+(?:\.\d+)?)"
)
_FREEZE_RE = re.compile(
    r"^\s*(?:\[(?:pip\d?|conda)\]\s+)?([A-Za-z0-9][A-Za-z0-9._-]{0,80})==(\S{1,60})\s*$"
)
_PIP_LIST_RE = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]{0,80})\s+(\d[\w.+!-]{0,60})(?:\s+\S.*)?$"
)
_CONDA_RE = re.compile(
    r"^\s*(?:\[conda\]\s+)?([A-Za-z0-9][A-Za-z0-9._-]{0,80})\s+(\d[\w.+!-]{0,60})\s+(\S{1,120})(?:\s+(\S+))?\s*$"
)
_PIP_HEADER_RE = re.compile(r"^\s*Package\s+Version\b")
_CONDA_HEADER_RE = re.compile(r"^\s*#\s*Name\s+Version\s+Build")
_DASHES_RE = re.compile(r"^\s*-{3,}\s+-{3,}")
_ENV_KEYS = (
    r"CUDA_VISIBLE_DEVICES|NVIDIA_VISIBLE_DEVICES|NVIDIA_DRIVER_CAPABILITIES|LD_LIBRARY_PATH|"
    r"LD_PRELOAD|CUDA_HOME|CUDA_PATH|TORCH_CUDA_ARCH_LIST|NVIDIA_TF32_OVERRIDE|"
    r"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE|NCCL_\w+|TORCH_NCCL_\w+|PYTORCH_\w+|CUDA_MODULE_LOADING"
)
_ENV_RE = re.compile(
    rf"(?:^|\s|-e\s*|--env[= ]\s*|export\s+|environ\[['\"])({_ENV_KEYS})(?:['\"]\])?\s*=\s*"
    r"(\"[^\"]{0,400}\"|'[^']{0,400}'|[^\s;&|]{0,400})"
)
_DOCKER_RE = re.compile(
    r"\b(docker|podman|nvidia-docker)\s+(?:container\s+)?run\b(?P<args>.{0,1500})"
)
_SHM_RE = re.compile(r"--shm-size[= ]\s*['\"]?(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\b", re.IGNORECASE)
_CONTAINER_PROMPT_RE = re.compile(r"^\s*root@[0-9a-f]{12}:")
_CONTAINER_HINT_RE = re.compile(
    r"\b(?:inside (?:the |a |my )?(?:docker|container)|in (?:a |the |my )?docker container|"
    r"docker container|nvcr\.io/|FROM nvidia/cuda|/\.dockerenv|docker-compose|"
    r"kubectl exec|in (?:a|the|my) (?:k8s|kubernetes) pod)",
    re.IGNORECASE,
)
_LDD_RE = re.compile(r"^\s*(lib[\w.+-]+\.so[.\d]*)\s+=>\s+(/\S+)")
_PY_PATH_RE = re.compile(
    r"[/\\]python(\d)\.?(\d{1,2})[/\\](?:site|dist)-packages[/\\]", re.IGNORECASE
)
_PY_TAG_RE = re.compile(
    r"\bcpython-(\d)(\d{1,2})-(x86_64|aarch64)-linux-gnu\b|\bcp(\d)(\d{1,2})-win_amd64\b"
)
_WIN_PATH_RE = re.compile(r"\b[A-Z]:\\(?:[^\\\n]{1,80}\\){1,20}")
_MAC_HINT_RE = re.compile(
    r"\b(?:macOS|Darwin|macosx_\d+|/opt/homebrew/|/Users/\w+/)", re.IGNORECASE
)
_PYTHON_LINE_RE = re.compile(r"^\s*Python (3\.\d{1,2}\.\d{1,2})\b")
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
    """Facts as they are found: the first sighting of a fact wins, with its line."""

    lines: list[str]
    values: dict[str, Any] = field(default_factory=dict)
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
    t = (_value(text) or "").lower()
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


# --- one pass per line kind ------------------------------------------------------------------


def _key_values(b: _Builder, n: int, line: str) -> bool:
    m = _KEY_RE.match(line)
    if not m:
        return False
    key = _EG_RE.sub("", m.group(1)).strip().lower()
    what = _KEYS.get(key)
    if what is None:
        return False
    if what == "torch" and _torch_version(m.group(2)) is None:
        return False
    if not _torch_key(b, n, what, m.group(2)):
        _machine_key(b, n, what, m.group(2))
    b.part("collect-env", n, n)
    return True


def _torch_key(b: _Builder, n: int, what: str, raw: str) -> bool:
    """The keys about torch's build; False for any other key."""
    v = _value(raw)
    if what == "torch":
        tv = _torch_version(raw)
        if tv is not None:
            b.put("torch", tv[0], n)
            b.put("cuda_available", tv[1], n)
    elif what == "built_cuda":
        if raw.strip().lower() == "none":
            b.put("build", "cpu", n)
        elif v and re.match(r"^\d+\.\d+", v):
            b.put("build", "cuda", n)
            b.put("torch_cuda", ".".join(v.split(".")[:2]), n)
    elif what == "built_rocm":
        if v and re.match(r"^\d", v):
            b.put("build", "rocm", n)
    elif what == "cuda_available":
        b.put("cuda_available", _bool(raw), n)
    elif what == "host_nvcc":
        if v and re.match(r"^\d+\.\d+", v):
            b.put("host_nvcc", v, n)
    else:
        return False
    return True


def _machine_key(b: _Builder, n: int, what: str, raw: str) -> None:
    v = _value(raw)
    if what == "driver":
        if v and re.match(r"^\d{3}\.\d+", v):
            b.put("driver", v.split()[0], n)
    elif what == "gpus":
        g = _GPU_LINE_RE.match(raw)
        if g:
            b.gpu(int(g.group(1)), g.group(2), n, g.group(3))
        elif v and not v.lower().startswith(("probably", "no ")) and re.search(r"[A-Za-z]", v):
            b.gpu(0, v, n)
    elif what == "system_cudnn":
        if v and not v.lower().startswith("probably"):
            b.put("system_cudnn", (v,), n)
    elif what == "os":
        b.put("os", v, n)
        arch = re.search(r"\b(x86_64|aarch64|arm64|AMD64)\b", raw)
        if arch:
            b.put("arch", "x86_64" if arch.group(1) == "AMD64" else arch.group(1), n)
    elif what == "platform":
        _platform(b, n, raw)
    elif what == "libc":
        if v and v.startswith("glibc-"):
            b.put("glibc", v.split("-", 1)[1], n)
    elif what == "python":
        m2 = re.match(r"^\s*(3\.\d{1,2}(?:\.\d{1,2})?)", raw)
        if m2:
            b.put("python", m2.group(1), n)
        if "32-bit" in raw:
            b.put("python_bits", "32", n)
    elif what == "CUDA_MODULE_LOADING" and v:
        b.env.setdefault(what, v)


def _platform(b: _Builder, n: int, raw: str) -> None:
    low = raw.lower()
    if "windows" in low:
        b.put("os", "Windows", n)
    elif "macos" in low or "darwin" in low:
        b.put("os", "macOS", n)
    elif "linux" in low:
        b.put("os", "Linux", n)
    for arch in ("x86_64", "aarch64", "arm64", "amd64"):
        if arch in low:
            b.put("arch", "x86_64" if arch == "amd64" else arch, n)
            break
    g = re.search(r"glibc(\d+\.\d+)", low)
    if g:
        b.put("glibc", g.group(1), n)


def _nvidia_smi(b: _Builder, n: int, line: str) -> bool:
    m = _SMI_HEADER_RE.search(line)
    if m:
        b.put("driver", m.group("driver"), n)
        if m.group("cuda") and m.group("cuda") != "N/A":
            b.put("driver_cuda", m.group("cuda"), n)
        b.part("nvidia-smi", n, n)
        return True
    m = _SMI_ROW_RE.match(line)
    if m:
        b.gpu(int(m.group("index")), m.group("name"), n)
        b.part("nvidia-smi", n, n)
        return True
    if line.startswith("|") and b.gpus and re.search(r"\|\s*(Enabled|Disabled)\s*\|?\s*$", line):
        mode = "Enabled" if "Enabled" in line else "Disabled"
        last = b.gpus[-1]
        if last.mig_mode is None:
            b.gpus[-1] = GPUFact(last.index, last.name, last.uuid, mig_mode=mode)
            b.sources.setdefault("mig_mode", b.where(n))
        return True
    m = _SMI_Q_RE.match(line)
    if m:
        key, value = m.group(1), m.group(2)
        if key == "Driver Version":
            b.put("driver", value, n)
        elif key == "CUDA Version":
            b.put("driver_cuda", value, n)
        else:
            b.gpu(len(b.gpus), value, n)
        b.part("nvidia-smi-q", n, n)
        return True
    m = _GPU_LINE_RE.match(line)
    if m and re.search(r"[A-Za-z]{2}", m.group(2)):
        b.gpu(int(m.group(1)), m.group(2), n, m.group(3))
        b.part("gpu-list", n, n)
        return True
    if _MIG_LINE_RE.match(line) and b.gpus:
        last = b.gpus[-1]
        b.gpus[-1] = GPUFact(last.index, last.name, last.uuid, mig_mode="Enabled")
        b.sources.setdefault("mig_mode", b.where(n))
        return True
    if "NVIDIA-SMI has failed" in line or "Failed to initialize NVML" in line:
        b.sources.setdefault("nvidia-smi-failed", b.where(n))
        b.part("nvidia-smi", n, n)
        return True
    m = _PROC_DRIVER_RE.search(line)
    if m:
        b.put("driver", m.group(1), n)
        b.part("kernel-log", n, n)
        return True
    return False


def _packages(b: _Builder, n: int, line: str, block: str | None) -> str | None:
    """Package lines; returns the kind of block the line continues (pip-list/conda) or None."""
    m = _FREEZE_RE.match(line)
    if m:
        b.package(m.group(1), m.group(2), n)
        b.part("pip-freeze" if not line.lstrip().startswith("[") else "collect-env", n, n)
        return block
    stripped = line.strip()
    if (stripped.startswith("[conda]") or stripped.startswith("[pip")) and "]" in stripped:
        c = _CONDA_RE.match(stripped.split("]", 1)[1])
        if c:
            _conda_package(b, n, c)
            b.part("collect-env", n, n)
        return block
    if _PIP_HEADER_RE.match(line) or (block == "pip-list" and _DASHES_RE.match(line)):
        b.part("pip-list", n, n)
        return "pip-list"
    if _CONDA_HEADER_RE.match(line):
        b.part("conda-list", n, n)
        return "conda-list"
    if block == "conda-list":
        c = _CONDA_RE.match(line)
        if c:
            _conda_package(b, n, c)
            b.part("conda-list", n, n)
            return block
    if block == "pip-list":
        p = _PIP_LIST_RE.match(line)
        if p:
            b.package(p.group(1), p.group(2), n)
            b.part("pip-list", n, n)
            return block
    return None


def _conda_package(b: _Builder, n: int, m: re.Match[str]) -> None:
    name, version, build = m.group(1), m.group(2), m.group(3)
    b.package(name, version, n)
    if name.lower() in ("pytorch", "torch"):
        cuda = re.search(r"cuda(\d+\.\d+)", build)
        if cuda:
            b.put("build", "cuda", n)
            b.put("torch_cuda", cuda.group(1), n)
        elif "cpu" in build:
            b.put("build", "cpu", n)
    elif name.lower() == "pytorch-cuda":
        b.put("build", "cuda", n)
        b.put("torch_cuda", ".".join(version.split(".")[:2]), n)
    elif name.lower() == "cpuonly":
        b.put("build", "cpu", n)


def _launch(b: _Builder, n: int, line: str) -> None:
    """docker/podman run lines, compose and Kubernetes fragments, environment assignments."""
    d = _DOCKER_RE.search(line)
    if d:
        args = d.group("args")
        b.put("container", "podman" if d.group(1) == "podman" else "docker", n)
        gpus = re.search(r"--gpus[= ]\s*\S+|--runtime[= ]nvidia|--device[= ]nvidia\.com/gpu", args)
        if gpus or d.group(1) == "nvidia-docker":
            b.sources.setdefault("container-gpus", b.where(n))
        else:
            b.sources.setdefault("container-no-gpus", b.where(n))
        shm = _SHM_RE.search(args)
        if shm:
            b.put("shm_bytes", _size(shm.group(1), shm.group(2)), n)
        elif re.search(r"--ipc[= ]host", args):
            b.sources.setdefault("ipc-host", b.where(n))
        else:
            b.sources.setdefault("shm-docker-default", b.where(n))
        b.part("docker", n, n)
    else:
        s = line.strip()
        if re.match(r"^shm_size:\s*['\"]?(\d+)", s):
            m = re.match(r"^shm_size:\s*['\"]?(\d+(?:\.\d+)?)\s*([kmgt]?)", s, re.IGNORECASE)
            if m:
                b.put("shm_bytes", _size(m.group(1), m.group(2)), n)
            b.put("container", "docker", n)
            b.part("compose", n, n)
        elif re.match(r"^(?:runtime:\s*nvidia|ipc:\s*host|nvidia\.com/gpu:\s*\d+)", s):
            b.put("container", "kubernetes" if s.startswith("nvidia.com") else "docker", n)
            b.sources.setdefault("container-gpus", b.where(n))
            b.part("compose" if not s.startswith("nvidia.com") else "kubernetes", n, n)
        elif _CONTAINER_PROMPT_RE.match(line) or _CONTAINER_HINT_RE.search(line):
            b.put("container", "docker", n)
    for m in _ENV_RE.finditer(line):
        b.env.setdefault(m.group(1), m.group(2).strip("'\""))
        b.sources.setdefault(f"env:{m.group(1)}", b.where(n))
        b.part("environment", n, n)


def _paths(b: _Builder, n: int, line: str) -> None:
    """What paths and file names betray: Python version, OS, libraries on the loader path."""
    m = _PY_PATH_RE.search(line)
    if m:
        b.put("python", f"{m.group(1)}.{m.group(2)}", n)
    m2 = _PY_TAG_RE.search(line)
    if m2:
        if m2.group(1):
            b.put("python", f"{m2.group(1)}.{m2.group(2)}", n)
            b.put("os", "Linux", n)
            b.put("arch", m2.group(3), n)
        else:
            b.put("python", f"{m2.group(4)}.{m2.group(5)}", n)
            b.put("os", "Windows", n)
    if _WIN_PATH_RE.search(line) and ("site-packages" in line or "Python" in line):
        b.put("os", "Windows", n)
        w = re.search(r"Python3(\d{1,2})\\", line)
        if w:
            b.put("python", f"3.{w.group(1)}", n)
    elif _MAC_HINT_RE.search(line):
        b.put("os", "macOS", n)
    m3 = _PYTHON_LINE_RE.match(line)
    if m3:
        b.put("python", m3.group(1), n)
    ldd = _LDD_RE.match(line)
    if ldd and re.match(r"lib(?:cud|cublas|nccl|nvJitLink|cusparse|cufft)", ldd.group(1)):
        b.values.setdefault("library_path_libs", [])
        b.values["library_path_libs"].append(ldd.group(2))
        b.sources.setdefault("library_path_libs", b.where(n))
        b.part("ldd", n, n)
    if re.search(r"\bNVRM: |\bnvidia-modeset|kernel: \[", line) or re.match(
        r"^\s*\[\s*\d+\.\d+\]", line
    ):
        b.part("kernel-log", n, n)
    if _ERROR_LINE_RE.search(line):
        b.sources.setdefault("error-line", b.where(n))
        if "device-side assert" in line or ("Assertion `" in line and "failed" in line):
            b.sources.setdefault("device-assert", b.where(n))
        b.part("error", n, n)
    if line.startswith("Traceback (most recent call last)") or (
        b.parts and b.parts[-1].kind == "traceback" and b.parts[-1].last >= n - 1
    ):
        b.part("traceback", n, n)


_TAGGED_TORCH_RE = re.compile(
    r"\b(?:torch|pytorch)\s*(?:==|=|:|\s)\s*v?(\d+\.\d+\.\d+(?:\.dev\d+)?\+(?:cu\d{2,3}|cpu|rocm[\d.]+))\b",
    re.IGNORECASE,
)
_MIG_RE = re.compile(r"\bMIG\b")
_ERROR_LINE_RE = re.compile(
    r"^\s*(?:\w+\.)*\w*(?:Error|Exception)\b:|\bAssertion `[^`]{1,200}` failed|"
    r"device-side assert triggered|CUDA error:|\bFATAL\b|\bSegmentation fault\b"
)
_DOMAIN_RE = re.compile(
    r"\b(?:import(?:ing)?|from) (?:torchaudio|torchvision)\b|[/\\](?:torchaudio|torchvision)[/\\]"
)
_REPL_AVAILABLE_RE = re.compile(r"torch\.cuda\.is_available\(\)\s*(?:#.*)?$")
_REPL_ANSWER_RE = re.compile(r"^\s*(?:Out\[\d+\]:\s*)?(True|False)\s*$")


def _mentions(b: _Builder, n: int, line: str) -> None:
    """What prose betrays: a tagged torch version, MIG, an Ampere-or-newer GPU, the answer of
    torch.cuda.is_available() in a REPL."""
    m = _TAGGED_TORCH_RE.search(line)
    if m:
        b.put("torch", m.group(1), n)
    if _MIG_RE.search(line):
        b.sources.setdefault("mig-mentioned", b.where(n))
    if _DOMAIN_RE.search(line):
        b.sources.setdefault("domain-library-mentioned", b.where(n))
    if AMPERE_NAME.search(line):
        b.sources.setdefault("ampere-mentioned", b.where(n))
    if _REPL_AVAILABLE_RE.search(line):
        for k in range(n, min(n + 2, len(b.lines))):
            a = _REPL_ANSWER_RE.match(b.lines[k])
            if a:
                b.put("cuda_available", a.group(1) == "True", k + 1)
                b.part("repl", n, k + 1)
                break


def _standalone_torch(b: _Builder, n: int, line: str) -> None:
    """`print(torch.__version__)` output or `pip show torch`: a tagged version on its own."""
    s = line.strip()
    m = re.match(
        r"^(?:>>> )?(?:torch\.__version__\s*)?['\"]?"
        r"(\d+\.\d+\.\d+\+(?:cu\d+|cpu|rocm[\d.]+))['\"]?$",
        s,
    )
    if m:
        b.put("torch", m.group(1), n)
        return
    m = re.match(r"^Name:\s*torch\s*$", s)
    if m and n < len(b.lines):
        v = re.match(r"^\s*Version:\s*(\S+)", b.lines[n])
        if v and _TORCH_VERSION_RE.match(v.group(1)):
            b.put("torch", v.group(1), n + 1)


def read(text: str, matrix: Matrix) -> tuple[Facts, tuple[Part, ...]]:
    """Facts from free text, each with its line (Facts.sources), and the parts found."""
    lines = text.splitlines()
    b = _Builder(lines)
    block: str | None = None
    cudnn_files = False  # inside collect_env's "cuDNN version: Probably one of the following:"
    for n, raw in enumerate(lines, 1):
        if len(raw) > MAX_STRUCTURED_LINE:
            block = None
            continue
        line = raw.rstrip()
        if not line.strip():
            block = None if block not in ("pip-list", "conda-list") else block
            continue
        if cudnn_files and line.lstrip().startswith("/") and "libcudnn" in line:
            b.values.setdefault("system_cudnn", ())
            b.values["system_cudnn"] += (line.strip(),)
            b.sources.setdefault("system_cudnn", b.where(n))
            continue
        cudnn_files = line.lower().startswith("cudnn version:") and "probably" in line.lower()
        if _key_values(b, n, line):
            block = None
            _mentions(b, n, line)
            continue
        if _nvidia_smi(b, n, line):
            _mentions(b, n, line)
            continue
        block = _packages(b, n, line, block)
        _launch(b, n, line)
        _paths(b, n, line)
        _standalone_torch(b, n, line)
        _mentions(b, n, line)
    return _facts(b, matrix), tuple(b.parts)


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


def _facts(b: _Builder, matrix: Matrix) -> Facts:
    v = b.values
    torch = v.get("torch") or b.packages.get("torch") or None
    sources = dict(b.sources)
    if torch and "torch" not in sources:
        sources["torch"] = sources.get("package:torch", "")
    build, cuda = v.get("build"), v.get("torch_cuda")
    if torch and "+" in torch:
        tag = torch.split("+", 1)[1]
        if tag.startswith("cu") and tag[2:].isdigit() and build is None:
            build, cuda = "cuda", f"{tag[2:-1]}.{tag[-1]}"
            sources["torch_cuda"] = sources["torch"]
        elif tag == "cpu" and build is None:
            build = "cpu"
        elif tag.startswith("rocm") and build is None:
            build = "rocm"
    partial = Facts(origin="report", os=v.get("os"), glibc=v.get("glibc"), arch=v.get("arch"))
    if torch and build is None:
        build, cuda, why = _untagged(torch, platform_of(partial), v.get("arch"), matrix)
        if why:
            sources["torch_cuda" if cuda else "torch_build"] = why
    if build:
        sources.setdefault("torch_build", sources.get("torch", ""))
    arch, cudnn, nccl, inferred = _infer(matrix, torch, cuda if build == "cuda" else None)
    if inferred:
        sources["torch_arch"] = inferred
        sources.setdefault("torch_cudnn", inferred)
    if b.gpus:
        sources["gpus"] = b.gpu_source
    env = dict(b.env)
    shm = v.get("shm_bytes")
    if shm is None and "shm-docker-default" in sources:
        shm = 64 * 2**20
        sources["shm_bytes"] = (
            "inferred: docker's default /dev/shm of 64 MiB (" + sources["shm-docker-default"] + ")"
        )
    return Facts(
        origin="report",
        os=v.get("os"),
        arch=v.get("arch"),
        glibc=v.get("glibc"),
        container=v.get("container"),
        driver=v.get("driver"),
        driver_cuda=v.get("driver_cuda"),
        gpus=tuple(sorted(b.gpus, key=lambda g: g.index)),
        env=env,
        python=v.get("python"),
        packages=dict(b.packages),
        torch=torch,
        torch_build=build,
        torch_cuda=cuda if build == "cuda" else None,
        torch_arch=arch,
        torch_cudnn=cudnn,
        torch_nccl=nccl,
        cuda_available=v.get("cuda_available"),
        library_path_libs=tuple(v.get("library_path_libs", ())),
        system_cudnn=tuple(v.get("system_cudnn", ())),
        shm_bytes=shm,
        host_nvcc=v.get("host_nvcc"),
        sources={k: s for k, s in sources.items() if s},
    )


def _untagged(
    torch: str, platform: str | None, arch: str | None, matrix: Matrix
) -> tuple[str | None, str | None, str]:
    """(build, CUDA, why) for a torch version without a local tag, where the platform says."""
    if platform in ("windows", "macos"):
        return "cpu", None, f"inferred: PyPI's torch wheels for {platform} are CPU builds"
    if platform == "linux" and arch == "x86_64":
        rel = matrix.release(torch)
        if rel is None:
            return None, None, ""
        variant = rel.variant(rel.pypi_default)
        if variant is None or variant.cuda is None:
            return "cpu", None, f"inferred: PyPI's default build of {torch} for Linux is CPU"
        return (
            "cuda",
            variant.cuda_str,
            f"inferred: PyPI's default build of {torch} for Linux x86_64 is "
            f"{rel.pypi_default} (no build tag in the report)",
        )
    return None, None, ""


def _infer(
    matrix: Matrix, torch: str | None, cuda: str | None
) -> tuple[tuple[str, ...] | None, str | None, str | None, str]:
    """(arch list, cuDNN, NCCL, where from) for a CUDA torch build, from the matrix."""
    if not torch or not cuda:
        return None, None, None, ""
    base = torch.split("+", 1)[0]
    rel = matrix.release(base)
    if rel is None:
        return None, None, None, ""
    name = "cu" + cuda.replace(".", "")
    v = rel.variant(name)
    if v is None or v.archs is None:
        return None, None, None, ""
    return v.arch_tokens(), v.cudnn, v.nccl, f"inferred from the matrix for {base}+{name}"


_DECIDING = (
    ("torch", "the torch version and build"),
    ("driver", "the NVIDIA driver version"),
    ("gpus", "the GPU model"),
    ("python", "the Python version"),
)


def unseen(f: Facts) -> tuple[str, ...]:
    """The facts that decide most failures and that the text did not give."""
    out = []
    for key, what in _DECIDING:
        value = getattr(f, key)
        if not value:
            out.append(what)
        elif key == "torch" and f.torch_build is None:
            out.append("which build of torch (CUDA or CPU)")
    return tuple(out)
