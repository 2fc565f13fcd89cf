"""`torchship init`: write a commented torchship.toml; --detect records this host's targets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("init", help="write a commented torchship.toml")
    p.add_argument("folder", nargs="?", default=".", help="project folder (default: here)")
    p.add_argument(
        "--detect", action="store_true", help="record this host's NVIDIA driver and GPUs as targets"
    )
    p.add_argument("--torch", help="torch version or range (default: the newest release known)")
    p.add_argument("--python", help="Python version (default: this interpreter's)")
    p.add_argument("--name", help="project name (default: the folder's name)")
    p.add_argument("--force", action="store_true", help="overwrite an existing torchship.toml")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchship.compat.matrix import load_matrix
    from torchship.compat.request import Request, check_torch_known
    from torchship.errors import UsageError
    from torchship.init import default_python, detect, render_spec, write_spec
    from torchship.spec.fields import parse_python, parse_torch
    from torchship.spec.load import safe_name

    m = load_matrix()
    folder = Path(args.folder)
    torch = args.torch or m.releases[-1].torch
    try:
        spec, _ = parse_torch(torch)
        python = parse_python(args.python) if args.python else default_python(m, torch)
    except ValueError as e:
        raise UsageError(str(e), "see `torchship init --help`") from None
    check_torch_known(Request(torch=spec, torch_text=torch), m, "", "--torch")
    name = safe_name(args.name or folder.resolve().name)
    detected = detect(m) if args.detect else None
    path = write_spec(folder, render_spec(name, torch, python, detected), args.force)
    if detected is not None:
        for note in detected.notes:
            print(f"detected: {note}")
    print(f"wrote {path}; next: `torchship lock {folder}`")
    return 0
