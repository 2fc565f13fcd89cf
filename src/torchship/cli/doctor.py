"""`torchship doctor`: check this machine, a facts file, a collect_env report or any pasted
text (an issue body, a chat paste, a log), layer by layer; `--deep` also exercises the GPUs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship.errors import UsageError

if TYPE_CHECKING:
    from torchship.doctor.diagnosis import Diagnosis
    from torchship.doctor.facts import Facts

_REPORT_HINT = (
    "paste an issue body, `python -m torch.utils.collect_env` output, a traceback, nvidia-smi "
    "output, a pip list, a docker command or kernel log lines"
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="diagnose a machine or a pasted report: the cause and the fix"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--facts", metavar="F", help="check a facts file instead of this machine")
    src.add_argument(
        "--collect-env",
        metavar="F",
        help="check a pasted `python -m torch.utils.collect_env` report (whole or partial)",
    )
    src.add_argument(
        "--report",
        metavar="F",
        help="read any pasted text (`-`: stdin): an issue body, tracebacks, nvidia-smi, pip "
        "list, docker commands, kernel logs, in any mix",
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
    p.add_argument(
        "--deep",
        action="store_true",
        help="also run the GPUs: a kernel and a matmul per GPU, NCCL between two, device "
        "nodes, Xid lines, dcgmi diag (in subprocesses; a minute at most)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--runtime", action="store_true", help="import torch for its runtime facts")
    mode.add_argument("--fast", action="store_true", help="files and package metadata only")
    p.set_defaults(run=run)


def gather(args: argparse.Namespace) -> Facts:
    from torchship._files import read_pasted_text
    from torchship.compat.matrix import load_matrix
    from torchship.doctor.collect_env import parse_collect_env
    from torchship.doctor.diagnosis import MAX_REPORT_BYTES
    from torchship.doctor.facts import read_facts

    if args.facts is not None:
        return read_facts(Path(args.facts))
    if args.collect_env is not None:
        text = read_pasted_text(
            args.collect_env, "collect_env report", _REPORT_HINT, MAX_REPORT_BYTES
        )
        return parse_collect_env(text, load_matrix(), args.collect_env)
    from torchship.doctor.probe import probe

    return probe(runtime=True if args.runtime else False if args.fast else None)


def render(d: Diagnosis) -> str:
    from torchship.cli._output import findings_lines

    facts = d.facts
    lines = [
        f"{facts.origin}: torch {facts.torch or '-'} · driver {facts.driver or '-'} · "
        f"{len(facts.gpus)} GPU(s) · Python {facts.python or '-'}"
    ]
    if d.parts:
        kinds = sorted({p.kind for p in d.parts})
        lines.append("read: " + ", ".join(kinds))
    lines += findings_lines(list(d.findings), evidence=True)
    lines += [f"! conflict: {c}" for c in d.conflicts]
    if facts.origin == "report" and d.unseen:
        lines.append("not in the text: " + ", ".join(d.unseen))
    if d.next_step:
        lines.append(f"no environment cause found; to decide, run: {d.next_step}")
    errors = d.errors
    warnings = sum(f.severity == "warning" for f in d.findings)
    lines.append(f"{errors} error(s), {warnings} warning(s)" if d.findings else "no findings")
    return "\n".join(lines)


def _diagnose(args: argparse.Namespace) -> Diagnosis:
    from torchship._files import read_pasted_text
    from torchship.compat.matrix import load_matrix
    from torchship.doctor.diagnosis import (
        MAX_REPORT_BYTES,
        diagnose_facts,
        diagnose_report,
        readable,
    )
    from torchship.lock import read_lock

    lock = read_lock(Path(args.lock)) if args.lock else None
    matrix = load_matrix()
    if args.report is not None:
        text = read_pasted_text(args.report or "''", "report", _REPORT_HINT, MAX_REPORT_BYTES)
        if args.error_log is not None:  # the program's output belongs to the same story
            text += "\n" + read_pasted_text(
                args.error_log, "error log", _REPORT_HINT, MAX_REPORT_BYTES
            )
        if not text.strip():
            raise UsageError(f"{args.report}: is empty", _REPORT_HINT)
        d = diagnose_report(text, matrix, lock)
        if not readable(d):
            raise UsageError(
                f"{args.report}: nothing in it could be read (no collect_env, traceback, "
                "nvidia-smi, package list, docker command, kernel log or known error)",
                _REPORT_HINT,
            )
        return d
    log = (
        read_pasted_text(args.error_log, "error log", _REPORT_HINT, MAX_REPORT_BYTES)
        if args.error_log is not None
        else ""
    )
    return diagnose_facts(gather(args), matrix, lock, log)


def run(args: argparse.Namespace) -> int:
    if args.deep and any(x is not None for x in (args.report, args.facts, args.collect_env)):
        raise UsageError("--deep checks this machine", "drop --report/--facts/--collect-env")
    from torchship.cli._output import print_json
    from torchship.doctor.diagnosis import Diagnosis

    d = _diagnose(args)
    deep = None
    if args.deep:
        from torchship.doctor.deep import run_deep

        deep = run_deep(d.facts)
        d = Diagnosis(
            d.facts, (*d.findings, *deep.findings), d.parts, d.unseen, d.conflicts, d.next_step
        )
    if args.json:
        data = d.to_json()
        if deep is not None:
            data["deep"] = deep.to_json()
        print_json(data)
    else:
        print(render(d))
        if deep is not None:
            print(deep.render())
    return 1 if d.errors else 0
