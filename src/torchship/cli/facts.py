"""`torchship facts`: this machine's facts as versioned JSON."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("facts", help="write this machine's facts as JSON")
    p.add_argument("-o", "--output", help="write to this file (default: standard output)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--runtime", action="store_true", help="import torch for its runtime facts")
    mode.add_argument("--fast", action="store_true", help="files and package metadata only")
    p.set_defaults(run=run)


def runtime_mode(args: argparse.Namespace) -> bool | None:
    return True if args.runtime else False if args.fast else None


def run(args: argparse.Namespace) -> int:
    import json

    from torchship.cli._output import emit
    from torchship.doctor.probe import probe

    facts = probe(runtime=runtime_mode(args))
    text = json.dumps(facts.to_json(), indent=2, ensure_ascii=False) + "\n"
    emit(text, args.output, f"facts schema {facts.schema_version}, {facts.origin}")
    return 0
