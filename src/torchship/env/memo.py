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
from collections.abc import Mapping
from pathlib import Path

from torchship._version import __version__
from torchship.env.places import AGENT_MODULES, MARKER, cache_dir, holds_exactly

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
    if ".." in Path(project).parts:  # the OS follows a link before `..`; text would not
        raise NoMemo(project)
    path = os.path.abspath(project)
    here = os.path.isdir(path)
    folder = path if here else os.path.dirname(path)
    files = ([] if here else [path]) + [os.path.join(folder, n) for n in PROJECT_FILES]
    doc = [
        _torchship(),
        sys.executable,
        sys.path,  # where the agent's packages are found (PYTHONPATH, user site)
        path,
        os.path.realpath(path),  # a spec without `name` takes its resolved folder's
        env_name,
        sorted(find_links),
        [(f, _file_digest(f)) for f in files],
        _host(root),
    ]
    return blake2b(json.dumps(doc).encode(), digest_size=20).hexdigest()


def digest(project: str, env_name: str | None, find_links: list[str]) -> str | None:
    """`inputs` of this machine, or None where it keeps no memo."""
    try:
        return inputs(project, env_name, find_links)
    except NoMemo:
        return None


def from_files(sources: Mapping[str, str]) -> bool:
    """Whether a full start's facts (their `sources`) came from the files this memo digests,
    not from NVML's or nvidia-smi's answer, which the files cannot vouch for next time."""
    return not {sources.get("driver"), sources.get("gpus")} & {"nvml", "nvidia-smi"}


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
        if not holds_exactly(venv, memo["packages"]):  # one installed by hand: the full start
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
    project: str,
    env_name: str | None,
    key: str,
    env: str,
    venv: Path,
    agent: Path,
    packages: dict[str, str],
) -> None:
    """Keep a full start's answer for these inputs: the environment that holds `packages` (the
    lock's, as the full start checked them), best effort (a memo that cannot be written only
    means the next start is a full one too)."""
    from torchship._atomic import private_dir, write_text_atomic

    memo = {
        "inputs": key,
        "env": env,
        "venv": str(venv),
        "packages": packages,
        "agent": str(agent),
        "agent_links": {n: os.path.realpath(agent / n) for n in AGENT_MODULES},
    }
    try:
        path = memo_path(project, env_name)
        private_dir(path.parent)
        write_text_atomic(path, json.dumps(memo, indent=1) + "\n")
    except (OSError, ValueError):
        pass


def prune_memos(envs: Path) -> None:
    """Remove the memos of environments no longer in `envs` (`torchship env prune`): each
    would only send its next start to the full one."""
    folder = envs.parent / "exec"
    for memo in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            venv = Path(json.loads(memo.read_text("utf-8"))["venv"])
            if venv.parent == envs and (venv / MARKER).is_file():
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        memo.unlink(missing_ok=True)


def memo_path(project: str, env_name: str | None) -> Path:
    name = os.fsencode(os.path.abspath(project)) + b"\0" + os.fsencode(env_name or "")
    return cache_dir() / "exec" / f"{blake2b(name, digest_size=10).hexdigest()}.json"


def _torchship() -> list[object]:
    """This torchship: its version and where and when each of its files was written (an edit
    in place, a reinstall of the same version, a new matrix), ~1 ms."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seen: list[object] = [__version__, top]
    folders = [top]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for e in sorted(entries, key=lambda e: e.name):
                if e.is_dir(follow_symlinks=False):
                    if e.name != "__pycache__":
                        folders.append(e.path)
                elif not e.name.endswith(".pyc"):
                    st = e.stat(follow_symlinks=False)
                    seen.append((e.path[len(top) :], st.st_size, st.st_mtime_ns, st.st_ino))
    return seen


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
    if not any(driver) and _other_driver(root):  # NVML or nvidia-smi would answer instead
        raise NoMemo("a driver without its files")
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


def _other_driver(root: str) -> bool:
    """A driver the files do not show: WSL2's (/dev/dxg), or an nvidia-smi that the full
    start would ask (a container without /sys/module/nvidia)."""
    import shutil  # loaded already with argparse

    dev = ("dev/dxg", "dev/nvidiactl")
    return any(os.path.exists(os.path.join(root, d)) for d in dev) or bool(
        shutil.which("nvidia-smi")
    )


def _text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 16)
    except OSError:
        return None
