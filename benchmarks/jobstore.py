"""Job store: p99 write latency with 8 concurrent writer processes. Target: p99 < 20 ms.

    python benchmarks/jobstore.py [--writers 8] [--per-writer 1000]

Each writer (tests/store_worker.py) times every idempotent submission (one BEGIN IMMEDIATE
transaction: job row + event row, WAL, synchronous=NORMAL). A single writer is measured first in
the same run as the baseline. The last line is the 8-writer p99 against the 20 ms target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.020


def run(writers: int, per_writer: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        db, lat = Path(d) / "jobs.db", Path(d) / "latency.txt"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.store_worker",
                    str(db),
                    str(w),
                    str(per_writer),
                    str(lat),
                ],
                cwd=REPO,
            )
            for w in range(writers)
        ]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"writer failed with {p.returncode}")
        return sorted(float(x) for x in lat.read_text().split())


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--per-writer", type=int, default=1000)
    args = ap.parse_args()
    one = run(1, args.per_writer)
    many = run(args.writers, args.per_writer)
    print(
        f"1 writer:  {len(one)} writes, p50 {statistics.median(one) * 1e3:.2f} ms, "
        f"p99 {pct(one, 0.99) * 1e3:.2f} ms"
    )
    print(
        f"{args.writers} writers: {len(many)} writes, p50 {statistics.median(many) * 1e3:.2f} ms, "
        f"p99 {pct(many, 0.99) * 1e3:.2f} ms, max {many[-1] * 1e3:.1f} ms "
        f"({pct(many, 0.99) / pct(one, 0.99):.1f}x the single writer's p99)"
    )
    print(
        f"ratio: p99 {pct(many, 0.99) * 1e3:.2f} ms = {pct(many, 0.99) / TARGET_S:.2f}x the "
        f"20 ms target"
    )
    return 0 if pct(many, 0.99) < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
