"""The doctor's corpus of real public reports: tests/data/reports/<code>-<slug>.md.

Each file: front matter (source URL, the cause's finding code or `none`, how the thread
established it, whether the excerpt is partial), then the reporter's own lines, verbatim.
Reports written for unit tests are not here: they live in tests/data/synthetic/.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPORTS = Path(__file__).resolve().parent / "data" / "reports"
FIELDS = ("source", "cause", "established", "excerpt")
NONE = "none"  # the cause was not the environment: the doctor must raise no error


@dataclass(frozen=True, slots=True)
class Report:
    path: Path
    source: str
    cause: str
    established: str
    excerpt: str
    body: str


def parse_report(path: Path) -> Report:
    text = path.read_text("utf-8")
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.DOTALL)
    if not m:
        raise ValueError(f"{path.name}: no front matter")
    meta: dict[str, str] = {}
    for line in m.group(1).splitlines():
        key, _, value = line.partition(":")
        meta[key.strip()] = value.strip()
    missing = [k for k in FIELDS if not meta.get(k)]
    if missing or set(meta) - set(FIELDS):
        raise ValueError(
            f"{path.name}: front matter must have exactly {FIELDS}, got {sorted(meta)}"
        )
    return Report(
        path, meta["source"], meta["cause"], meta["established"], meta["excerpt"], m.group(2)
    )


def load_corpus(folder: Path | None = None) -> list[Report]:
    return [parse_report(p) for p in sorted((folder or REPORTS).glob("*.md"))]


def evaluate(folder: Path | None = None) -> dict[str, object]:
    from torchship.compat.matrix import load_matrix
    from torchship.doctor import diagnose_report

    matrix = load_matrix()
    reports = load_corpus(folder)
    per_code: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses, false_errors, false_warnings, times = [], [], [], []
    for r in reports:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            d = diagnose_report(r.body, matrix)
            best = min(best, time.perf_counter() - start)
        times.append(best)
        named = {f.code for f in d.findings if f.severity in ("error", "warning")}
        errors = [f.code for f in d.findings if f.severity == "error"]
        false_errors += [(r.path.name, c) for c in errors if c != r.cause]
        warnings = [f.code for f in d.findings if f.severity == "warning"]
        false_warnings += [(r.path.name, c) for c in warnings if c != r.cause]
        if r.cause != NONE:
            per_code[r.cause][1] += 1
            if r.cause in named:
                per_code[r.cause][0] += 1
            else:
                misses.append((r.path.name, r.cause, sorted(named)))
    env_reports = sum(t for _, t in per_code.values())
    named_total = sum(n for n, _ in per_code.values())
    return {
        "reports": len(reports),
        "environment_reports": env_reports,
        "named_share": named_total / env_reports if env_reports else 0.0,
        "false_errors_per_report": len(false_errors) / len(reports) if reports else 0.0,
        "recall": {c: f"{n}/{t}" for c, (n, t) in sorted(per_code.items())},
        "misses": misses,
        "false_errors": false_errors,
        "false_warnings_per_report": len(false_warnings) / len(reports) if reports else 0.0,
        "false_warnings": false_warnings,
        "seconds_per_report_median": statistics.median(times),
        "seconds_per_report_max": max(times),
    }
