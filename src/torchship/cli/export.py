"""`torchship export requirements`: the lock as requirements.txt with hashes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torchship.cli._output import emit
from torchship.cli.lock import lock_path
from torchship.lock import export_requirements, read_lock


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export the lock in another format")
    p.add_argument(
        "format", choices=["requirements"], help="requirements: requirements.txt with hashes"
    )
    p.add_argument("project", nargs="?", default=".", help="project folder or spec file")
    p.add_argument("-o", "--output", help="write to this file (default: standard output)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    lock = read_lock(lock_path(Path(args.project)))
    emit(export_requirements(lock), args.output, f"{len(lock.packages)} packages")
    return 0
