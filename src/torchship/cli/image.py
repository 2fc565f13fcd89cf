"""`torchship image render|build|pin-base`: eject a plain Dockerfile, build it with the local
engine, or pin the lock's base image by digest."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship.cli.lock import lock_path
from torchship.errors import UsageError

if TYPE_CHECKING:
    from torchship.image import Rendered
    from torchship.lock import Lock

# The choices the parser offers, repeated from the modules that render and build (which
# `torchship image --help` does not import); a test checks that they agree.
VARIANTS = ("runtime", "jupyter", "ssh", "devel")  # torchship.image.VARIANTS
ENGINES = ("docker", "podman", "buildah")  # torchship.image.build.ENGINES


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
        q.add_argument("--uv-image", help="an image holding /uv (default: uv's pinned image)")
        q.add_argument(
            "--find-links", metavar="DIR", help="wheels uv may take (their hashes are checked)"
        )
        q.add_argument(
            "--pytorch-index",
            metavar="URL",
            help="a mirror of the lock's PyTorch index ('none': only --find-links wheels)",
        )
        q.add_argument(
            "--no-agent", action="store_true", help="leave torchship itself out of the image"
        )
        which = q.add_mutually_exclusive_group()
        which.add_argument("--env", metavar="NAME", help="an environment of the lock to install")
        which.add_argument(
            "--platform",
            metavar="P",
            help="the lock's environment for platform P (linux-aarch64): its CUDA build if any",
        )
        q.set_defaults(run=run)
        if name == "render":
            q.add_argument("-o", "--output", metavar="DIR", help="write into DIR (else stdout)")
        else:
            q.add_argument("--engine", choices=ENGINES, help="default: the first one installed")
            q.add_argument("--tag", help="default: <name>:<torch>-<variant>-py<X.Y>-<lockhash8>")
            q.add_argument(
                "--ca-bundle",
                metavar="FILE",
                help="CA bundle for a TLS-intercepting proxy, as a build secret "
                "(default: $SSL_CERT_FILE when set)",
            )
            q.add_argument(
                "--engine-arg",
                action="append",
                default=[],
                metavar="ARG",
                help="passed to the engine as is (repeat), e.g. --engine-arg=--network=host",
            )
            q.add_argument("--dry-run", action="store_true", help="print the engine command")
    q = isub.add_parser("pin-base", help="record the base image's digest in the lock")
    q.add_argument("project", nargs="?", default=".", help="project folder (default: .)")
    q.add_argument("--digest", help="sha256:… (default: ask the engine for the pulled base's)")
    q.add_argument("--engine", choices=ENGINES, help="default: the first one installed")
    q.set_defaults(run=run_pin_base)


def run(args: argparse.Namespace) -> int:
    import shlex
    import shutil
    import tempfile

    from torchship.image import RenderOptions, render
    from torchship.image.build import (
        build,
        build_argv,
        default_ca_bundle,
        detect_engine,
        write_context,
    )
    from torchship.lock import read_lock

    project = Path(args.project)
    lock = read_lock(lock_path(project))
    env = args.env or (platform_env(lock, args.platform) if args.platform else None)
    opts = RenderOptions(
        variant=args.variant,
        base_image=args.base_image,
        python=args.python,
        agent=not args.no_agent,
        find_links="wheels" if args.find_links else None,
        pytorch_index="" if args.pytorch_index == "none" else args.pytorch_index,
        env=env,
        **({"uv_image": args.uv_image} if args.uv_image else {}),
    )
    rendered = render(lock, opts)
    if args.image_command == "render":
        if not args.output:
            sys.stdout.write(rendered.dockerfile)
            return 0
        write_context(rendered, Path(args.output), wheels=args.find_links)
        names = ", ".join(["Dockerfile", *rendered.files, *_dirs(rendered, args.find_links)])
        print(f"wrote {args.output}: {names} (tag {rendered.tag})", file=sys.stderr)
        return 0
    tag = args.tag or rendered.tag
    engine = args.engine or detect_engine()
    ca = Path(args.ca_bundle) if args.ca_bundle else default_ca_bundle(os.environ)
    if ca is not None and not ca.is_file():
        raise UsageError(f"--ca-bundle {ca}: no such file", "give the path of a PEM bundle")
    secrets = {"ca-bundle": ca} if ca else {}
    # reproducible timestamps: BuildKit and buildah clamp file and image times to this
    build_args = {"SOURCE_DATE_EPOCH": "0"}
    kw: dict[str, Any] = {"build_args": build_args, "secrets": secrets, "extra": args.engine_arg}
    kw["platform"] = rendered.platform
    if args.dry_run:
        print(shlex.join(build_argv(engine, Path("CONTEXT"), tag, **kw)))
        return 0
    context = Path(tempfile.mkdtemp(prefix="torchship-image-"))
    argv = build_argv(engine, context, tag, **kw)
    write_context(rendered, context, wheels=args.find_links)
    print(f"building {tag} with {engine} (context {context})", file=sys.stderr)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    build(argv, context / "build.log", env=env, progress=lambda s: print(f"  {s}", file=sys.stderr))
    shutil.rmtree(context)  # the context holds the wheels (hundreds of MB); kept only on failure
    print(f"built {tag}")
    return 0


def platform_env(lock: Lock, text: str) -> str | None:
    """The environment of `lock` for platform `text`: its CUDA build where it has one, else its
    cpu one; None for the primary environment's platform (the default image)."""
    from torchship.compat.platforms import parse_platform

    try:
        name = parse_platform(text)
    except ValueError as e:
        raise UsageError(f"--platform: {e}", "name a platform of the lock") from None
    envs = [e for e in lock.all_environments() if e.platform_name == name]
    if not envs:
        have = ", ".join(lock.platforms())
        raise UsageError(
            f"the lock of {lock.name} has no environment for {name} (it has {have})",
            f"add {name} to [targets] platforms and re-lock",
        )
    if name == lock.platform_name:
        return None
    return next((e for e in envs if e.variant != "cpu"), envs[0]).name


def _dirs(rendered: Rendered, wheels: str | None) -> list[str]:
    return [
        *(["torchship-agent/"] if rendered.agent_files else []),
        *(["wheels/"] if wheels else []),
    ]


def run_pin_base(args: argparse.Namespace) -> int:
    from torchship.image.build import base_digest, detect_engine
    from torchship.lock import read_lock
    from torchship.lock.model import pin_base

    path = lock_path(Path(args.project))
    lock = read_lock(path)
    digest = args.digest or base_digest(args.engine or detect_engine(), lock.base_image)
    pinned = pin_base(lock, digest, path)
    print(f"{path}: base {pinned.base_image}@{digest} (lock {pinned.short_hash})")
    return 0
