"""torchship: one pinned PyTorch + CUDA environment, resolved for your GPUs and drivers.

Importing this package has no side effects and imports neither torch nor any client library.
The public names below are loaded when first used (PEP 562), so that `import torchship.cli`
(every command's start) pays only for the modules that command needs.
"""

from __future__ import annotations

from torchship._lazy import lazy_names
from torchship._version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a few ms at start-up)
if TYPE_CHECKING:
    from torchship.compat.gpus import lookup_gpu
    from torchship.compat.matrix import load_matrix
    from torchship.compat.request import Request
    from torchship.compat.resolve import Resolution, resolve
    from torchship.errors import TorchshipError
    from torchship.jobs import submit
    from torchship.lock import Lock, lock_spec, read_lock, resolve_spec, write_lock
    from torchship.spec import Spec, load_spec
    from torchship.spec.job import JobSpec, load_job
    from torchship.state import JobStore

_WHERE = {
    "JobSpec": "torchship.spec.job",
    "JobStore": "torchship.state",
    "Lock": "torchship.lock",
    "Request": "torchship.compat.request",
    "Resolution": "torchship.compat.resolve",
    "Spec": "torchship.spec",
    "TorchshipError": "torchship.errors",
    "load_job": "torchship.spec.job",
    "load_matrix": "torchship.compat.matrix",
    "load_spec": "torchship.spec",
    "lock_spec": "torchship.lock",
    "lookup_gpu": "torchship.compat.gpus",
    "read_lock": "torchship.lock",
    "resolve": "torchship.compat.resolve",
    "resolve_spec": "torchship.lock",
    "submit": "torchship.jobs",
    "write_lock": "torchship.lock",
}

__all__ = [
    "JobSpec",
    "JobStore",
    "Lock",
    "Request",
    "Resolution",
    "Spec",
    "TorchshipError",
    "__version__",
    "load_job",
    "load_matrix",
    "load_spec",
    "lock_spec",
    "lookup_gpu",
    "read_lock",
    "resolve",
    "resolve_spec",
    "submit",
    "write_lock",
]


__getattr__, __dir__ = lazy_names(globals(), _WHERE)
