"""The doctor's checks, one module per layer, each a declared Check record.

hardware -> driver -> cuda -> libraries -> torch -> packages -> lock, plus the findings that
failure text names (signatures, data/signatures.toml). `run_checks` merges the two: a code named
by both the facts and the text is one finding with both kinds of evidence, and the text's
failure line turns a warning the facts alone allowed into an error.
"""

from __future__ import annotations

from dataclasses import replace

from torchship.doctor.checks import cuda, driver, hardware, libraries, lock, packages, torch
from torchship.doctor.checks.base import (
    ERROR,
    INFO,
    SEVERITY_RANK,
    WARNING,
    Check,
    Context,
    Finding,
    context,
)
from torchship.doctor.checks.text import text_findings
from torchship.doctor.layers import LAYERS

__all__ = [
    "CHECKS",
    "ERROR",
    "INFO",
    "LAYERS",
    "WARNING",
    "Check",
    "Context",
    "Finding",
    "context",
    "run_checks",
]

CHECKS: tuple[Check, ...] = (
    *hardware.CHECKS,
    *driver.CHECKS,
    *cuda.CHECKS,
    *libraries.CHECKS,
    *torch.CHECKS,
    *packages.CHECKS,
    *lock.CHECKS,
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
        evidence = tuple(dict.fromkeys((*t.evidence, *f.evidence)))
        out[i] = replace(
            f,
            severity=severity,
            message=t.message if use_text and f.confidence != "high" else f.message,
            evidence=evidence,
            confidence=min(f.confidence, t.confidence, key=_CONFIDENCE_RANK.__getitem__),
            fallback=False,
        )
    if any(f.severity == ERROR and not f.fallback for f in out):
        out = [f for f in out if not f.fallback]
    return out


def _line_of(evidence: str) -> str | None:
    """ "line 12" of "line 12: ..."; None for a fact's evidence."""
    head, _, _ = evidence.partition(":")
    return head if head.startswith("line ") else None


def _supersede(findings: list[Finding], ctx: Context) -> list[Finding]:
    """One failure has one cause: a finding resting only on the lines a more specific failure
    line explains is dropped; an error with other evidence becomes a warning saying so."""
    by: dict[str, str] = {}
    lines: dict[str, set[str]] = {}
    for h in ctx.applied:
        if h.signature.severity == ERROR and not h.prose:
            for code in h.signature.supersedes:
                by.setdefault(code, h.signature.code)
                lines.setdefault(code, set()).add(f"line {h.line_no}")
    out = []
    for f in findings:
        if f.code not in by or by[f.code] == f.code or f.severity == INFO:
            out.append(f)
        elif f.evidence and all(_line_of(e) in lines[f.code] for e in f.evidence):
            continue
        elif f.severity == ERROR:
            out.append(
                replace(f, severity=WARNING, message=f"{f.message} (explained by {by[f.code]})")
            )
        else:
            out.append(f)
    return out


def _applies(check: Check, ctx: Context) -> bool:
    if check.scope == "lock":
        return ctx.lock is not None
    if check.scope == "machine":
        return ctx.facts.origin.startswith("probe")
    return True


def run_checks(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for check in CHECKS:
        if _applies(check, ctx):
            found += [replace(f, layer=f.layer or check.layer) for f in check.run(ctx)]
    merged = _supersede(_merge(found, text_findings(ctx)), ctx)
    order = {layer: i for i, layer in enumerate(LAYERS)}
    return sorted(merged, key=lambda f: (order.get(f.layer, len(order)), SEVERITY_RANK[f.severity]))
