"""Lock environments made real: pick the one for this machine (pick.py, pure), build it with
uv into torchship's cache and find it again by its content hash (sync.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from torchship.compat.matrix import Matrix, load_matrix
from torchship.doctor.facts import Facts
from torchship.env.pick import Host, Pick, host_of, pick_environment, platform_problem
from torchship.env.sync import (
    Printer,
    SyncedEnv,
    agent_path,
    cache_dir,
    envs_dir,
    installed,
    list_envs,
    prune,
    run_env,
    sync,
)
from torchship.lock.model import Lock

__all__ = [
    "Host",
    "Pick",
    "SyncedEnv",
    "agent_path",
    "cache_dir",
    "env_facts",
    "envs_dir",
    "host_of",
    "installed",
    "list_envs",
    "pick_environment",
    "platform_problem",
    "prune",
    "run_env",
    "sync",
    "sync_lock",
    "this_host",
]


def this_host(facts: Facts) -> Host:
    """The platform of this machine, whose `facts` were probed here: the OS (and macOS's
    version) from the interpreter, which facts do not record."""
    import platform

    system = platform.system()
    macos = platform.mac_ver()[0] if system == "Darwin" else None
    return host_of(facts, system, macos)


def sync_lock(
    lock: Lock,
    facts: Facts,
    name: str | None = None,
    find_links: Sequence[str] = (),
    say: Printer | None = None,
    stream: TextIO | None = None,
    root: Path | None = None,
    matrix: Matrix | None = None,
) -> tuple[Pick, SyncedEnv]:
    """The environment of `lock` for this machine, which `facts` describe (or `name`), synced."""
    pick = pick_environment(lock, facts, matrix or load_matrix(), name, this_host(facts))
    synced = sync(pick.env, root, find_links, say, stream, lock.name)
    return pick, synced


def site_packages(venv: Path) -> Path | None:
    return next((venv / "lib").glob("python3*/site-packages"), None)


def env_facts(host: Facts, synced: SyncedEnv) -> Facts:
    """This machine's facts, with the Python side (interpreter, packages, torch's build) read
    from the synced environment, which is what the job will really run on."""
    from dataclasses import replace

    from torchship.doctor.probe import torch_version_file

    site = site_packages(synced.path)
    version, cuda = torch_version_file(site / "torch") if site else (None, None)
    python = None
    for line in (synced.path / "pyvenv.cfg").read_text("utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            python = value.strip()
    sources = {**host.sources, "packages": f"environment {synced.name} ({synced.path})"}
    return replace(
        host,
        python=python,
        packages=installed(synced.path),
        torch=version,
        torch_cuda=cuda,
        sources=sources,
    )
