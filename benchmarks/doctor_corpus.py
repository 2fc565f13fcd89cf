"""The doctor on a corpus of real public reports (tests/data/reports). Targets: the cause named
among the error/warning findings in >= 95% of reports whose cause is the environment; <= 0.02
false error findings per report (an error whose code is not the established cause, counted
over every report, the `none` ones included); < 0.2 s per report.

    python benchmarks/doctor_corpus.py [--json] [--show-misses]

Prints recall per code, every miss and false error with --show-misses, the time per report
(median and max of each report's best of 3), and last the share named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.corpus import evaluate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--show-misses", action="store_true")
    ap.add_argument("--dir", help="a folder of reports other than the corpus (a held-out set)")
    args = ap.parse_args()
    res = evaluate(Path(args.dir) if args.dir else None)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"reports: {res['reports']} ({res['environment_reports']} with an environment cause)")
    for code, frac in res["recall"].items():  # type: ignore[attr-defined]
        print(f"  {code:28} {frac}")
    if args.show_misses:
        for name, cause, named in res["misses"]:  # type: ignore[attr-defined]
            print(f"MISS {name}: {cause} not in {named}")
        for name, code in res["false_errors"]:  # type: ignore[attr-defined]
            print(f"FALSE {name}: error {code}")
        for name, code in res["false_warnings"]:  # type: ignore[attr-defined]
            print(f"OTHER {name}: warning {code}")
    print(f"false error findings per report: {res['false_errors_per_report']:.3f} (target <= 0.02)")
    print(f"warnings for another cause per report: {res['false_warnings_per_report']:.3f}")
    print(
        f"time per report: median {res['seconds_per_report_median'] * 1000:.1f} ms, "
        f"max {res['seconds_per_report_max'] * 1000:.1f} ms (target < 200 ms)"
    )
    print(f"cause named: {res['named_share']:.1%} (target >= 95%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
