"""torchship: one pinned PyTorch + CUDA environment, resolved for your GPUs and drivers.

Importing this package has no side effects and imports neither torch nor any client library.
"""

from torchship._version import __version__
from torchship.compat import Request, Resolution, load_matrix, lookup_gpu, resolve
from torchship.errors import TorchshipError
from torchship.jobs import submit
from torchship.lock import Lock, lock_spec, read_lock, resolve_spec, write_lock
from torchship.spec import Spec, load_spec
from torchship.spec.job import JobSpec, load_job
from torchship.state import JobStore

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
