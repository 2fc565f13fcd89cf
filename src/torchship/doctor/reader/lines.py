"""One reader per kind of line: collect_env keys, nvidia-smi, package lists, container commands,
paths, prose. Each is cheap to skip: a literal test gates every regular expression, so a
megabyte of log lines costs little."""

from __future__ import annotations

import re

from torchship.doctor.reader.builder import (
    _TORCH_VERSION_RE,
    _bool,
    _Builder,
    _size,
    _torch_version,
    _value,
)
from torchship.doctor.signatures import AMPERE_NAME

MAX_STRUCTURED_LINE = 2000  # longer lines (progress bars, minified JSON) carry no facts


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


_GPU_LINE_RE = re.compile(
    r"^\s*GPU (\d+):\s*([^(\n]{1,120}?)\s*(?:\(UUID:\s*([^)\n]{1,80})\))?\s*$"
)


_MIG_LINE_RE = re.compile(r"^\s*MIG \S+\s+Device\s+\d+:")


_SMI_HEADER_RE = re.compile(
    r"NVIDIA-SMI\s+(?P<smi>[\d.]+)\s+Driver Version:\s*(?P<driver>[\d.]+)"
    r"(?:\s+CUDA Version:\s*(?P<cuda>[\d.]+|N/A))?"
)


_SMI_ROW_RE = re.compile(
    r"^\|\s*(?P<index>\d+)\s+(?P<name>[A-Za-z][\w .()/-]*?)\s+(?:On|Off|WDDM|TCC)\s*\|\s*"
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


_AT_URL_RE = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]{0,80}) @ \S{0,400}/\1-(\d[\w.!]*(?:(?:\+|%2[Bb])[\w.]+)?)-"
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


_NEGATION_RE = re.compile(r"\b(?:not|no|n't|never|without|outside)\b|n't\b", re.IGNORECASE)


_ENV_PREFIXES = ("CUDA_", "NVIDIA_", "NCCL_", "LD_", "TORCH_", "PYTORCH_")


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
    r"\bmacOS\b|\bDarwin\b|\bmacosx_\d+|/opt/homebrew/|/Users/\w+/", re.IGNORECASE
)


_PYTHON_LINE_RE = re.compile(r"^\s*Python (3\.\d{1,2}\.\d{1,2})\b")


def _key_values(b: _Builder, n: int, line: str) -> bool:
    m = _KEY_RE.match(line)
    if not m or _SMI_Q_RE.match(line):  # `nvidia-smi -q` pads its keys: _nvidia_smi reads those
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
            b.put("system_cudnn", [v], n)
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
    m = _SMI_HEADER_RE.search(line) if "NVIDIA-SMI" in line else None
    if m:
        b.put("driver", m.group("driver"), n)
        if m.group("cuda") and m.group("cuda") != "N/A":
            b.put("driver_cuda", m.group("cuda"), n)
        b.part("nvidia-smi", n, n)
        return True
    m = _SMI_ROW_RE.match(line) if line.startswith("|") else None
    if m:
        b.smi_gpu = int(m.group("index"))
        b.gpu(b.smi_gpu, m.group("name"), n)
        b.part("nvidia-smi", n, n)
        return True
    if line.startswith("|") and b.smi_gpu is not None:
        mig = re.search(r"\|\s*(Enabled|Disabled)\s*\|?\s*$", line)
        if mig:
            b.mig(b.smi_gpu, mig.group(1), n)
            return True
    m = _SMI_Q_RE.match(line) if ":" in line else None
    if m:
        key, value = m.group(1), m.group(2)
        if key == "Driver Version":
            b.put("driver", value, n)
        elif key == "CUDA Version":
            b.put("driver_cuda", value, n)
        else:
            b.gpu(b.q_gpus, value, n)
            b.q_gpus += 1
        b.part("nvidia-smi-q", n, n)
        return True
    m = _GPU_LINE_RE.match(line) if "GPU " in line else None
    if m and re.search(r"[A-Za-z]{2}", m.group(2)):
        b.gpu(int(m.group(1)), m.group(2), n, m.group(3))
        b.part("gpu-list", n, n)
        return True
    if b.gpus and "MIG" in line and _MIG_LINE_RE.match(line):
        b.mig(b.gpus[-1].index, "Enabled", n)
        return True
    if "NVIDIA-SMI has failed" in line or "Failed to initialize NVML" in line:
        b.sources.setdefault("nvidia-smi-failed", b.where(n))
        b.part("nvidia-smi", n, n)
        return True
    m = _PROC_DRIVER_RE.search(line) if "NVRM" in line else None
    if m:
        b.put("driver", m.group(1), n)
        b.part("kernel-log", n, n)
        return True
    return False


def _packages(b: _Builder, n: int, line: str, block: str | None) -> str | None:
    """Package lines; returns the kind of block the line continues (pip-list/conda) or None."""
    m = _FREEZE_RE.match(line) if "==" in line else None
    if m is None and " @ " in line:
        url = _AT_URL_RE.match(line)
        if url:
            b.package(url.group(1), url.group(2).replace("%2B", "+").replace("%2b", "+"), n)
            b.part("pip-freeze", n, n)
            return block
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


def _command(b: _Builder, n: int, line: str) -> str:
    """The line with its shell continuation lines (`\\` at the end) joined."""
    out, k = line, n
    while out.rstrip().endswith("\\") and k < len(b.lines) and len(out) < MAX_STRUCTURED_LINE:
        out = out.rstrip()[:-1] + " " + b.lines[k].strip()
        k += 1
    return out


def _launch(b: _Builder, n: int, line: str) -> None:
    """docker/podman run lines, compose and Kubernetes fragments, environment assignments."""
    low = line.lower()
    d = (
        _DOCKER_RE.search(_command(b, n, line))
        if "run" in low and ("docker" in low or "podman" in low)
        else None
    )
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
        elif _CONTAINER_PROMPT_RE.match(line) or (
            any(
                w in low for w in ("docker", "container", "nvcr.io", "kubectl", "k8s", "kubernetes")
            )
            and (hint := _CONTAINER_HINT_RE.search(line))
            and not _NEGATION_RE.search(line[max(0, hint.start() - 24) : hint.start()])
        ):
            b.put("container", "docker", n)
    if "=" not in line or not any(k in line for k in _ENV_PREFIXES):
        return
    for m in _ENV_RE.finditer(line):
        b.env.setdefault(m.group(1), m.group(2).strip("'\""))
        b.sources.setdefault(f"env:{m.group(1)}", b.where(n))
        b.part("environment", n, n)


def _paths(b: _Builder, n: int, line: str) -> None:
    """What paths and file names betray: Python version, OS, libraries on the loader path."""
    low = line.lower()
    m = _PY_PATH_RE.search(line) if "python" in low else None
    if m:
        b.put("python", f"{m.group(1)}.{m.group(2)}", n)
    m2 = _PY_TAG_RE.search(line) if "cp" in low else None
    if m2:
        if m2.group(1):
            b.put("python", f"{m2.group(1)}.{m2.group(2)}", n)
            b.put("os", "Linux", n)
            b.put("arch", m2.group(3), n)
        else:
            b.put("python", f"{m2.group(4)}.{m2.group(5)}", n)
            b.put("os", "Windows", n)
    if (
        ":\\" in line
        and _WIN_PATH_RE.search(line)
        and ("site-packages" in line or "Python" in line)
    ):
        b.put("os", "Windows", n)
        w = re.search(r"Python3(\d{1,2})\\", line)
        if w:
            b.put("python", f"3.{w.group(1)}", n)
    elif ("/" in line or "mac" in low or "darwin" in low) and _MAC_HINT_RE.search(line):
        b.put("os", "macOS", n)
    m3 = _PYTHON_LINE_RE.match(line) if "Python" in line else None
    if m3:
        b.put("python", m3.group(1), n)
    ldd = _LDD_RE.match(line) if "=>" in line else None
    if ldd and re.match(r"lib(?:cud|cublas|nccl|nvJitLink|cusparse|cufft)", ldd.group(1)):
        # what the loader resolves the library to: the copy that would be loaded
        b.values.setdefault("loaded_libs", [])
        b.values["loaded_libs"].append(ldd.group(2))
        b.sources.setdefault("loaded_libs", b.where(n))
        b.part("ldd", n, n)
    if (
        "NVRM: " in line
        or "nvidia-modeset" in line
        or "kernel: [" in line
        or (line.lstrip().startswith("[") and _DMESG_RE.match(line))
    ):
        b.part("kernel-log", n, n)
    if "import torch" in line and not line.lstrip().startswith("#"):
        b.sources.setdefault("import-torch", b.where(n))
    if any(w in low for w in _NETWORK_WORDS):
        b.sources.setdefault("network-error", b.where(n))
    if any(
        w in low for w in ("error", "exception", "assert", "fatal", "fault")
    ) and _ERROR_LINE_RE.search(line):
        b.sources.setdefault("error-line", b.where(n))
        if "device-side assert" in line or ("Assertion `" in line and "failed" in line):
            b.sources.setdefault("device-assert", b.where(n))
        b.part("error", n, n)
    if line.startswith("Traceback (most recent call last)") or (
        b.parts and b.parts[-1].kind == "traceback" and b.parts[-1].last >= n - 1
    ):
        b.part("traceback", n, n)


# literal pieces of every name AMPERE_NAME matches: the regex runs only on lines holding one
_AMPERE_KEYS = ("rtx", "a1", "a2", "a3", "a4", "a5", "a6", "a8", "h1", "h2", "h8", "b2", "b3",
                "l4", "gb", "30", "40", "50")  # fmt: skip
_DMESG_RE = re.compile(r"^\s*\[\s*\d+\.\d+\]")
_NETWORK_WORDS = (
    "proxyerror",
    "connection broken",
    "failed to establish a new connection",
    "temporary failure in name resolution",
    "name or service not known",
    "connection timed out",
    "read timed out",
    "certificate verify failed",
    "network is unreachable",
)


_TAGGED_TORCH_RE = re.compile(
    r"\b(?:torch|pytorch)\s*(?:==|=|:|\s)\s*v?(\d+\.\d+\.\d+(?:\.dev\d+)?\+(?:cu\d{2,3}|cpu|rocm[\d.]+))\b",
    re.IGNORECASE,
)


_MIG_RE = re.compile(r"\bMIG\b(?! M\.)(?![^\n]{0,24}\b(?:disabled|off|not)\b)", re.IGNORECASE)


_ERROR_LINE_RE = re.compile(
    r"^\s*(?:\w+\.)*\w*(?:Error|Exception)\b:|\bAssertion `[^`]{1,200}` failed|"
    r"device-side assert triggered|CUDA error:|\bFATAL\b|\bSegmentation fault\b"
)


# A job of several ranks: a launcher (torchrun, torch.distributed.launch/run, mp.spawn), its
# per-node count, LOCAL_RANK, torch's "[rankN]:" log prefix, accelerate's "Num processes: N" with
# N > 1. Literal tests first: this runs on every line, and a regex alternation of these words
# costs ~50 µs on a long NCCL log line.
_MULTI_RANK_WORDS = ("torchrun", "torch.distributed.launch", "torch.distributed.run",
                     "nproc_per_node", "nproc-per-node", "local_rank", "mp.spawn(",
                     "init_process_group(")  # fmt: skip
_RANK_PREFIX_RE = re.compile(r"\[rank\d+\]:")
_NUM_PROCESSES_RE = re.compile(r"num processes: *(?:[2-9]|[1-9]\d+)\b")


def _multi_rank(line: str, low: str) -> bool:
    """Plain substring tests first: this runs on every line until one is found."""
    if line.startswith("[rank") and _RANK_PREFIX_RE.match(line):
        return True
    if "num processes:" in low and _NUM_PROCESSES_RE.search(low):
        return True
    return any(w in low for w in _MULTI_RANK_WORDS)


_DOMAIN_RE = re.compile(
    r"\b(?:import(?:ing)?|from) (?:torchaudio|torchvision)\b|[/\\](?:torchaudio|torchvision)[/\\]"
)


_REPL_AVAILABLE_RE = re.compile(r"torch\.cuda\.is_available\(\)\)?\s*(?:#.*)?$")


_REPL_ANSWER_RE = re.compile(r"^\s*(?:Out\[\d+\]:\s*)?(True|False)\s*$")


def _mentions(b: _Builder, n: int, line: str) -> None:
    """What prose betrays: a tagged torch version, MIG, an Ampere-or-newer GPU, a launch of
    several ranks, the answer of torch.cuda.is_available() in a REPL."""
    low = line.lower()
    m = _TAGGED_TORCH_RE.search(line) if "torch" in low else None
    if m:
        b.hint("torch", m.group(1), n)
    if "MIG" in line and not line.lstrip().startswith("|") and _MIG_RE.search(line):
        b.sources.setdefault("mig-mentioned", b.where(n))
    if "multi-rank" not in b.sources and _multi_rank(line, low):
        b.sources["multi-rank"] = b.where(n)
    if ("torchaudio" in low or "torchvision" in low) and _DOMAIN_RE.search(line):
        b.sources.setdefault("domain-library-mentioned", b.where(n))
    ampere = "ampere-mentioned" not in b.sources and any(k in low for k in _AMPERE_KEYS)
    if ampere and AMPERE_NAME.search(line):
        b.sources["ampere-mentioned"] = b.where(n)
    if "is_available" in line and _REPL_AVAILABLE_RE.search(line):
        for k in range(n, min(n + 2, len(b.lines))):
            a = _REPL_ANSWER_RE.match(b.lines[k])
            if a:
                b.hint("cuda_available", a.group(1) == "True", k + 1)
                b.part("repl", n, k + 1)
                break


def _standalone_torch(b: _Builder, n: int, line: str) -> None:
    """`print(torch.__version__)` output or `pip show torch`: a tagged version on its own."""
    s = line.strip()
    if "+" not in s and not s.startswith("Name:"):
        return
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
