"""`torchship exec --local`'s memo: the answer of its last start for the same inputs, so that
the next start runs the command without loading the lock model, the matrix or the probe
(DESIGN: a warm start within 2× `uv run`).

A full start reads the lock and checks it against its spec, reads this machine, picks its
environment and finds it synced. All of that depends only on the bytes of the project's files,
this machine's platform and NVIDIA driver files, the flags and this torchship: the memo keeps a
digest of those inputs beside the answer (the environment's folder, its locked distributions,
the agent folder). A start whose inputs digest the same takes the answer, after checking what
can change under it: the environment still holds exactly the locked distributions, and the
agent's links still lead to this torchship's packages. Anything else (a changed byte, another
driver, a host whose GPUs only nvidia-smi names, another OS than Linux) is the full start,
which writes the memo again.

    <cache>/exec/<digest of the project path and --env>.json
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from torchship._version import __version__
from torchship.env.places import AGENT_MODULES, MARKER, cache_dir, installed

try:  # hashlib's own BLAKE2, without hashlib's load of OpenSSL (~5 ms of the start)
    from _blake2 import blake2b
except ImportError:  # another Python than CPython
    from hashlib import blake2b

# what a full start reads to find the lock and its spec (torchship.cli.lock.lock_path,
# torchship.spec.load.find_spec_file), in the project's folder
PROJECT_FILES = ("torchship.lock", "torchship.toml", "pyproject.toml")
_MAX_FILE = 16 * 2**20  # a larger file is refused by a full start anyway (_files.read_user_text)
_NVIDIA = ("sys/module/nvidia/version", "proc/driver/nvidia/version")
_GPUS = "proc/driver/nvidia/gpus"


class NoMemo(Exception):
    """These inputs cannot be told apart from the files alone: always the full start."""


def inputs(project: str, env_name: str | None, find_links: list[str], root: str = "/") -> str:
    """The digest of everything a full start's answer depends on (raises NoMemo); `root`: the
    machine's files (a test's fake host)."""
    path = os.path.abspath(project)
    here = os.path.isdir(path)
    folder = path if here else os.path.dirname(path)
    files = ([] if here else [path]) + [os.path.join(folder, n) for n in PROJECT_FILES]
    doc = [
        __version__,
        os.path.dirname(os.path.dirname(__file__)),  # this torchship's own files
        path,
        env_name,
        sorted(find_links),
        [(f, _file_digest(f)) for f in files],
        _host(root),
    ]
    return blake2b(json.dumps(doc).encode(), digest_size=20).hexdigest()


def remembered(project: str, env_name: str | None, key: str) -> tuple[str, Path, Path] | None:
    """(environment name, its folder, the agent folder) that a full start with these inputs
    found, when it still holds; None: take the full start."""
    try:
        memo = json.loads(memo_path(project, env_name).read_text("utf-8"))
        if memo["inputs"] != key:
            return None
        venv, agent = Path(memo["venv"]), Path(memo["agent"])
        cache = cache_dir()
        if venv.parent != cache / "envs" or agent.parent != cache / "agents":
            return None  # only ever what a full start finds: torchship's own folders
        if not (venv / MARKER).is_file() or not (venv / "bin" / "python").exists():
            return None
        if installed(venv) != memo["packages"]:  # one installed by hand since: the full start
            return None
        for name in AGENT_MODULES:
            target = memo["agent_links"][name]
            if os.path.realpath(agent / name) != target or not os.path.isdir(target):
                return None
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one this wrote
        return None
    with contextlib.suppress(OSError):  # a use, as a full start records it: `env prune` keeps it
        os.utime(venv / MARKER)
    return str(memo["env"]), venv, agent


def remember(
    project: str, env_name: str | None, key: str, env: str, venv: Path, agent: Path
) -> None:
    """Keep a full start's answer for these inputs (best effort: a memo that cannot be written
    only means the next start is a full one too)."""
    from torchship._atomic import private_dir, write_text_atomic

    memo = {
        "inputs": key,
        "env": env,
        "venv": str(venv),
        "packages": installed(venv),
        "agent": str(agent),
        "agent_links": {n: os.path.realpath(agent / n) for n in AGENT_MODULES},
    }
    path = memo_path(project, env_name)
    try:
        private_dir(path.parent)
        write_text_atomic(path, json.dumps(memo, indent=1) + "\n")
    except OSError:
        pass


def memo_path(project: str, env_name: str | None) -> Path:
    name = f"{os.path.abspath(project)}\0{env_name or ''}".encode()
    return cache_dir() / "exec" / f"{blake2b(name, digest_size=10).hexdigest()}.json"


def _file_digest(path: str) -> str | None:
    """The file's digest; None when there is none (or a folder) there."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as e:  # unreadable: the full start says so
        raise NoMemo(path) from e
    if len(data) > _MAX_FILE:
        raise NoMemo(path)
    return blake2b(data, digest_size=20).hexdigest()


def _host(root: str) -> list[object]:
    """What picking an environment reads of this machine (torchship.env.host_facts): its
    platform, glibc and OS release, and the NVIDIA driver's files."""
    uname = os.uname()
    if sys.platform != "linux":  # macOS's version needs `platform`: the full start
        raise NoMemo(sys.platform)
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        glibc = None
    driver = [_text(os.path.join(root, p)) for p in _NVIDIA]
    try:
        folder = os.path.join(root, _GPUS)
        gpus = [_text(f"{folder}/{d}/information") for d in sorted(os.listdir(folder))]
    except OSError:
        gpus = []
    if any(driver) and not any(gpus):  # the GPUs were nvidia-smi's to name, not the files'
        raise NoMemo("no GPU files")
    return [
        uname.sysname,
        uname.machine,
        glibc,
        _text(os.path.join(root, "etc/os-release")),
        driver,
        gpus,
    ]


def _text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 16)
    except OSError:
        return None
