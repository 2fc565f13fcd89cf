"""The doctor's checks, one module per layer, each a declared Check record.

hardware -> driver -> cuda -> libraries -> torch -> packages -> lock, plus the findings that
failure text names (signatures, data/signatures.toml). `run_checks` merges the two: a code named
by both the facts and the text is one finding with both kinds of evidence, and the text's
failure line turns a warning the facts alone allowed into an error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torchship.doctor.checks import cuda, driver, hardware, libraries, lock, packages, torch
from torchship.doctor.checks.base import (
    ERROR,
    INFO,
    SEVERITY_RANK,
    WARNING,
    Check,
    Context,
    Finding,
)
from torchship.doctor.checks.text import applicable, text_findings

__all__ = ["CHECKS", "ERROR", "INFO", "WARNING", "Check", "Context", "Finding", "run_checks"]

CHECKS: tuple[Check, ...] = (
    *hardware.CHECKS,
    *driver.CHECKS,
    *cuda.CHECKS,
    *libraries.CHECKS,
    *torch.CHECKS,
    *packages.CHECKS,
    *lock.CHECKS,
)
LAYERS = (
    "hardware",
    "driver",
    "cuda",
    "libraries",
    "torch",
    "distributed",
    "build",
    "packages",
    "lock",
)
_CONFIDENCE_RANK = {"high": 0, "medium": 1, "low": 2}


def _merge(facts_found: list[Finding], text_found: list[Finding]) -> list[Finding]:
    out = list(facts_found)
    for t in text_found:
        i = next((k for k, f in enumerate(out) if f.code == t.code), None)
        if i is None:
            out.append(t)
            continue
        f = out[i]
        severity = min(f.severity, t.severity, key=SEVERITY_RANK.__getitem__)
        use_text = SEVERITY_RANK[t.severity] < SEVERITY_RANK[f.severity]
        out[i] = replace(
            f,
            severity=severity,
            message=t.message if use_text and f.confidence != "high" else f.message,
            evidence=(*t.evidence, *f.evidence),
            confidence=min(f.confidence, t.confidence, key=_CONFIDENCE_RANK.__getitem__),
            fallback=False,
        )
    if any(f.severity == ERROR and not f.fallback for f in out):
        out = [f for f in out if not f.fallback]
    return out


def _supersede(findings: list[Finding], ctx: Context) -> list[Finding]:
    """One failure has one cause: a finding that a more specific failure line explains is
    dropped when it rests on failure lines only, else an error becomes a warning saying what
    explains it."""
    by: dict[str, str] = {}
    for h in applicable(ctx):
        if h.signature.severity == ERROR:
            for code in h.signature.supersedes:
                by.setdefault(code, h.signature.code)
    out = []
    for f in findings:
        if f.code not in by or by[f.code] == f.code or f.severity == INFO:
            out.append(f)
        elif f.evidence and all(e.startswith("line ") for e in f.evidence):
            continue
        elif f.severity == ERROR:
            out.append(
                replace(f, severity=WARNING, message=f"{f.message} (explained by {by[f.code]})")
            )
        else:
            out.append(f)
    return out


def run_checks(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for check in CHECKS:
        if check.scope == "lock" and ctx.lock is None:
            continue
        found += [replace(f, layer=f.layer or check.layer) for f in check.run(ctx)]
    merged = _supersede(_merge(found, text_findings(ctx)), ctx)
    order = {layer: i for i, layer in enumerate(LAYERS)}
    return sorted(merged, key=lambda f: (order.get(f.layer, len(order)), SEVERITY_RANK[f.severity]))


def report(ctx: Context, findings: list[Finding]) -> dict[str, Any]:
    return {"findings": [x.to_json() for x in findings], "facts": ctx.facts.to_json()}
