"""The doctor: probe a machine once (or read facts / a collect_env report), check it layer by
layer, name the cause and the fix; diff two machines."""

from __future__ import annotations

from torchship.compat.matrix import Matrix, load_matrix
from torchship.doctor.checks import Context, Finding, run_checks
from torchship.doctor.facts import Facts
from torchship.lock.model import Lock

__all__ = ["Facts", "Finding", "diagnose"]


def diagnose(
    facts: Facts,
    lock: Lock | None = None,
    error_log: str = "",
    matrix: Matrix | None = None,
    cpu_job: bool = False,
) -> list[Finding]:
    """Every finding for these facts, in layer order."""
    return run_checks(Context(facts, matrix or load_matrix(), lock, error_log, cpu_job))
