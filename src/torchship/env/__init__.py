"""Lock environments made real: pick the one for this machine (pick.py, pure), build it with
uv into torchship's cache and find it again by its content hash (sync.py).

The names below load when first used (PEP 562): `torchship exec --local` starting from its
memo (memo.py) imports this package without the lock model, the matrix or uv's driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from torchship._lazy import lazy_names

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torchship.compat.matrix import Matrix
    from torchship.doctor.facts import Facts
    from torchship.doctor.probe import CommandRunner
    from torchship.env.pick import Host, Pick, host_of, pick_environment, platform_problem
    from torchship.env.places import cache_dir, envs_dir, installed
    from torchship.env.sync import (
        Printer,
        SyncedEnv,
        agent_path,
        list_envs,
        prune,
        run_env,
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
    "host_facts",
    "host_of",
    "installed",
    "list_envs",
    "pick_environment",
    "platform_problem",
    "prune",
    "run_env",
    "sync_lock",
    "this_host",
]

_PICK = ("Host", "Pick", "host_of", "pick_environment", "platform_problem")
_PLACES = ("cache_dir", "envs_dir", "installed")
# not `sync`, the function: torchship.env.sync is the module of that name (import it from there)
_SYNC = ("SyncedEnv", "agent_path", "list_envs", "prune", "run_env")
__getattr__, __dir__ = lazy_names(
    globals(),
    {
        **dict.fromkeys(_PICK, "torchship.env.pick"),
        **dict.fromkeys(_PLACES, "torchship.env.places"),
        **dict.fromkeys(_SYNC, "torchship.env.sync"),
    },
)


def this_host(facts: Facts) -> Host:
    """The platform of this machine, whose `facts` were probed here: the OS (and macOS's
    version) from the interpreter, which facts do not record."""
    import platform

    from torchship.env.pick import host_of

    system = platform.system()
    macos = platform.mac_ver()[0] if system == "Darwin" else None
    return host_of(facts, system, macos)


def host_facts(matrix: Matrix, root: Path = Path("/"), run: CommandRunner | None = None) -> Facts:
    """This machine, as picking an environment needs it: the host without its Python side,
    and its GPUs by the driver's files, with no NVML or nvidia-smi (seconds on a multi-GPU
    host without persistence mode), unless a GPU's model does not tell its compute
    capability: then they are asked, once."""
    from torchship.doctor.probe import probe, run_command
    from torchship.env.pick import gpu_cc

    def host(details: bool) -> Facts:
        return probe(False, root, run or run_command, python=False, gpu_details=details)

    facts = host(details=False)
    return host(details=True) if any(gpu_cc(g, matrix) is None for g in facts.gpus) else facts


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
    from torchship.compat.matrix import load_matrix
    from torchship.env.pick import pick_environment
    from torchship.env.sync import sync

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
    from torchship.env.places import installed

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
