"""Atomic file writes: a reader sees the old file or the new one, never half of either.

File modes respect the umask, as open(2) does, and nothing is widened: a plain file gets
PUBLIC (0666) less the umask (0644 under umask 022, 0600 under 077); a file that can hold
secrets (a job's environment, its command line, its log, the job store) gets PRIVATE (0600)
less the umask, and its folder 0700 less the umask.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PUBLIC = 0o666
PRIVATE = 0o600
PRIVATE_DIR = 0o700


def umask() -> int:
    """This process's umask: read from /proc where it can be (Linux ≥ 4.7), since setting it
    to read it back is not safe while other threads create files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def private_dir(path: Path) -> Path:
    """`path` and any missing folder above it, created 0700 (less the umask); folders that
    exist are left as they are."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            folder.mkdir(mode=PRIVATE_DIR)
    return path


def append_private(path: Path) -> BinaryIO:
    """`path` opened to append bytes, created PRIVATE (less the umask) when it does not exist."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
    return os.fdopen(fd, "ab")


@contextmanager
def open_atomic(path: Path, mode: int = PUBLIC) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without an exception,
    with `mode` less the umask.

    Temp file in the same folder, fsync, rename over `path`, fsync the folder (so the rename
    itself survives a power cut). On an exception the temp file is removed and `path` is
    untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = _create_beside(folder, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomic(path: Path, text: str, mode: int = PUBLIC) -> None:
    with open_atomic(path, mode) as f:
        f.write(text.encode("utf-8"))


def _create_beside(folder: Path, prefix: str) -> tuple[int, str]:
    """A new file `folder/<prefix><random>.tmp`, 0600, open for writing: what
    tempfile.mkstemp makes, without importing tempfile and its `random` (~5 ms after uv
    answers `torchship lock`, issue 20). O_EXCL: never a file or link that is there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    for tmp in _fresh_names(str(folder), prefix, ".tmp"):
        try:
            return os.open(tmp, flags, PRIVATE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _fresh_names(folder: str, prefix: str, suffix: str = "") -> Iterator[str]:
    """Names in `folder` no one can guess, for O_EXCL or mkdir to claim: 100 tries, as
    tempfile makes them."""
    for _ in range(100):
        yield os.path.join(folder, f"{prefix}{os.urandom(6).hex()}{suffix}")


def scratch_dir(prefix: str) -> Path:
    """A new private folder (0700) for a process's own files, in the temporary folder
    tempfile.gettempdir would choose ($TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp): what
    tempfile.mkdtemp makes, without importing tempfile, its `random` and shutil (~6 ms before
    `torchship lock` can start uv over a previous lock, issue 20). Remove it with
    remove_scratch."""
    bases = [os.environ.get(v) for v in ("TMPDIR", "TEMP", "TMP")]
    for base in [b for b in bases if b] + ["/tmp", "/var/tmp", "/usr/tmp"]:
        for path in _fresh_names(base, prefix):
            try:
                os.mkdir(path, PRIVATE_DIR)
            except FileExistsError:
                continue
            except OSError:  # missing or not writable: the next place
                break
            return Path(os.path.abspath(path))
    import tempfile  # its last resort: the working folder

    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_scratch(path: Path) -> None:
    """Remove a folder made by scratch_dir and what was written in it (files only, as the
    processes given it write them; anything else is left, with the folder). Through the
    folder's own descriptor, opened without following a link: a folder swapped for a link
    meanwhile (a shared $TMPDIR) is left alone, and its target untouched."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)
