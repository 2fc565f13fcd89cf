"""Doctor vs `python -m torch.utils.collect_env`: wall time, in one run. Target: <= 0.3x.

    python benchmarks/doctor.py [--runs 7]

Both run as fresh processes, interleaved, --runs times each; medians are compared. The doctor
runs in its default mode (torch imported only where an NVIDIA driver is present, so on a machine
without one it answers from files and package metadata), and again with --runtime (torch
imported) for the record. "Checking more": collect_env diagnoses nothing; the doctor runs its
checks over more facts and returns findings with fixes. The last line is the default ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COLLECT_ENV = [sys.executable, "-m", "torch.utils.collect_env"]
DOCTOR = [sys.executable, "-m", "torchship", "doctor", "--json"]


def wall(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, out.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"collect_env": [], "doctor": [], "doctor --runtime": []}
    outputs: dict[str, str] = {}
    wall(COLLECT_ENV)  # warm the page cache for both
    wall(DOCTOR)
    for _ in range(args.runs):
        for name, argv in (
            ("collect_env", COLLECT_ENV),
            ("doctor", DOCTOR),
            ("doctor --runtime", [*DOCTOR, "--runtime"]),
        ):
            t, out = wall(argv)
            times[name].append(t)
            outputs[name] = out
    med = {k: statistics.median(v) for k, v in times.items()}
    report = json.loads(outputs["doctor"])
    facts = {k: v for k, v in report["facts"].items() if v not in (None, [], {}, "")}
    from torchship.doctor.checks import CHECKS

    print(f"collect_env:       {med['collect_env']:.3f} s (median of {args.runs}); 0 checks")
    print(
        f"doctor:            {med['doctor']:.3f} s; {len(CHECKS)} checks, {len(facts)} facts "
        f"observed, {len(report['findings'])} finding(s), origin {report['facts']['origin']}"
    )
    print(
        f"doctor --runtime:  {med['doctor --runtime']:.3f} s "
        f"(ratio {med['doctor --runtime'] / med['collect_env']:.2f}x; imports torch)"
    )
    print(
        f"ratio: {med['doctor'] / med['collect_env']:.2f}x collect_env's wall time (target <= 0.3x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
