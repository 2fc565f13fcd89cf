"""`torchship diff A B`: what differs between two machines, most consequential first. Each side
is a facts file (`torchship facts -o F`) or a pasted report (collect_env, an issue body, ...)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchship.doctor.facts import Facts

_HINT = "pass a file written by `torchship facts -o F`, or a pasted collect_env / issue report"


def load_side(path: str) -> Facts:
    """A facts file, or the facts a pasted report gives."""
    import json

    from torchship._files import read_pasted_text
    from torchship.compat.matrix import load_matrix
    from torchship.doctor.diagnosis import MAX_REPORT_BYTES
    from torchship.doctor.facts import FACTS_KIND, facts_from_json
    from torchship.doctor.reader import read
    from torchship.errors import UsageError

    text = read_pasted_text(path, "facts file or report", _HINT, MAX_REPORT_BYTES)
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, too deep, a 5,000-digit number
            data = None
        if isinstance(data, dict) and data.get("kind") == FACTS_KIND:
            return facts_from_json(data, path)
    facts, parts = read(text, load_matrix())
    if not parts and not (facts.torch or facts.driver or facts.gpus):
        raise UsageError(f"{path}: neither a facts file nor a report with facts in it", _HINT)
    return facts


def add_parser(sub: Any) -> None:
    p = sub.add_parser("diff", help="what differs between two machines, and what matters")
    p.add_argument("a", help="facts file (torchship facts -o a.json) or a pasted report")
    p.add_argument("b", help="facts file or pasted report")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchship.cli._output import print_json
    from torchship.doctor.diff import diff

    a, b = load_side(args.a), load_side(args.b)
    diffs = diff(a, b)
    if args.json:
        print_json({"a": args.a, "b": args.b, "differences": [d.to_json() for d in diffs]})
        return 0
    if not diffs:
        print("no differences in what both machines reported")
        return 0
    for d in diffs:
        mark = "!" if d.matters else "·"
        print(f"{mark} {d.field}: {d.a} → {d.b}")
        print(f"    {d.consequence}")
    return 0
