"""Read what people paste: a GitHub issue body, a chat message, a log. Find the parts in it
(collect_env of any version, `transformers-cli env`, tracebacks, nvidia-smi tables and -q/-L
output, pip list/freeze, conda list, docker/compose/Kubernetes snippets, environment dumps,
ldd/ldconfig, dmesg/journal lines) and turn each into facts, every fact with the line it came
from (`Facts.sources`).

Partial input is normal: a fact the text does not give stays None, and `unseen()` says which of
the facts that decide most failures were not in it. Nothing here guesses: a torch version
without a build tag is interpreted only where the platform is known (Linux x86_64 from PyPI: that
release's default CUDA build; Windows and macOS PyPI wheels: CPU builds), and says so.
"""

from __future__ import annotations

from torchship.compat.matrix import Matrix
from torchship.doctor.facts import Facts, platform_of
from torchship.doctor.reader.builder import Part, _Builder
from torchship.doctor.reader.infer import _facts, unseen
from torchship.doctor.reader.lines import (
    MAX_STRUCTURED_LINE,
    _key_values,
    _launch,
    _mentions,
    _nvidia_smi,
    _packages,
    _paths,
    _standalone_torch,
)

__all__ = ["Part", "platform_of", "read", "unseen"]

# Lines read for facts: the head of a paste (environment reports come first) and its tail (the
# last error); a longer log's middle is still scanned for failure lines (signatures), not read.
HEAD_LINES, TAIL_LINES = 60_000, 20_000


def read(text: str, matrix: Matrix) -> tuple[Facts, tuple[Part, ...]]:
    """Facts from free text, each with its line (Facts.sources), and the parts found."""
    lines = text.split("\n")  # as the signature scan counts lines: evidence line numbers agree
    b = _Builder(lines)
    block: str | None = None
    cudnn_files = False  # inside collect_env's "cuDNN version: Probably one of the following:"
    skip = range(HEAD_LINES, max(HEAD_LINES, len(lines) - TAIL_LINES))
    for n, raw in enumerate(lines, 1):
        if n - 1 in skip:
            if n - 1 == skip.start:
                b.sources["lines-not-read"] = f"lines {skip.start + 1}-{skip.stop}"
            continue
        if len(raw) > MAX_STRUCTURED_LINE:
            block = None
            continue
        line = raw.rstrip()
        if line.startswith("|") and line.count("|") == 3 and "---" not in line:
            line = _table_row(line)
        if not line.strip():
            block = None if block not in ("pip-list", "conda-list") else block
            continue
        if cudnn_files and line.lstrip().startswith("/") and "libcudnn" in line:
            b.values.setdefault("system_cudnn", [])
            b.values["system_cudnn"].append(line.strip())
            b.sources.setdefault("system_cudnn", b.where(n))
            continue
        cudnn_files = line.lower().startswith("cudnn version:") and "probably" in line.lower()
        if ":" in line and _key_values(b, n, line):
            block = None
            _mentions(b, n, line)
            continue
        if _nvidia_smi(b, n, line):
            _mentions(b, n, line)
            continue
        block = _packages(b, n, line, block)
        _launch(b, n, line)
        _paths(b, n, line)
        _standalone_torch(b, n, line)
        _mentions(b, n, line)
    b.settle()
    return _facts(b, matrix), tuple(b.parts)


def _table_row(line: str) -> str:
    """`| torch | 2.1.0 |` (a markdown table of versions) read as `torch: 2.1.0`."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return f"{cells[0]}: {cells[1]}" if len(cells) == 2 and cells[0] and cells[1] else line
