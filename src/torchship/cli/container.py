"""`torchship jupyter | shell | exec`: the project's image on this machine's engine.

    torchship jupyter [PROJECT] [--port 8888]       JupyterLab on 127.0.0.1, token printed once
    torchship shell [PROJECT]                      an interactive bash in the runtime image
    torchship exec [PROJECT] -- CMD ...             one command in the runtime image

The project folder is mounted at /workspace; `--data HOST:CONTAINER[:rw]` mounts data,
read-only unless `:rw`. `--dry-run` prints the exact engine command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship.cli.lock import lock_path
from torchship.conventions import CONTAINER_LABEL_PREFIX, WORKSPACE
from torchship.errors import TorchshipError, UsageError

if TYPE_CHECKING:
    from torchship.backends.docker import DockerOptions, Launch

READY_TIMEOUT_S = 120.0
LABEL_ROLE = CONTAINER_LABEL_PREFIX + "role"  # jupyter | runtime


def add_parser(sub: Any) -> None:
    for name, helptext in (
        ("jupyter", "JupyterLab in the project's image, on 127.0.0.1 with a fresh token"),
        ("shell", "an interactive shell in the project's runtime image"),
        ("exec", "run one command in the project's runtime image: exec [PROJECT] -- CMD ..."),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("project", nargs="?", default=".", help="project folder (default: .)")
        p.add_argument("--image", help="default: the tag `torchship image build` gives")
        p.add_argument("--engine", choices=("docker", "podman"), help="default: detected")
        p.add_argument("--gpus", default="0", help="a count, or 'all' (default: 0)")
        p.add_argument(
            "--data",
            action="append",
            default=[],
            metavar="HOST:CONTAINER[:rw]",
            help="mount data (read-only unless :rw); repeat",
        )
        p.add_argument("--memory-gib", type=float, help="memory limit")
        p.add_argument("--cpus", type=float, help="CPU limit")
        p.add_argument("--ipc-host", action="store_true", help="--ipc=host instead of --shm-size")
        p.add_argument("--shm-size", default="8g", help="/dev/shm size (default: 8g)")
        p.add_argument("--dry-run", action="store_true", help="print the engine command")
        if name == "jupyter":
            p.add_argument(
                "--port", type=int, help="host port on 127.0.0.1 (default: the container's, 8888)"
            )
        if name == "exec":
            p.add_argument(
                "--local",
                action="store_true",
                help="run it in the lock's environment synced on this machine, not the image",
            )
            p.add_argument("--env", metavar="NAME", help="with --local: an environment of the lock")
            p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
        p.set_defaults(run=run)


def _gpus(text: str) -> int:
    if text == "all":
        return -1
    if text.isdigit():
        return int(text)
    raise UsageError(f"--gpus {text!r} is not a count or 'all'", "e.g. --gpus 2, --gpus all")


def parse_data(spec: str) -> tuple[str, str, bool]:
    """`HOST:CONTAINER[:rw|:ro]` → (absolute host path, container path, read_only)."""
    parts = spec.split(":")
    mode = parts.pop() if len(parts) == 3 and parts[2] in ("rw", "ro") else "ro"
    if len(parts) != 2 or not parts[0] or not parts[1].startswith("/"):
        raise UsageError(
            f"--data {spec!r} is not HOST:CONTAINER[:rw]",
            "e.g. --data ./corpus:/data/corpus (read-only) or --data ./out:/out:rw",
        )
    host = Path(parts[0]).expanduser().resolve()
    if not host.exists():
        raise UsageError(f"--data {spec!r}: {host} does not exist", "fix the host path")
    return str(host), parts[1], mode == "ro"


def run(args: argparse.Namespace) -> int:
    if getattr(args, "local", False):
        from torchship.cli.env import exec_local

        return exec_local(args, _command(args))
    from dataclasses import replace

    from torchship.backends.docker import LABEL_LOCK, LABEL_SITE, SCHEME, Launch, options, run_argv
    from torchship.image.dockerfile import JUPYTER_PORT, image_tag
    from torchship.lock import read_lock

    project = Path(args.project).resolve()
    lock = read_lock(lock_path(project))
    variant = "jupyter" if args.command == "jupyter" else "runtime"
    image = args.image or image_tag(lock, variant)
    o = replace(options(args.engine), shm_size=args.shm_size, ipc_host=args.ipc_host)
    labels = {LABEL_SITE: SCHEME, LABEL_LOCK: lock.content_hash, LABEL_ROLE: variant}
    volumes = ((str(project), WORKSPACE, False), *(parse_data(d) for d in args.data))
    common: dict[str, Any] = {
        "image": image,
        "labels": labels,
        "volumes": volumes,
        "gpus": _gpus(args.gpus),
        "memory_gib": args.memory_gib,
        "cpus": args.cpus,
    }
    import secrets  # with hmac and random: not for `exec --local` (~12 ms at its start)

    suffix = secrets.token_hex(3)
    if args.command == "jupyter":
        port = JUPYTER_PORT if args.port is None else args.port
        launch = Launch(
            name=f"torchship-jupyter-{lock.name}-{suffix}",
            env_from_host=("JUPYTER_TOKEN",),  # the token never appears in the command line
            remove=True,  # `stop` ends it for good
            ports=(f"127.0.0.1:{port}:{JUPYTER_PORT}",),
            **common,
        )
        return _jupyter(o, launch, port, args.dry_run)
    if args.command == "shell":
        command: tuple[str, ...] = ("bash",)
    else:
        command = _command(args)
    launch = Launch(
        name=f"torchship-{args.command}-{suffix}",
        command=command,
        detach=False,
        interactive=args.command == "shell",
        remove=True,
        **common,
    )
    argv = run_argv(o, launch)
    if args.dry_run:
        print(shlex.join(argv))
        return 0
    import subprocess

    return subprocess.run(argv, check=False).returncode


def _command(args: argparse.Namespace) -> tuple[str, ...]:
    if args.cmd[:1] and args.cmd[0].startswith("-") and args.cmd[0] != "--":
        raise UsageError(
            f"{args.cmd[0]!r} after the project is taken as the command",
            "put options before the project and the command after --: "
            "torchship exec [--local] [--env NAME] [PROJECT] -- CMD ARGS...",
        )
    command = tuple(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)
    if not command:
        raise UsageError("exec needs a command", "torchship exec [PROJECT] -- CMD ARGS...")
    return command


def _jupyter(o: DockerOptions, launch: Launch, port: int, dry_run: bool) -> int:
    import subprocess

    from torchship.backends.docker import run_argv

    argv = run_argv(o, launch)
    if dry_run:
        print(shlex.join(argv))
        return 0
    import secrets

    token = secrets.token_urlsafe(24)
    env = {**os.environ, "JUPYTER_TOKEN": token}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TorchshipError(
            f"{o.engine} could not start JupyterLab: {last}",
            f"is the image built? `torchship image build --variant jupyter` ({launch.image})",
        )
    if not _ready(f"http://127.0.0.1:{port}/api", READY_TIMEOUT_S):
        raise TorchshipError(
            f"JupyterLab did not answer on 127.0.0.1:{port} within {READY_TIMEOUT_S:g} s",
            f"see `{o.engine} logs {launch.name}`",
        )
    print(f"JupyterLab ({launch.name}): http://127.0.0.1:{port}/lab?token={token}")
    print(f"  the token is shown only now; stop it with `{o.engine} stop {launch.name}`")
    return 0


def _ready(url: str, timeout_s: float) -> bool:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except OSError:
            time.sleep(0.5)
    return False
