"""The compatibility matrix and the resolver over it."""

from torchship.compat.gpus import GPUTarget, lookup_gpu
from torchship.compat.matrix import Matrix, Release, Variant, load_matrix
from torchship.compat.request import Request
from torchship.compat.resolve import Choice, Rejection, Resolution, resolve

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
    "resolve",
]
