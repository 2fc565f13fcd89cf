"""The doctor: probe a machine once (or read facts, a collect_env report, or any pasted text),
check it layer by layer, name the cause and the fix with the evidence; diff two machines."""

from __future__ import annotations

from torchship.compat.matrix import Matrix, load_matrix
from torchship.doctor.checks import Finding
from torchship.doctor.diagnosis import Diagnosis, diagnose_facts, diagnose_report
from torchship.doctor.facts import Facts
from torchship.lock.model import Lock

__all__ = ["Diagnosis", "Facts", "Finding", "diagnose", "diagnose_report"]


def diagnose(
    facts: Facts,
    lock: Lock | None = None,
    error_log: str = "",
    matrix: Matrix | None = None,
    cpu_job: bool = False,
) -> list[Finding]:
    """Every finding for these facts (and the program's error output), in layer order."""
    return list(diagnose_facts(facts, matrix or load_matrix(), lock, error_log, cpu_job).findings)
