"""`torchship image render|build`: eject a plain Dockerfile, or build it with the local engine."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from torchship.cli.lock import lock_path
from torchship.image import VARIANTS, RenderOptions, render
from torchship.image.build import ENGINES, build, build_argv, detect_engine, write_context
from torchship.lock import read_lock


def add_parser(sub: Any) -> None:
    p = sub.add_parser("image", help="render or build the project's image from its lock")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    for name, helptext in (
        ("render", "write the Dockerfile and its context files (any engine builds them)"),
        ("build", "build the image with docker, podman or buildah"),
    ):
        q = isub.add_parser(name, help=helptext)
        q.add_argument("project", nargs="?", default=".", help="project folder (default: .)")
        q.add_argument("--variant", default="runtime", choices=VARIANTS)
        q.add_argument("--base-image", help="use this base instead of the lock's")
        q.add_argument("--python", help="the base image's Python interpreter, when it has one")
        q.set_defaults(run=run)
        if name == "render":
            q.add_argument("-o", "--output", metavar="DIR", help="write into DIR (else stdout)")
        else:
            q.add_argument("--engine", choices=ENGINES, help="default: the first one installed")
            q.add_argument("--tag", help="default: <name>:<torch>-<variant>-py<X.Y>-<lockhash8>")
            q.add_argument("--dry-run", action="store_true", help="print the engine command")


def run(args: argparse.Namespace) -> int:
    lock = read_lock(lock_path(Path(args.project)))
    opts = RenderOptions(variant=args.variant, base_image=args.base_image, python=args.python)
    rendered = render(lock, opts)
    if args.image_command == "render":
        if not args.output:
            sys.stdout.write(rendered.dockerfile)
            return 0
        write_context(rendered, Path(args.output))
        names = ", ".join(["Dockerfile", *rendered.files])
        print(f"wrote {args.output}: {names} (tag {rendered.tag})", file=sys.stderr)
        return 0
    tag = args.tag or rendered.tag
    engine = args.engine or detect_engine()
    if args.dry_run:
        print(shlex.join(build_argv(engine, Path("CONTEXT"), tag)))
        return 0
    context = Path(tempfile.mkdtemp(prefix="torchship-image-"))
    argv = build_argv(engine, context, tag)
    write_context(rendered, context)
    print(f"building {tag} with {argv[0]} (context {context})", file=sys.stderr)
    build(argv, context / "build.log", env={**os.environ, "DOCKER_BUILDKIT": "1"})
    print(f"built {tag}")
    return 0
