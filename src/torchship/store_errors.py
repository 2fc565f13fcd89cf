"""The job store's errors, in words: SQLite's errors classified into one line of what is wrong
and one line of what to do (`damage`), and what is wrong with the file itself (`file_problem`).
Every command that opens the store imports this module, so it imports little
(torchship.store_health, which checks and repairs, builds on it). Kinds:

    is-a-directory  not-a-database  truncated  malformed  missing-table  bad-json  bad-wal
    newer-schema  no-permission  locked  cannot-open
"""

from __future__ import annotations

import os
import sqlite3
import struct
from pathlib import Path
from typing import Literal

from torchship.errors import TorchshipError
from torchship.store_pages import MAGIC, page_size

Kind = Literal[
    "is-a-directory",
    "not-a-database",
    "truncated",
    "malformed",
    "missing-table",
    "bad-json",
    "bad-wal",
    "newer-schema",
    "no-permission",
    "locked",
    "cannot-open",
]
HINT = (
    "see what is wrong: `torchship state check`; keep a copy and rebuild what still reads: "
    "`torchship state repair`"
)
WAL_MAGIC = (0x377F0682, 0x377F0683)  # the two byte orders of the WAL's checksums
WAL_VERSION = 3007000


class StoreError(TorchshipError):
    """The job store cannot be opened or is damaged; `kind` says how (see the module)."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "", kind: Kind = "cannot-open") -> None:
        super().__init__(message, hint)
        self.kind = kind


def hint_for(kind: Kind, path: Path) -> str:
    if kind == "locked":
        return (
            f"another process holds it: wait, or end that process (`fuser {path}` names it); "
            "TORCHSHIP_BUSY_TIMEOUT_S waits longer"
        )
    if kind == "no-permission":
        return f"give yourself access (`chmod u+rw {path}` and its folder), or set TORCHSHIP_HOME"
    if kind == "newer-schema":
        return "upgrade torchship, or set TORCHSHIP_HOME to use another store"
    return HINT


def naming(hint: str, path: Path) -> str:
    """`hint` with `state check` and `state repair` given `--db path`: without it they look at
    the default jobs.db, not at an archive or a store named elsewhere."""
    for verb in ("check", "repair"):
        hint = hint.replace(f"`torchship state {verb}`", f"`torchship state {verb} --db {path}`")
    return hint


def error(kind: Kind, path: Path, what: str) -> StoreError:
    return StoreError(what, hint_for(kind, path), kind)


def damage(path: Path, exc: sqlite3.Error, waited_s: float) -> StoreError:
    """SQLite's error on the store at `path`, as what is wrong there and what to do. `waited_s`:
    how long the call that failed ran (SQLite may refuse a lock at once, without waiting)."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in text:
        return error("locked", path, f"the job store {path} is locked by another process "
                                     f"(waited {waited_s:.1f} s)")  # fmt: skip
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return error("not-a-database", path, f"the job store {path} is not a SQLite database "
                     "(its header is damaged, or another file took its place)")  # fmt: skip
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return error("malformed", path, f"the job store {path} is damaged: {text}")
    if "no such table" in text:
        table = text.rsplit(":", 1)[-1].strip()
        return error("missing-table", path, f"the job store {path} has no {table} table")
    if name.startswith(("SQLITE_PERM", "SQLITE_READONLY", "SQLITE_AUTH")) or "readonly" in text:
        return error("no-permission", path, f"cannot write the job store {path}: {text}")
    if path.is_dir():
        return error("is-a-directory", path, f"the job store {path} is a directory, not a file")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return error("no-permission", path, f"cannot read and write the job store {path}: "
                                            "permission denied")  # fmt: skip
    return error("cannot-open", path, f"cannot use the job store {path}: {text}")


def wal_problem(path: Path) -> str | None:
    """What is wrong with the store's write-ahead log, when it is not one: SQLite would drop
    it without a word, and the writes it held with it."""
    wal = path.with_name(path.name + "-wal")
    try:
        with open(wal, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read the job store's write-ahead log {wal}: {e.strerror}"
    if not head:
        return None  # an empty WAL is how SQLite leaves it after a checkpoint
    if len(head) == 32:
        magic, version = struct.unpack(">II", head[:8])
        if magic in WAL_MAGIC and version == WAL_VERSION:
            return None
    return (
        f"the job store's write-ahead log {wal} is not a SQLite WAL file "
        f"({wal.stat().st_size} bytes of something else): writes it held are lost"
    )


# --- check ----------------------------------------------------------------------------------


def file_problem(path: Path, deep: bool = False) -> StoreError | None:
    """What is wrong with the file itself (before SQLite reads it), or None. `deep` reads its
    header too (not while others may write it: a checkpoint writes page 1 first, so a header
    can claim pages a moment before the file has them)."""
    if path.is_dir():
        return error("is-a-directory", path, f"the job store {path} is a directory, not a file")
    dangling = _dangling(path)
    if dangling is not None:
        return dangling
    if not os.access(path, os.R_OK | os.W_OK):
        return error("no-permission", path, f"cannot read and write the job store {path}: "
                                            "permission denied")  # fmt: skip
    if not deep:
        wal = wal_problem(path)
        return None if wal is None else error("bad-wal", path, wal)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(100)
    if size and not head.startswith(MAGIC):
        how = "its first 100 bytes are zero" if not head.strip(b"\0") else "no SQLite header"
        return error("not-a-database", path, f"the job store {path} is not a SQLite database "
                                             f"({how})")  # fmt: skip
    if len(head) == 100:
        page = page_size(head)
        pages, counter, valid_for = struct.unpack(">I", head[28:32])[0], head[24:28], head[92:96]
        if page and counter == valid_for and pages * page > size:
            return error("truncated", path, f"the job store {path} is truncated: "
                         f"{size // page} of its {pages} pages are there")  # fmt: skip
    wal = wal_problem(path)
    return None if wal is None else error("bad-wal", path, wal)


def folder_problem(path: Path) -> StoreError | None:
    """The store's folder is a file (TORCHSHIP_HOME set to one), or None."""
    folder = next((p for p in path.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        return StoreError(f"cannot open the job store {path}: {folder} is a file, not a folder",
                          f"set TORCHSHIP_HOME to a folder (or move {folder} away)")  # fmt: skip
    return None


def not_opened(path: Path, e: OSError) -> StoreError:
    """Why the store's file or folder could not be opened, with what fixes that."""
    found = folder_problem(path) if isinstance(e, NotADirectoryError) else _dangling(path)
    if found is not None:
        return found
    kind: Kind = "no-permission" if isinstance(e, PermissionError) else "cannot-open"
    return error(kind, path, f"cannot open the job store {path}: {e.strerror or e}")


def _dangling(path: Path) -> StoreError | None:
    """The store is a link to nothing, or None."""
    if not (path.is_symlink() and not path.exists()):
        return None
    return StoreError(f"the job store {path} is a link to {os.readlink(path)}, which does not "
                      "exist", f"remove the link {path}, or restore what it points to")  # fmt: skip
