"""`torchship lock`: resolve the spec and pin every package with hashes into torchship.lock.

The library is imported inside the functions: `lock_path` is shared by every command that
reads a lock, and `torchship lock --help` needs none of it. `run` imports what uv's call needs
and no more: the lock model loads while uv resolves (torchship.lock.lock_fleet)."""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship.errors import LockFileError, UsageError

if TYPE_CHECKING:
    from torchship.lock import Lock, LockEnvironment

LOCK_FILE = "torchship.lock"  # torchship.lock.model.LOCK_FILE (a test checks they agree)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("lock", help="resolve the spec and write torchship.lock")
    p.add_argument("project", nargs="?", default=".", help="project folder or spec file")
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that the lock matches the spec (exit 1 if not)",
    )
    p.add_argument(
        "--find-links",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of wheels to use instead of the PyTorch index (repeat)",
    )
    p.add_argument(
        "--pytorch-index", metavar="URL", help="a mirror of https://download.pytorch.org/whl"
    )
    p.add_argument("--pypi-index", metavar="URL", help="a mirror of https://pypi.org/simple")
    p.add_argument(
        "--upgrade",
        nargs="*",
        metavar="PKG",
        help="move pins past the previous lock's: these packages, or every one when none named",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolution and the uv call")
    p.set_defaults(run=run)


def lock_path(project: Path) -> Path:
    """The project's lock: next to its spec, or a lock file or folder holding one alone."""
    from torchship.spec.load import find_spec_file

    if project.is_file() and project.name == LOCK_FILE:
        return project
    if project.is_dir() and (project / LOCK_FILE).is_file():
        return project / LOCK_FILE
    return find_spec_file(project).parent / LOCK_FILE


def run(args: argparse.Namespace) -> int:
    with _collector_paused():
        return _run(args)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the lock is made. Importing ~200 modules
    and the matrix makes objects by the hundred thousand and no cyclic garbage of note; the
    collector's passes over them took ~50 ms while they loaded and ~35 ms at interpreter exit
    (2 busy cores), of the ~0.35 s the lock added to uv (issue 20, scale_startup.py). At the end,
    what the lock made joins the oldest generation at once (freeze, then unfreeze), so that
    the collector, on again, does not scan all of it at the next allocation; and the process's
    exit freezes what is alive then, so that the interpreter's last passes skip it. A process
    calling `main` again (a test) keeps its collector and collects all of it as before."""
    enabled = gc.isenabled()
    gc.disable()
    atexit.unregister(gc.freeze)  # once, however many locks one process makes
    atexit.register(gc.freeze)
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


def _run(args: argparse.Namespace) -> int:
    from torchship.lock import PreviousLock, lock_fleet
    from torchship.lock.wheels import find_links_with_env
    from torchship.spec.load import load_spec

    project = Path(args.project)
    spec = load_spec(project)
    path = lock_path(project)
    if args.check:
        from torchship.lock import check_lock, read_lock

        check_lock(spec, read_lock(path), path)
        print(f"{path} is up to date with {spec.source}")
        return 0
    for flag, url in (("--pytorch-index", args.pytorch_index), ("--pypi-index", args.pypi_index)):
        if url is not None:
            from torchship.lock.validate import index_url

            try:
                index_url(url)
            except ValueError as e:
                raise UsageError(
                    f"{flag}: {e}", "an http(s) URL of an index, no user part"
                ) from None
    for d in args.find_links:
        if not Path(d).is_dir():
            raise LockFileError(f"--find-links {d}: not a folder", "pass a folder holding wheels")
    links = find_links_with_env(args.find_links, os.environ)
    if args.dry_run:
        return _dry_run(spec, path, links, args)
    reading = PreviousLock(path) if path.exists() else None  # checked while uv resolves
    upgrade = [":all:"] if args.upgrade == [] else (args.upgrade or [])
    try:
        lock, fleet = lock_fleet(
            spec, links, args.pytorch_index, args.pypi_index, previous=reading, upgrade=upgrade
        )
    finally:  # the lock being replaced could not be used: said, whatever came of the new one
        if reading is not None and reading.problem is not None:
            print(f"note: the previous lock is not used ({reading.problem})", file=sys.stderr)
    previous = reading.lock() if reading is not None else None
    from torchship.lock import lock_changes, write_lock

    write_lock(lock, path)
    cuda = f"CUDA {lock.cuda}" if lock.cuda else "CPU"
    print(
        f"locked {lock.name}: torch {lock.torch} ({lock.variant}, {cuda}) for Python {lock.python}"
    )
    print(f"  packages:   {len(lock.packages)} pinned with sha256 hashes")
    if lock.gpus:
        print(
            "  targets:    "
            + ", ".join(f"{g.name} (sm_{g.cc.replace('.', '')})" for g in lock.gpus)
            + (f" · driver ≥ {lock.driver_target}" if lock.driver_target else "")
        )
    print(f"  arch list:  {' '.join(lock.arch_list) or '-'}")
    if lock.min_driver:
        print(
            f"  min driver: {lock.min_driver}"
            + (f" · cuDNN {lock.cudnn}" if lock.cudnn else "")
            + (f" · NCCL {lock.nccl}" if lock.nccl else "")
        )
    print(f"  base image: {lock.base_image or f'none ({lock.platform_name} has no images)'}")
    print(f"  index:      {lock.index_url}")
    print("  environments: " + ", ".join(_env_line(lock, e) for e in lock.all_environments()))
    several = len(fleet.platforms) > 1
    for name, res in fleet.platforms:
        for w in res.warnings:
            at = f"{name}: " if several and not w.startswith(name) else ""
            print(f"  warning: {at}{w}")
    changes = lock_changes(previous, lock)
    if previous is not None:
        print(f"changes since the previous lock: {len(changes) or 'none'}")
        for line in changes:
            print(f"  {line}")
    print(f"wrote {path} ({lock.content_hash[:15]}…)")
    return 0


def _env_line(lock: Lock, env: LockEnvironment) -> str:
    return f"{env.name} (torch {env.torch}, {len(env.packages)} packages)"


def _dry_run(spec: Any, path: Path, links: list[str], args: argparse.Namespace) -> int:
    """The resolution of every platform and the primary environment's exact uv call."""
    import shlex

    from torchship.lock import resolve_spec_fleet
    from torchship.lock.plan import plan_compile

    fleet = resolve_spec_fleet(spec)
    res = fleet.primary
    if fleet.problem or res.chosen is None or not fleet.ok:
        print(
            f"nothing fits{': ' + fleet.problem if fleet.problem else ''}; see `torchship resolve`"
        )
        return 1
    plan = plan_compile(spec, res.chosen, links, args.pytorch_index, args.pypi_index)
    print(f"would lock {res.chosen.local_version} into {path}")
    for name, other in fleet.platforms[1:]:
        c = other.chosen
        if c is not None:
            print(
                f"  and for {name}: torch {c.release.torch} ({c.variant.name}) from {c.index_url}"
            )
    print("requirements: " + ", ".join(plan.requirements))
    print("$ " + shlex.join(plan.argv("uv")))
    return 0
