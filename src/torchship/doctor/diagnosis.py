"""Diagnose facts and text together: what was read, what was found, what conflicts, what was
not seen, and the one command whose output would decide it when nothing did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchship.compat.matrix import Matrix
from torchship.doctor.checks import Finding, context, run_checks
from torchship.doctor.facts import Facts
from torchship.lock.model import Lock

if TYPE_CHECKING:  # the paste reader (~40 regexes) and the signatures load for text only
    from torchship.doctor.reader import Part
    from torchship.doctor.signatures import Hit

MAX_REPORT_BYTES = 8 * 2**20


@dataclass(frozen=True, slots=True)
class Diagnosis:
    facts: Facts
    findings: tuple[Finding, ...]
    parts: tuple[Part, ...] = ()
    unseen: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    next_step: str | None = None  # the command whose output would decide, when nothing did

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.to_json() for f in self.findings],
            "facts": self.facts.to_json(),
            "report": {
                "parts": [p.to_json() for p in self.parts],
                "unseen": list(self.unseen),
                "conflicts": list(self.conflicts),
                "next": self.next_step,
            },
        }


def hits_in(text: str) -> tuple[Hit, ...]:
    if not text.strip():
        return ()
    from torchship.doctor.signatures import Text, load_signatures, scan  # only for a text

    return tuple(scan(Text(text), load_signatures()))


def _conflicts(facts: Facts, hits: list[Hit]) -> tuple[str, ...]:
    out = []
    codes = {h.signature.code: h for h in hits}
    cpu = codes.get("cpu-only-build")
    if (
        cpu
        and facts.build == "cuda"
        and not facts.sources.get("torch_cuda", "").startswith("inferred")
    ):
        out.append(
            f"the error says torch is a CPU build ({cpu.evidence}) but the report shows "
            f"{facts.torch} ({facts.sources.get('torch', facts.origin)}): the failing program "
            "ran in another environment (another Python, venv or container)"
        )
    for code in ("no-gpu-visible", "driver-not-loaded", "cpu-only-build"):
        h = codes.get(code)
        if h and facts.cuda_available is True:
            out.append(
                f"{h.evidence} says CUDA cannot be used, but the report has 'CUDA available: "
                f"True' ({facts.sources.get('cuda_available', facts.origin)}): they come from "
                "different environments or different times"
            )
            break
    return tuple(out)


def _next_step(facts: Facts, hits: list[Hit], findings: list[Finding]) -> str | None:
    if any(f.severity in ("error", "warning") for f in findings):
        return None
    if "device-assert" in facts.sources:
        return (
            "CUDA_LAUNCH_BLOCKING=1 <the same command>: a device-side assertion comes from the "
            "program's data (an index or class label out of range), and this shows which "
            "operation"
        )
    if any(h.signature.layer == "distributed" for h in hits):
        return "rerun with NCCL_DEBUG=INFO TORCH_DISTRIBUTED_DEBUG=DETAIL and paste that output"
    if not facts.torch:
        return "python -m torch.utils.collect_env"
    if facts.build == "cuda" and not facts.driver:
        return "nvidia-smi"
    return None


def _checked(
    facts: Facts,
    matrix: Matrix,
    lock: Lock | None,
    hits: tuple[Hit, ...],
    cpu_job: bool = False,
) -> tuple[list[Finding], list[Hit]]:
    """(findings, the hits that apply to these facts)."""
    ctx = context(facts, matrix, lock, hits, cpu_job)
    return run_checks(ctx), list(ctx.applied)


def diagnose_facts(
    facts: Facts,
    matrix: Matrix,
    lock: Lock | None = None,
    text: str = "",
    cpu_job: bool = False,
) -> Diagnosis:
    """Findings for facts (a probe, a facts file) and the failing program's output, if any."""
    import_error = facts.sources.get("torch_import_error", "")
    hits = hits_in(text + ("\n" + import_error if import_error else ""))
    findings, applied = _checked(facts, matrix, lock, hits, cpu_job)
    return Diagnosis(
        facts,
        tuple(findings),
        conflicts=_conflicts(facts, applied),
        next_step=_next_step(facts, applied, findings) if text else None,
    )


def diagnose_report(text: str, matrix: Matrix, lock: Lock | None = None) -> Diagnosis:
    """Findings for pasted free text: its facts, its failure lines, what it did not show."""
    from torchship.doctor.reader import read, unseen

    facts, parts = read(text, matrix)
    hits = hits_in(text)
    findings, applied = _checked(facts, matrix, lock, hits)
    if applied:
        parts = (*parts, *_error_parts(applied))
    return Diagnosis(
        facts,
        tuple(findings),
        parts=tuple(sorted(parts, key=lambda p: p.first)),
        unseen=unseen(facts),
        conflicts=_conflicts(facts, applied),
        next_step=_next_step(facts, applied, findings),
    )


def _error_parts(hits: list[Hit]) -> tuple[Part, ...]:
    from torchship.doctor.reader import Part

    return tuple(Part("error", h.line_no, h.line_no) for h in hits)


def readable(d: Diagnosis) -> bool:
    """Whether anything at all could be read: a fact, a part, or a finding."""
    return bool(d.parts or d.findings or d.facts.torch or d.facts.driver or d.facts.gpus)
