"""The compatibility matrix and the resolver over it.

The names below load on first use (PEP 562), so that reading a platform name or an arch token
does not load the matrix. The resolver function is `torchship.compat.resolve.resolve`: the
submodule `resolve` shadows any package attribute of that name, so it is not re-exported here.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchship.compat.gpus import GPUTarget, lookup_gpu
    from torchship.compat.matrix import Matrix, Release, Variant, load_matrix
    from torchship.compat.request import Request
    from torchship.compat.resolve import Choice, Rejection, Resolution

_WHERE = {
    "Choice": "torchship.compat.resolve",
    "GPUTarget": "torchship.compat.gpus",
    "Matrix": "torchship.compat.matrix",
    "Rejection": "torchship.compat.resolve",
    "Release": "torchship.compat.matrix",
    "Request": "torchship.compat.request",
    "Resolution": "torchship.compat.resolve",
    "Variant": "torchship.compat.matrix",
    "load_matrix": "torchship.compat.matrix",
    "lookup_gpu": "torchship.compat.gpus",
}

__all__ = [
    "Choice",
    "GPUTarget",
    "Matrix",
    "Rejection",
    "Release",
    "Request",
    "Resolution",
    "Variant",
    "load_matrix",
    "lookup_gpu",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'torchship.compat' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
