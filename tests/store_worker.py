"""A job-store writer for the crash test and the benchmark: submits keys <worker>-0 .. -<n-1>.

    python -m tests.store_worker DB WORKER N [LATENCY_FILE]

Resubmits every key from 0 on each start (idempotent keys make that safe), so a writer that was
SIGKILLed can be restarted blindly. With LATENCY_FILE it appends each submit's seconds to it.
"""

from __future__ import annotations

import sys
import time

from torchship.state import JobStore


def main() -> int:
    db, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    latencies = []
    with JobStore(db) as store:
        for i in range(n):
            start = time.perf_counter()
            store.submit(
                f"{worker}-{i}",
                f"job-{worker}-{i}",
                {"worker": worker, "i": i},
                lock_hash="sha256:ab",
                site="local",
            )
            latencies.append(time.perf_counter() - start)
    if len(sys.argv) > 4:
        with open(sys.argv[4], "a") as f:
            f.write("\n".join(f"{x:.6f}" for x in latencies) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
