"""Terminal output helpers: JSON and plain aligned tables. Only the CLI prints.

Every command imports this module, so it imports nothing at its top but `sys`: json, the atomic
writer and the doctor's types are loaded by the helpers that use them.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from torchship.doctor.checks import Finding

MARKS = {"error": "✗", "warning": "!", "info": "·"}


def print_json(data: Any) -> None:
    import json

    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Left-aligned columns; the last column is not padded."""
    all_rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header) - 1)]
    lines = []
    for r in all_rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def emit(text: str, output: str | None, what: str) -> None:
    """Write `text` atomically to `output` (saying so on stderr), or to standard output."""
    if output:
        from pathlib import Path

        from torchship._atomic import write_text_atomic

        write_text_atomic(Path(output), text)
        print(f"wrote {output} ({what})", file=sys.stderr)
    else:
        sys.stdout.write(text)


def findings_lines(
    findings: Sequence[Finding], info_fixes: bool = True, evidence: bool = False
) -> list[str]:
    """One line per finding (mark, layer, code, message), then its fix and (with `evidence`)
    what it rests on, indented."""
    lines = []
    for f in findings:
        sure = "" if f.confidence == "high" else f" ({f.confidence} confidence)"
        lines.append(f"{MARKS[f.severity]} [{f.layer}] {f.code}: {f.message}{sure}")
        if info_fixes or f.severity != "info":
            lines.append(f"    fix: {f.fix}")
        if evidence:
            lines += [f"    evidence: {e}" for e in f.evidence[:3]]
    return lines
