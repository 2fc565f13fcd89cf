"""Findings from failure text: each signature hit that its predicates allow becomes a finding
whose evidence is the line itself, one finding per code. (A signature that supersedes another
code drops or demotes that code's errors: checks.run_checks; one failure has one cause.)"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from torchship.doctor.checks.base import ERROR, HIGH, LOW, WARNING, Context, Finding

if TYPE_CHECKING:  # the hits come from an error text; a machine's checks load no signatures
    from torchship.doctor.signatures import Hit

MAX_EVIDENCE = 3


def finding_of(hit: Hit, evidence: tuple[str, ...] | None = None) -> Finding:
    """The finding one hit's signature states, rendered from the hit's line."""
    sig = hit.signature
    return Finding(
        sig.code,
        sig.severity,
        sig.render(sig.message, hit),
        sig.render(sig.fix, hit),
        sig.layer,
        evidence=(hit.evidence,) if evidence is None else evidence,
        confidence=HIGH,
    )


def text_findings(ctx: Context) -> list[Finding]:
    hits = ctx.applied
    by_code: dict[str, list[Hit]] = {}
    for h in hits:
        by_code.setdefault(h.signature.code, []).append(h)
    out = []
    for group in by_code.values():
        group.sort(key=lambda h: (h.prose, h.signature.severity != ERROR, h.line_no))
        found = finding_of(group[0], tuple(h.evidence for h in group[:MAX_EVIDENCE]))
        if all(h.prose for h in group):  # quoted in the reporter's sentence, not seen emitted
            found = replace(
                found,
                severity=WARNING if found.severity == ERROR else found.severity,
                message=found.message
                + " (the text quotes this message in a sentence; no output shows it)",
                confidence=LOW,
            )
        out.append(found)
    return out
