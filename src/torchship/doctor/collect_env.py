"""A pasted `python -m torch.utils.collect_env` report (torch 1.x to 2.15), whole or partial.

The report is read by the general reader (torchship.doctor.reader), which maps what the report
says to what it means, not to what it is labelled:
  "CUDA runtime version" is the host's nvcc, not torch's CUDA  -> Facts.host_nvcc
  "cuDNN version" lists the system's libcudnn files, not torch's -> Facts.system_cudnn
The arch list, and torch's own cuDNN/NCCL, are never in a report: they are inferred from the
compatibility matrix for the reported torch build, and `sources` says so. A cut-short report is
read for what it has; only text with nothing of a report in it is refused.
"""

from __future__ import annotations

from dataclasses import replace

from torchship._files import is_binary
from torchship.compat.matrix import Matrix
from torchship.doctor.facts import Facts
from torchship.doctor.reader import read
from torchship.errors import UsageError

_HINT = "paste the output of `python -m torch.utils.collect_env` (or use --report for any text)"


def parse_collect_env(text: str, matrix: Matrix, where: str = "report") -> Facts:
    """Facts from a collect_env report; raises UsageError (exit 2) when there is none in it."""
    if not text.strip():
        raise UsageError(f"{where}: is empty", _HINT)
    if is_binary(text):
        raise UsageError(f"{where}: is binary, not a collect_env report", _HINT)
    facts, parts = read(text, matrix)
    if not any(p.kind == "collect-env" for p in parts):
        raise UsageError(f"{where}: does not look like a collect_env report", _HINT)
    return replace(facts, origin="collect-env")
