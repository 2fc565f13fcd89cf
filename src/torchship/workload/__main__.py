"""`python -m torchship.workload` (one process) or `torchrun -m torchship.workload` (DDP)."""

from __future__ import annotations

import os
import sys

from torchship.workload.train import main

if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Everything is written and the process group is destroyed; skip the C++ static
        # destructors: gloo's transport threads can std::terminate the interpreter's exit
        # ("terminate called without an active exception", SIGABRT) about one 2-rank CPU
        # run in ten here, turning a finished job into a failed one.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
