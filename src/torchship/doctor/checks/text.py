"""Findings from failure text: each signature hit that its predicates allow becomes a finding
whose evidence is the line itself, one finding per code. (A signature that supersedes another
code drops or demotes that code's errors: checks.run_checks; one failure has one cause.)"""

from __future__ import annotations

from torchship.doctor.checks.base import ERROR, HIGH, LOW, WARNING, Context, Finding
from torchship.doctor.signatures import Hit

MAX_EVIDENCE = 3


def text_findings(ctx: Context) -> list[Finding]:
    hits = ctx.applied
    by_code: dict[str, list[Hit]] = {}
    for h in hits:
        by_code.setdefault(h.signature.code, []).append(h)
    out = []
    for code, group in by_code.items():
        group.sort(key=lambda h: (h.prose, h.signature.severity != ERROR, h.line_no))
        first = group[0]
        sig = first.signature
        severity = sig.severity
        message = sig.render(sig.message, first)
        confidence = HIGH
        if all(h.prose for h in group):  # quoted in the reporter's sentence, not seen emitted
            severity = WARNING if severity == ERROR else severity
            confidence = LOW
            message += " (the text quotes this message in a sentence; no output shows it)"
        out.append(
            Finding(
                code,
                severity,
                message,
                sig.render(sig.fix, first),
                sig.layer,
                evidence=tuple(h.evidence for h in group[:MAX_EVIDENCE]),
                confidence=confidence,
            )
        )
    return out
