"""The doctor: probe a machine once (or read facts, a collect_env report, or any pasted text),
check it layer by layer, name the cause and the fix with the evidence; diff two machines.

The names below load when first used (PEP 562): importing a submodule (`doctor.facts`, which
`sync`, `exec --local` and `run` need for a machine's facts) runs this file first, and the
checks' hundreds of patterns took ~60 ms to compile that those commands never use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchship._lazy import lazy_names

if TYPE_CHECKING:
    from torchship.compat.matrix import Matrix
    from torchship.doctor.checks import Finding
    from torchship.doctor.diagnosis import Diagnosis, diagnose_report
    from torchship.doctor.facts import Facts
    from torchship.lock.model import Lock

__all__ = ["Diagnosis", "Facts", "Finding", "diagnose", "diagnose_report"]

_WHERE = {
    "Diagnosis": "torchship.doctor.diagnosis",
    "Facts": "torchship.doctor.facts",
    "Finding": "torchship.doctor.checks",
    "diagnose_report": "torchship.doctor.diagnosis",
}


__getattr__, __dir__ = lazy_names(globals(), _WHERE)


def diagnose(
    facts: Facts,
    lock: Lock | None = None,
    error_log: str = "",
    matrix: Matrix | None = None,
    cpu_job: bool = False,
) -> list[Finding]:
    """Every finding for these facts (and the program's error output), in layer order."""
    from torchship.compat.matrix import load_matrix
    from torchship.doctor.diagnosis import diagnose_facts

    return list(diagnose_facts(facts, matrix or load_matrix(), lock, error_log, cpu_job).findings)
