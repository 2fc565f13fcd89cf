"""`torchship sync`, `torchship env list|path|prune`, and `exec --local`: the lock's
environments made real on this machine (torchship.env)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from torchship.cli._output import print_json
from torchship.cli.lock import lock_path
from torchship.errors import EnvError, UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sync", help="build the lock's environment for this machine; print its path")
    p.add_argument("project", nargs="?", default=".", help="project folder or lock file")
    _env_flags(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print what was synced as JSON")
    p.set_defaults(run=run_sync)
    e = sub.add_parser("env", help="the synced environments in torchship's cache")
    esub = e.add_subparsers(dest="env_command", metavar="list|path|prune", required=True)
    ls = esub.add_parser("list", help="every cached environment")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    path = esub.add_parser("path", help="the environment sync would use here (exit 1: not synced)")
    path.add_argument("project", nargs="?", default=".", help="project folder or lock file")
    path.add_argument("--env", metavar="NAME", help="an environment of the lock")
    path.set_defaults(run=run_path)
    pr = esub.add_parser("prune", help="remove unused environments and leftovers of killed syncs")
    pr.add_argument("--all", action="store_true", help="remove every cached environment")
    pr.add_argument(
        "--older-than-days",
        type=float,
        default=30.0,
        metavar="D",
        help="remove environments unused for D days (default: 30)",
    )
    pr.set_defaults(run=run_prune)


def _env_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", metavar="NAME", help="an environment of the lock (default: picked)")
    p.add_argument(
        "--find-links",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder holding locked files (as well as PIP_FIND_LINKS); repeat",
    )


def synced_for(args: argparse.Namespace, quiet: bool = False, facts: Any = None) -> Any:
    """Read the project's lock, pick its environment for this machine (`facts`, when not
    given: torchship.env.host_facts), sync it."""
    from torchship.compat.matrix import load_matrix
    from torchship.env import host_facts, sync_lock
    from torchship.lock import check_lock_file, read_lock

    for d in getattr(args, "find_links", []):
        if not Path(d).is_dir():
            raise UsageError(f"--find-links {d}: not a folder", "pass a folder holding wheels")
    path = lock_path(Path(args.project))
    lock = read_lock(path)
    check_lock_file(lock, path)
    say = None if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    m = load_matrix()
    pick, synced = sync_lock(
        lock,
        host_facts(m) if facts is None else facts,
        args.env,
        getattr(args, "find_links", []),
        say,
        None if quiet else sys.stderr,
        matrix=m,
    )
    if not quiet:
        print(f"environment {pick.env.name}: {pick.reason}", file=sys.stderr)
    return pick, synced


def run_sync(args: argparse.Namespace) -> int:
    started = time.monotonic()
    pick, synced = synced_for(args, args.quiet)
    if args.json:
        print_json(
            {
                "env": synced.name,
                "key": synced.key,
                "path": str(synced.path),
                "python": str(synced.python),
                "cached": synced.cached,
                "reason": pick.reason,
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    else:
        print(synced.path)
    return 0


def run_path(args: argparse.Namespace) -> int:
    from torchship.compat.matrix import load_matrix
    from torchship.env import envs_dir, host_facts, pick_environment, this_host
    from torchship.env.sync import cached, env_path
    from torchship.lock import read_lock

    lock = read_lock(lock_path(Path(args.project)))
    m = load_matrix()
    facts = host_facts(m)
    pick = pick_environment(lock, facts, m, args.env, this_host(facts))
    hit = cached(pick.env, envs_dir())
    if hit is None:
        raise EnvError(
            f"environment {pick.env.name} of {lock.name} is not synced "
            f"(it would be {env_path(pick.env, envs_dir())})",
            f"run `torchship sync {args.project}`",
        )
    print(hit.path)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from torchship.env import envs_dir, list_envs

    envs = list_envs(sizes=True)
    if args.json:
        print_json([{"path": str(e.path), "size_bytes": e.size_bytes, **e.info} for e in envs])
        return 0
    if not envs:
        print(f"no environments in {envs_dir()}")
        return 0
    for e in envs:
        i = e.info
        state = "incomplete" if i.get("incomplete") else f"torch {i.get('torch')}"
        used = _age(e.path)
        size = f"{(e.size_bytes or 0) / 2**20:,.0f} MiB"
        print(f"{e.path.name:<24} {i.get('lock', ''):<16} {state:<22} {size:>10}  used {used}")
    return 0


def _age(path: Path) -> str:
    from torchship.env.places import MARKER

    try:
        days = (time.time() - (path / MARKER).stat().st_mtime) / 86400
    except OSError:
        return "never"
    return "today" if days < 1 else f"{days:.0f} d ago"


def run_prune(args: argparse.Namespace) -> int:
    from torchship.env import envs_dir, prune

    removed = prune(all_envs=args.all, older_than_s=args.older_than_days * 86400)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} removed from {envs_dir()}")
    return 0


def exec_local(args: argparse.Namespace, command: tuple[str, ...]) -> int:
    """`torchship exec --local [PROJECT] -- CMD`: CMD inside the synced environment, as
    `uv run` runs it (replacing this process: its exit code is CMD's). A start whose inputs
    match the last one's takes its answer from the memo (torchship.env.memo)."""
    from torchship.env.memo import digest, from_files, remember, remembered
    from torchship.env.places import run_environ

    links = list(getattr(args, "find_links", []))
    key = digest(args.project, args.env, links)
    hit = remembered(args.project, args.env, key) if key and not args.dry_run else None
    if hit is not None:
        name, venv, agent = hit
        _exec(name, venv, command, run_environ(venv, agent, os.environ))
    from torchship.compat.matrix import load_matrix
    from torchship.env import agent_path, host_facts, run_env

    facts = host_facts(load_matrix())
    pick, synced = synced_for(args, quiet=True, facts=facts)
    agent = agent_path()
    env = run_env(synced, agent, os.environ)
    if args.dry_run:
        print(f"VIRTUAL_ENV={synced.path} " + " ".join(command))
        return 0
    # only inputs that did not change while the full start read them
    if key and from_files(facts.sources) and digest(args.project, args.env, links) == key:
        packages = {p.name: p.version for p in pick.env.packages}  # what cached() held it to
        remember(args.project, args.env, key, synced.name, synced.path, agent, packages)
    _exec(synced.name, synced.path, command, env)
    return 0  # not reached: _exec replaces this process


def _exec(name: str, venv: Path, command: tuple[str, ...], env: dict[str, str]) -> None:
    python = str(venv / "bin" / "python")
    argv = [python, *command[1:]] if command[0] in ("python", "python3") else list(command)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        raise UsageError(
            f"cannot run {argv[0]!r} in environment {name}: {e.strerror}",
            "name a program of the environment (python, torchrun) or on PATH",
        ) from None
