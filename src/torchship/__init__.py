"""torchship: one pinned PyTorch + CUDA environment, resolved for your GPUs and drivers.

Importing this package has no side effects and imports neither torch nor any client library.
"""

__version__ = "0.1.0"
