"""Lock environments made real: a virtual environment per environment of the lock, built by uv
under torchship's cache directory and keyed by the environment's content hash.

    <cache>/envs/<env>-<key12>/            a finished environment (never modified after)
        bin/python                         the interpreter jobs run with
        torchship-env.json                 what it is: written last, before the rename
    <cache>/envs/.tmp-<env>-<key12>-<pid>  one being built; renamed into place when whole
    <cache>/envs/.locks/<env>-<key12>.lock one sync at a time per environment (flock)

A sync installs exactly the lock (`uv pip sync --require-hashes`: hashes required, nothing
resolved) into a temporary folder and renames it into place, so a half-built environment is
never used: a sync killed at any point leaves at most a `.tmp-…` folder, which the next sync
or `torchship env prune` removes. The folder is relocatable (`uv venv --relocatable`), so the
rename does not break its scripts.

torchship itself is not installed into it: a `.pth` file appends the folder named by
TORCHSHIP_AGENT_PATH to sys.path when that variable is set (see agent_path), so the reference
workload and its helpers run in the locked environment without any package of it changing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from torchship._atomic import write_text_atomic
from torchship._version import __version__
from torchship.compat.matrix import PYPI_INDEX
from torchship.env.memo import prune_memos
from torchship.env.places import (
    AGENT_MODULES,
    MARKER,
    cache_dir,
    envs_dir,
    holds_exactly,
    run_environ,
)
from torchship.errors import EnvError
from torchship.lock.model import LockedPackage, LockEnvironment, requirement_lines
from torchship.lock.uv import find_uv
from torchship.lock.uv_errors import UV_NET_ERRORS, UV_URL_RE
from torchship.lock.wheels import find_links_with_env, wheels_in

# One line a .pth file runs at start-up: append the agent, never prepend it, so that a package
# the lock pins (packaging, say) always wins over torchship's copy.
AGENT_PTH = (
    "import os, sys; p = os.environ.get('TORCHSHIP_AGENT_PATH'); "
    "p and p not in sys.path and sys.path.append(p)\n"
)
Printer = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SyncedEnv:
    name: str  # the lock environment: "cpu", "cu130"
    key: str  # its content hash, "sha256:…"
    path: Path
    cached: bool  # True: it was there already

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def env_path(env: LockEnvironment, root: Path) -> Path:
    return root / f"{env.name}-{env.short_key}"


def cached(env: LockEnvironment, root: Path) -> SyncedEnv | None:
    """The finished environment, when it is in the cache, its interpreter still exists, and
    it still holds exactly the locked distributions (one listing of site-packages: a package
    installed into it by hand since makes it a miss, and it is rebuilt)."""
    path = env_path(env, root)
    if not holds_exactly(path, {p.name: p.version for p in env.packages}):
        return None
    return SyncedEnv(env.name, env.key, path, cached=True)


def sync(
    env: LockEnvironment,
    root: Path | None = None,
    find_links: Sequence[str] = (),
    say: Printer | None = None,
    stream: TextIO | None = None,
    lock_name: str = "",
) -> SyncedEnv:
    """Make `env` real under `root` (default: the cache) and return it; a cache hit costs a
    stat or two. Raises EnvError naming the package and the cause when uv cannot install it."""
    root = envs_dir() if root is None else root
    hit = cached(env, root)
    if hit is not None:
        with contextlib.suppress(OSError):  # a use: `env prune` keeps what is used
            os.utime(hit.path / MARKER)
        return hit
    say = say or (lambda _: None)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvError(
            f"cannot use the environment cache {root}: {e.strerror}",
            "set TORCHSHIP_CACHE_DIR to a folder this user can write",
        ) from None
    with _locked(root / ".locks" / f"{env.name}-{env.short_key}.lock", say):
        hit = cached(env, root)  # another sync finished it while we waited
        if hit is not None:
            return hit
        _sweep(root, env)
        final = env_path(env, root)
        if final.exists():  # never finished, or changed since: set aside, then removed
            say(f"sync: {final.name} is not the locked environment any more: rebuilding it")
            _discard(final)
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        started = time.monotonic()
        say(f"sync: building environment {env.name} ({len(env.packages)} packages) in {final}")
        try:
            _build(env, tmp, find_links_with_env(find_links, os.environ), stream)
            _write_marker(env, tmp, lock_name)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        say(f"sync: environment {env.name} ready in {time.monotonic() - started:.1f} s")
    return SyncedEnv(env.name, env.key, final, cached=False)


@contextlib.contextmanager
def _locked(path: Path, say: Printer) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("sync: waiting for another sync of the same environment …")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sweep(root: Path, env: LockEnvironment) -> None:
    """Remove what killed syncs of this environment left behind (called under its lock)."""
    for tmp in root.glob(f".tmp-{env.name}-{env.short_key}-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _interpreter(python: str) -> str:
    """The Python to base the environment on: this one when it is the locked version (no
    search), else the version for uv to find."""
    want = python.rstrip("t")
    free = python.endswith("t")
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == want and free == (not gil):
        return sys.executable
    return python


def _build(env: LockEnvironment, tmp: Path, find_links: Sequence[str], out: TextIO | None) -> None:
    uv = find_uv()
    lines = requirement_lines(env.packages)  # each pin checked before anything is made
    shutil.rmtree(tmp, ignore_errors=True)
    venv = [uv, "venv", "--quiet", "--no-config", "--relocatable", "--python"]
    _uv([*venv, _interpreter(env.python), str(tmp)], env, out, step="venv")
    reqs = tmp / "torchship-requirements.txt"
    reqs.write_text("\n".join(lines) + "\n", "utf-8")
    _uv(sync_argv(uv, env, tmp, reqs, find_links), env, out)
    site = next((tmp / "lib").glob("python3*/site-packages"))
    (site / "_torchship_agent.pth").write_text(AGENT_PTH, "utf-8")


def sync_argv(
    uv: str, env: LockEnvironment, venv: Path, reqs: Path, find_links: Sequence[str]
) -> list[str]:
    """`uv pip sync` of the hashed requirements: the find-links folders that hold a locked
    file, and the index of torch's build only when one is missing there (pure)."""
    # folders that exist, and URLs (an internal wheel mirror), as `lock` passes them to uv
    links = [
        f
        for f in find_links
        if f.startswith(("http://", "https://")) or Path(f.removeprefix("file://")).is_dir()
    ]
    argv = [uv, "pip", "sync", "--no-config", "--require-hashes", "--compile-bytecode"]
    argv += ["--python", str(venv / "bin" / "python"), "--index-url", PYPI_INDEX]
    for f in links:
        argv += ["--find-links", f]
    if env.index_url != PYPI_INDEX and _needs_index(env.packages, links):
        # pip's semantics: one version across both indexes; the hashes decide which file
        argv += ["--extra-index-url", env.index_url, "--index-strategy", "unsafe-best-match"]
    return [*argv, str(reqs)]


def _needs_index(packages: tuple[LockedPackage, ...], links: Sequence[str]) -> bool:
    """Whether the index of torch's build must be asked: a package whose locked file no
    find-links folder here holds (by its recorded file name, or for a lock that names none,
    torch by its version; uv checks the hash either way)."""
    for p in packages:
        found = wheels_in(links, p.name, p.version) if (p.file or p.name == "torch") else []
        if p.file and not any(w.name == p.file for w in found):
            return True
        if not p.file and p.name == "torch" and not found:
            return True
    return False


def _uv(argv: Sequence[str], env: LockEnvironment, out: TextIO | None, step: str = "sync") -> None:
    """Run uv, passing its output through to `out` (progress) and keeping it for errors."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UV_INDEX", "UV_EXTRA"))}
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, "UV_NO_PROGRESS": "1"},
    )
    assert proc.stderr is not None
    lines = []
    failing = False
    for line in proc.stderr:
        lines.append(line)
        failing = failing or line.startswith("error:")  # uv's error: ours replaces it
        if out is not None and not failing:
            out.write(line)
            out.flush()
    if proc.wait() != 0:
        raise (python_error if step == "venv" else install_error)(env, "".join(lines))


def python_error(env: LockEnvironment, text: str) -> EnvError:
    """`uv venv` failed: almost always no interpreter of the locked Python version."""
    causes = [ln.strip().removeprefix("cause:").strip() for ln in text.splitlines()]
    why = next((c for c in reversed(causes) if c), "no output")
    return EnvError(
        f"environment {env.name} needs Python {env.python}: none on this machine, and uv "
        f"could not get one ({why[:200]})",
        f"install Python {env.python} (from your OS, pyenv, or `uv python install "
        f"{env.python}` where python-build-standalone can be reached)",
    )


_HASH_RE = re.compile(r"Hash mismatch for `([^`]+)`")
_PIN_RE = re.compile(r"`?([A-Za-z0-9._-]+)==([^\s`]+)`?")


def install_error(env: LockEnvironment, text: str) -> EnvError:
    """One line naming the package and the cause, one line with the fix, from uv's stderr."""
    detail = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln.removeprefix("cause:").strip() for ln in detail if ln.startswith("cause:")]
    pkg = _culprit(env, text)
    label = f"{pkg.name} {pkg.version}" if pkg else f"environment {env.name}"
    if _HASH_RE.search(text):
        after = [detail[i + 1] for i, ln in enumerate(detail[:-1]) if ln.startswith("Computed")]
        return EnvError(
            f"{label}: the file found does not match the lock's hash"
            + (f" (computed {after[0]})" if after else ""),
            "the index or find-links folder serves another file than the one locked: "
            "replace it with the locked file, or re-lock with `torchship lock`",
        )
    if any(n in text for n in UV_NET_ERRORS):
        return _unreachable(env, text, causes)
    if pkg is not None and ("no version of" in text or "not found" in text):
        return EnvError(
            f"{label}: no file of it on the indexes or find-links folders given "
            f"({env.index_url}{', file ' + pkg.file if pkg.file else ''})",
            "pass --find-links DIR holding the locked file, or re-lock with `torchship lock`",
        )
    first = next((ln for ln in detail if ln.startswith("error:")), detail[-1] if detail else "")
    cause = causes[-1] if causes else first.removeprefix("error:").strip() or "no output"
    return EnvError(
        f"{label}: uv could not install it: {cause[:300]}",
        "run again with --debug, or re-lock with `torchship lock`",
    )


def _unreachable(env: LockEnvironment, text: str, causes: list[str]) -> EnvError:
    urls = UV_URL_RE.findall(text)
    url = urls[0] if urls else env.index_url
    why = causes[-1] if causes else "unreachable"
    torch = next((p for p in env.packages if p.name == "torch"), None)
    if url.startswith(env.index_url.rstrip("/")) and env.index_url != PYPI_INDEX and torch:
        # the index of torch's build: the one package only it serves
        wheel = torch.file or f"the torch {torch.version} wheel for Python {env.python}"
        return EnvError(
            f"torch {torch.version}: its index {env.index_url} cannot be reached ({why})",
            f"put {wheel} in a folder and pass --find-links DIR (or set PIP_FIND_LINKS)",
        )
    m = re.search(r"/simple/([A-Za-z0-9._-]+)/", url)
    pkg = next((p for p in env.packages if m and p.name == m.group(1).lower()), None)
    label = f"{pkg.name} {pkg.version}" if pkg else f"environment {env.name}"
    return EnvError(
        f"{label}: cannot reach {url} ({why})",
        "check the network or proxy (HTTPS_PROXY), or pass --find-links DIR holding the "
        "locked files",
    )


def _culprit(env: LockEnvironment, text: str) -> LockedPackage | None:
    by_name = {p.name: p for p in env.packages}
    m = _HASH_RE.search(text)
    candidates = [m.group(1)] if m else []
    candidates += [f"{a}=={b}" for a, b in _PIN_RE.findall(text)]
    for c in candidates:
        name = c.split("==", 1)[0].lower().replace("_", "-")
        if name in by_name:
            return by_name[name]
    for name, pkg in by_name.items():  # uv sometimes names only the package
        if re.search(rf"\b{re.escape(name)}\b", text):
            return pkg
    return None


def _write_marker(env: LockEnvironment, path: Path, lock_name: str) -> None:
    info: dict[str, Any] = {
        "kind": "torchship-env",
        "schema_version": 1,
        "env": env.name,
        "key": env.key,
        "lock": lock_name,
        "torch": env.torch,
        "python": env.python,
        "platform": env.platform,
        "packages": {p.name: p.version for p in env.packages},
        "created": time.time(),
        "torchship_version": __version__,
    }
    write_text_atomic(path / MARKER, json.dumps(info, indent=2) + "\n")


def agent_path(root: Path | None = None) -> Path:
    """A folder holding torchship and its four pure-Python dependencies, and nothing else:
    links to the installed packages (no dist-info, so the environment's package list is
    only the lock's). Made once per torchship installation."""
    import importlib.util

    targets = {}
    for name in AGENT_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise EnvError(f"{name} is not installed beside torchship", "reinstall torchship")
        targets[name] = Path(next(iter(spec.submodule_search_locations)))
    from torchship.spec.model import content_hash

    key = content_hash({k: str(v) for k, v in targets.items()}).split(":", 1)[1][:12]
    folder = (cache_dir() if root is None else root) / "agents" / key
    if all((folder / n).resolve() == t.resolve() for n, t in targets.items()):
        return folder
    tmp = folder.with_name(f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, target in targets.items():
        (tmp / name).symlink_to(target, target_is_directory=True)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def run_env(synced: SyncedEnv, agent: Path | None, base: Mapping[str, str]) -> dict[str, str]:
    """The process environment of a command run inside `synced` (places.run_environ)."""
    return run_environ(synced.path, agent, base)


@dataclass(frozen=True, slots=True)
class CachedEnv:
    path: Path
    info: dict[str, Any]
    size_bytes: int | None


def list_envs(root: Path | None = None, sizes: bool = False) -> list[CachedEnv]:
    root = envs_dir() if root is None else root
    out = []
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            info = json.loads((path / MARKER).read_text("utf-8"))
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            info = {"env": path.name, "incomplete": True}
        out.append(CachedEnv(path, info, _du(path) if sizes else None))
    return out


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def prune(
    root: Path | None = None, all_envs: bool = False, older_than_s: float = 30 * 86400.0
) -> list[Path]:
    """Remove what killed syncs left, and environments unused for `older_than_s` (every one
    with `all_envs`); each under its environment's lock, so a sync in progress is never cut
    short. A cache hit counts as a use (it touches the marker)."""
    root = envs_dir() if root is None else root
    removed = []
    now = time.time()
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        if path.name == ".locks":
            continue
        temporary = path.name.startswith((".tmp-", ".trash-"))
        leftover = temporary or not (path / MARKER).is_file()
        name = path.name.removeprefix(".tmp-").removeprefix(".trash-")
        base = name.rsplit("-", 1)[0] if temporary else name
        if not leftover and not all_envs:
            try:
                if now - (path / MARKER).stat().st_mtime < older_than_s:
                    continue
            except OSError:
                continue
        lock_file = root / ".locks" / f"{base}.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            _discard(path)
            removed.append(path)
    prune_memos(root)
    return removed


def _discard(path: Path) -> None:
    """Rename out of the way first (atomic: from then on the environment is a cache miss, never
    a half-deleted hit), then delete."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)
