"""`torchship diff A B`: what differs between two machines, most consequential first.

"Works on mine, not on yours" is usually one of a few layers; each field has a weight (how likely
a difference changes behaviour) and the consequence a user should read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchship.doctor.facts import Facts

# (field, weight 0-100, consequence). Weight >= 50 "matters": it changes results or whether it runs.
FIELDS: tuple[tuple[str, int, str], ...] = (
    ("driver", 100, "decides which CUDA builds run at all (driver floors, forward compatibility)"),
    (
        "torch_cuda",
        95,
        "a different CUDA build: other kernels, other libraries, other driver floor",
    ),
    ("torch_cudnn", 90, "cuDNN picks different convolution algorithms: numerics and speed differ"),
    ("torch_nccl", 85, "collectives differ; mixed NCCL versions across ranks can hang"),
    ("gpus", 80, "another GPU architecture: different kernels, TF32/bf16 support, memory"),
    ("torch_arch", 78, "the build covers other GPU architectures"),
    ("tf32_matmul", 75, "TF32 matmuls change float32 results (~1e-3 relative)"),
    ("tf32_cudnn", 74, "TF32 convolutions change float32 results (~1e-3 relative)"),
    ("torch", 70, "another torch release: operators, defaults and numerics change"),
    ("numpy", 65, "numpy 1 vs 2 changes dtypes and breaks compiled extensions"),
    ("cuda_available", 64, "CUDA usable on one machine only"),
    ("python", 60, "another interpreter: wheels and behaviour differ"),
    ("glibc", 50, "wheels need a glibc floor (torch >= 2.7: 2.28)"),
    ("env", 45, "CUDA/NCCL/torch environment variables change behaviour"),
    ("shm_bytes", 40, "/dev/shm size decides whether DataLoader workers and NCCL shm work"),
    ("packages", 35, "other library versions"),
    ("container", 30, "container vs host: device access, /dev/shm, limits"),
    ("host_nvcc", 20, "the host toolkit: matters only for building extensions"),
    ("os", 15, "another OS release"),
    ("kernel", 10, "another kernel"),
    ("ulimits", 10, "resource limits (open files, locked memory for RDMA)"),
    ("hostname", 0, "another host name"),
)
# Fields that are an installed package's version; `packages` holds every other package.
PACKAGE_FIELDS = ("numpy", "torch")


@dataclass(frozen=True, slots=True)
class Difference:
    field: str
    a: Any
    b: Any
    weight: int
    consequence: str

    @property
    def matters(self) -> bool:
        return self.weight >= 50

    @property
    def packages(self) -> tuple[str, ...]:
        """The installed packages (normalised names) this difference is about; () for one that
        is not about packages (driver, Python, host …)."""
        if self.field == "packages":
            return tuple(sorted(self.a))  # a and b: the same keys, one per differing package
        return (self.field,) if self.field in PACKAGE_FIELDS else ()

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "a": self.a,
            "b": self.b,
            "weight": self.weight,
            "matters": self.matters,
            "consequence": self.consequence,
            "packages": list(self.packages),
        }


def _value(f: Facts, field: str) -> Any:
    if field == "numpy":
        return f.packages.get("numpy")
    if field == "gpus":
        return sorted(f"{g.name}" + (f" (cc {g.cc})" if g.cc else "") for g in f.gpus)
    value = getattr(f, field)
    return list(value) if isinstance(value, tuple) else value


def _dict_diff(a: dict[str, str], b: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return {k: a.get(k) for k in keys}, {k: b.get(k) for k in keys}


def diff(a: Facts, b: Facts) -> list[Difference]:
    """Differences, most consequential first. Fields one side did not observe are skipped."""
    # numpy and torch are left to their own fields where both sides report them; where one side
    # lacks one, `packages` names it, so a package missing on one side is never skipped
    own = {f for f in PACKAGE_FIELDS if _value(a, f) is not None and _value(b, f) is not None}
    out = []
    for field, weight, consequence in FIELDS:
        va, vb = _value(a, field), _value(b, field)
        if va is None or vb is None or va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            if field == "packages":
                va = {k: v for k, v in va.items() if k not in own}
                vb = {k: v for k, v in vb.items() if k not in own}
            va, vb = _dict_diff(va, vb)
            if not va and not vb:
                continue
        out.append(Difference(field, va, vb, weight, consequence))
    return out
