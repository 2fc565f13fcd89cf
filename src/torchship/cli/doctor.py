"""`torchship doctor`: check this machine, a facts file or a collect_env report, layer by layer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from torchship.cli._output import findings_lines, print_json
from torchship.cli.facts import runtime_mode
from torchship.compat.matrix import load_matrix
from torchship.doctor import diagnose
from torchship.doctor.checks import Finding
from torchship.doctor.collect_env import parse_collect_env
from torchship.doctor.facts import Facts, read_facts
from torchship.doctor.probe import probe
from torchship.errors import UsageError
from torchship.lock import read_lock


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="diagnose a machine: the cause and the fix")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--facts", metavar="F", help="check a facts file instead of this machine")
    src.add_argument(
        "--collect-env",
        metavar="F",
        help="check a pasted `python -m torch.utils.collect_env` report",
    )
    p.add_argument(
        "--lock",
        metavar="L",
        default=os.environ.get("TORCHSHIP_LOCK") or None,
        help="also compare the installed stack with this lock (default: $TORCHSHIP_LOCK, "
        "which torchship images set to the lock they were built from)",
    )
    p.add_argument("--error-log", metavar="F", help="the failing program's error output")
    p.add_argument("--json", action="store_true", help="print JSON (findings and facts)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--runtime", action="store_true", help="import torch for its runtime facts")
    mode.add_argument("--fast", action="store_true", help="files and package metadata only")
    p.set_defaults(run=run)


def _read_text(path: str, what: str, strict: bool = False) -> str:
    """The file's text; with `strict`, binary content is bad input rather than replaced."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(
            f"{path}: cannot read the {what} ({e.strerror})", "check the path"
        ) from None
    try:
        return raw.decode("utf-8", errors="strict" if strict else "replace")
    except UnicodeDecodeError:
        raise UsageError(
            f"{path}: is binary, not a {what}",
            "paste the whole output of `python -m torch.utils.collect_env`",
        ) from None


def gather(args: argparse.Namespace) -> Facts:
    if args.facts:
        return read_facts(Path(args.facts))
    if args.collect_env:
        text = _read_text(args.collect_env, "collect_env report", strict=True)
        return parse_collect_env(text, load_matrix(), args.collect_env)
    return probe(runtime=runtime_mode(args))


def render(facts: Facts, findings: list[Finding]) -> str:
    lines = [
        f"{facts.origin}: torch {facts.torch or '-'} · driver {facts.driver or '-'} · "
        f"{len(facts.gpus)} GPU(s) · Python {facts.python or '-'}"
    ]
    lines += findings_lines(findings)
    errors = sum(f.severity == "error" for f in findings)
    lines.append(
        f"{errors} error(s), {sum(f.severity == 'warning' for f in findings)} warning(s)"
        if findings
        else "no findings"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    lock = read_lock(Path(args.lock)) if args.lock else None
    log = _read_text(args.error_log, "error log") if args.error_log else ""
    facts = gather(args)
    findings = diagnose(facts, lock, log)
    if args.json:
        print_json({"findings": [f.to_json() for f in findings], "facts": facts.to_json()})
    else:
        print(render(facts, findings))
    return 1 if any(f.severity == "error" for f in findings) else 0
