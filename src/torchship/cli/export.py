"""`torchship export requirements`: the lock as requirements.txt with hashes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export the lock in another format")
    p.add_argument(
        "format", choices=["requirements"], help="requirements: requirements.txt with hashes"
    )
    p.add_argument("project", nargs="?", default=".", help="project folder or spec file")
    p.add_argument("-o", "--output", help="write to this file (default: standard output)")
    p.add_argument("--env", metavar="NAME", help="an environment of the lock (default: primary)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchship.cli._output import emit
    from torchship.cli.lock import lock_path
    from torchship.lock import export_requirements, read_lock
    from torchship.lock.model import lock_environment

    lock = read_lock(lock_path(Path(args.project)))
    env = lock.primary if args.env is None else lock_environment(lock, args.env)
    text = export_requirements(lock, env=env.name)
    emit(text, args.output, f"{len(env.packages)} packages of environment {env.name}")
    return 0
