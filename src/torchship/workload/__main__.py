"""`python -m torchship.workload` (one process) or `torchrun -m torchship.workload` (DDP)."""

from __future__ import annotations

import sys

from torchship.workload.train import main

if __name__ == "__main__":
    sys.exit(main())
