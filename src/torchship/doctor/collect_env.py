"""Parse a pasted `python -m torch.utils.collect_env` report (torch 1.x to 2.15) into Facts.

What the report says is mapped to what it means, not to what it is labelled:
  "CUDA runtime version" is the host's nvcc, not torch's CUDA  -> Facts.host_nvcc
  "cuDNN version" lists the system's libcudnn files, not torch's -> Facts.system_cudnn
The arch list, and torch's own cuDNN/NCCL, are never in a report: they are inferred from the
compatibility matrix for the reported torch build, and `sources` says so.
"""

from __future__ import annotations

import re

from torchship.compat.matrix import Matrix
from torchship.doctor.facts import Facts, GPUFact
from torchship.errors import UsageError

REQUIRED = ("PyTorch version", "CUDA used to build PyTorch", "Is CUDA available")
_NOT_COLLECTED = {"could not collect", "n/a", "none", ""}
_KEY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9 _/()'.-]{1,60}?):\s?(.*)$")
_GPU_RE = re.compile(r"GPU (\d+):\s*(.+?)(?:\s*\(UUID:\s*([^)]+)\))?\s*$")
_PKG_RE = re.compile(r"^\[(pip\d?|conda)\]\s+(\S+?)(?:==|\s+)(\S+)")
_HINT = "paste the whole output of `python -m torch.utils.collect_env`"


def _value(text: str | None) -> str | None:
    if text is None:
        return None
    t = text.strip()
    return None if t.lower() in _NOT_COLLECTED else t


def _bool(text: str | None) -> bool | None:
    t = (_value(text) or "").lower()
    return True if t in ("true", "yes") else False if t in ("false", "no") else None


def _sections(text: str) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """(key -> first-line value, GPU lines, cuDNN lines, package lines)."""
    fields: dict[str, str] = {}
    multi: dict[str, list[str]] = {"GPU models and configuration": [], "cuDNN version": []}
    pkgs: list[str] = []
    current: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if _PKG_RE.match(line.strip()):
            pkgs.append(line.strip())
            current = None
            continue
        m = _KEY_RE.match(line)
        if m and not line.startswith((" ", "\t", "/")) and not re.match(r"GPU \d+:", line):
            current = m.group(1).strip()
            fields.setdefault(current, m.group(2).strip())
            continue
        if current in multi and line.strip():
            multi[current].append(line.strip())
    gpus = [fields.get("GPU models and configuration", ""), *multi["GPU models and configuration"]]
    cudnn = [fields.get("cuDNN version", ""), *multi["cuDNN version"]]
    return fields, gpus, cudnn, pkgs


def _gpus(lines: list[str]) -> tuple[GPUFact, ...]:
    out = []
    for line in lines:
        m = _GPU_RE.search(line)
        if m:
            out.append(GPUFact(index=int(m.group(1)), name=m.group(2).strip(), uuid=m.group(3)))
        elif _value(line) and not out and not line.lower().startswith("probably"):
            out.append(GPUFact(index=0, name=line.strip()))  # 1.x: a single bare name
    return tuple(out)


def _packages(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        m = _PKG_RE.match(line)
        if m and "could not collect" not in line.lower():
            out.setdefault(re.sub(r"[-_.]+", "-", m.group(2)).lower(), m.group(3))
    return out


def _cuda_of_build(torch: str | None, built_with: str | None) -> str | None:
    if built_with:
        return ".".join(built_with.split(".")[:2])
    if torch and "+cu" in torch:
        digits = torch.split("+cu", 1)[1]
        return f"{digits[:-1]}.{digits[-1]}"
    return None


def _infer(
    matrix: Matrix, torch: str | None, cuda: str | None
) -> tuple[tuple[str, ...] | None, str | None, str | None, str]:
    """(arch list, cuDNN, NCCL, where from) for a reported torch build, from the matrix."""
    if not torch:
        return None, None, None, ""
    base = torch.split("+", 1)[0]
    rel = matrix.release(base)
    if rel is None:
        return None, None, None, ""
    name = "cpu" if cuda is None else "cu" + cuda.replace(".", "")
    v = rel.variant(name)
    if v is None or v.archs is None:
        return None, None, None, ""
    return v.arch_tokens(), v.cudnn, v.nccl, f"inferred from the matrix for {base}+{name}"


def parse_collect_env(text: str, matrix: Matrix, where: str = "report") -> Facts:
    """Facts from a collect_env report; raises UsageError (exit 2) on anything else."""
    if not text.strip():
        raise UsageError(f"{where}: is empty", _HINT)
    if "\x00" in text or sum(not (c.isprintable() or c.isspace()) for c in text) > len(text) // 100:
        raise UsageError(f"{where}: is binary, not a collect_env report", _HINT)
    fields, gpu_lines, cudnn_lines, pkg_lines = _sections(text)
    missing = [k for k in REQUIRED if k not in fields]
    if len(missing) == len(REQUIRED):
        raise UsageError(f"{where}: does not look like a collect_env report", _HINT)
    if missing:
        raise UsageError(f"{where}: is truncated (no {', '.join(repr(m) for m in missing)})", _HINT)
    torch = _value(fields.get("PyTorch version"))
    cuda = _cuda_of_build(torch, _value(fields.get("CUDA used to build PyTorch")))
    arch, cudnn, nccl, inferred = _infer(matrix, torch, cuda)
    sources = dict.fromkeys(("torch", "driver", "gpus", "host_nvcc"), "collect_env")
    if inferred:
        sources["torch_arch"] = inferred
        if cuda:
            sources.update(torch_cudnn=inferred, torch_nccl=inferred)
    libc = _value(fields.get("Libc version"))
    nvcc = _value(fields.get("CUDA runtime version"))
    return Facts(
        origin="collect-env",
        os=_value(fields.get("OS")),
        glibc=libc.split("-", 1)[1] if libc and libc.startswith("glibc-") else None,
        driver=_value(fields.get("Nvidia driver version")),
        gpus=_gpus(gpu_lines),
        python=(_value(fields.get("Python version")) or "").split(" ")[0] or None,
        packages=_packages(pkg_lines),
        torch=torch,
        torch_cuda=cuda,
        torch_arch=arch,
        torch_cudnn=cudnn if cuda else None,
        torch_nccl=nccl if cuda else None,
        cuda_available=_bool(fields.get("Is CUDA available")),
        system_cudnn=tuple(
            ln
            for ln in (
                c.removeprefix("Probably one of the following:").strip() for c in cudnn_lines
            )
            if _value(ln)
        ),
        host_nvcc=nvcc if nvcc and re.match(r"^\d+\.\d+", nvcc) else None,
        env={"CUDA_MODULE_LOADING": v}
        if (v := _value(fields.get("CUDA_MODULE_LOADING set to")))
        else {},
        sources=sources,
    )
