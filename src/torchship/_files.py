"""Reading a file the user named: its text, or one clear error saying what is wrong with it.

Every file torchship reads from the user goes through here, bounded: a directory, a FIFO or a
device (/dev/zero, /dev/urandom) is refused without reading it (a FIFO is never waited on), a
file over the limit is refused by its size, and a parse failure (bad syntax, nesting deeper than
the parser's recursion, an integer past Python's 4300-digit limit) is one UsageError line.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

from torchship.errors import SpecError, UsageError

# Config files (a spec, job.toml, sites.toml, a lock, a facts file, a trace): the largest real
# one in the repository is a 146 KB lock (examples/hybrid); 4 MB leaves room for locks of
# hundreds of packages, and bounds tomllib's worst case (about 3 s per MB of a bare array on a
# loaded 2-core machine) at seconds.
MAX_CONFIG_BYTES = 4 * 2**20


def _size_str(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def read_bounded(
    path: str | Path, what: str, hint: str, limit: int, too_big_hint: str, stdin_ok: bool = False
) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them. A directory, FIFO, socket
    or device is refused from its stat() before anything opens it (opening a device can have
    effects; opening a FIFO waits for a writer), and the open itself does not block, so a file
    swapped for a FIFO in between is refused too. UsageError "no such file" when it is missing;
    `stdin_ok`: the command reads `-` as standard input, and the refusal of a FIFO says so."""
    where = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file", hint) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise UsageError(f"{where}: cannot be read ({_reason(e)})", "check the path") from None
    _check_kind(st, where, what, hint, stdin_ok)
    if st.st_size > limit:
        raise UsageError(
            f"{where}: is {_size_str(st.st_size)}; a {what} is read up to {_size_str(limit)}",
            too_big_hint,
        )
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UsageError(f"{where}: cannot be read ({_reason(e)})", "check the path") from None
    try:
        _check_kind(os.fstat(fd), where, what, hint, stdin_ok)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(limit + 1)
    except OSError as e:
        raise UsageError(f"{where}: cannot be read ({_reason(e)})", "check the path") from None
    finally:
        os.close(fd)
    if len(raw) > limit:  # it grew since stat()
        raise UsageError(
            f"{where}: more than {_size_str(limit)}; a {what} is read up to {_size_str(limit)}",
            too_big_hint,
        )
    return raw


def _check_kind(st: os.stat_result, where: str, what: str, hint: str, stdin_ok: bool) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{where}: is a directory, not a {what}", hint)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(
            f"{where}: is not a regular file (a FIFO, socket or device)",
            f"save the {what} to a file first, or pipe it in with `-`"
            if stdin_ok
            else f"pass the {what} itself, a regular file",
        )


def _reason(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__


def read_user_text(
    path: str | Path, what: str, missing_hint: str, limit: int = MAX_CONFIG_BYTES
) -> str:
    """The UTF-8 text of the config file `path` (a UTF-8 BOM dropped), read as `read_bounded`
    does; UsageError "no <what>" when it is missing, else one line saying why it cannot be read."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise UsageError(f"{p}: no {what}", missing_hint)
    raw = read_bounded(
        p, what, missing_hint, limit, f"a {what} is not this large: check that {p} is the file"
    )
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        problem = f"is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})"
        raise SpecError(str(p), "", problem, f"save the {what} as UTF-8") from None


def parse_toml(text: str, file: str) -> dict[str, Any]:
    """tomllib.loads, every failure one SpecError naming the file."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(
            file, "", f"is not valid TOML ({e})", "fix the syntax at that line"
        ) from None
    except RecursionError:
        problem = "arrays or tables nested too deep to read"
    except ValueError as e:  # an integer of more than 4300 digits (sys.set_int_max_str_digits)
        problem = str(e).split(":")[0]
    raise SpecError(file, "", f"cannot be read: {problem}", "no torchship file holds such values")


def parse_json(text: str, where: str, hint: str) -> Any:
    """json.loads, every failure one UsageError naming the file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: not JSON ({e})", hint) from None
    except RecursionError:
        problem = "arrays or objects nested too deep to read"
    except ValueError as e:  # an integer of more than 4300 digits
        problem = str(e).split(":")[0]
    raise UsageError(f"{where}: cannot be read: {problem}", hint)


def read_pasted_text(path: str, what: str, hint: str, limit: int) -> str:
    """Text a user pasted or saved (`-`: stdin), bounded: a directory, a FIFO, a device such as
    /dev/zero, binary data or more than `limit` bytes is one clear UsageError, never a hang."""
    too_big = "paste the relevant part: the environment report and the error around the failure"
    if path == "-":
        raw = sys.stdin.buffer.read(limit + 1)
        where = "stdin"
        if len(raw) > limit:
            raise UsageError(
                f"{where}: more than {_size_str(limit)}; a {what} is read up to {_size_str(limit)}",
                too_big,
            )
    else:
        where = path
        raw = read_bounded(path, what, hint, limit, too_big, stdin_ok=True)
    text = decode_text(raw)
    if text is None:
        raise UsageError(f"{where}: is binary, not a {what}", hint)
    return text


def decode_text(raw: bytes) -> str | None:
    """Text as users save it: UTF-8 (a BOM dropped), or UTF-16 with its BOM (PowerShell 5's
    `>`); None for binary data (NUL bytes, or more than 1 in 20 control characters)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16").removeprefix("\ufeff")
        except UnicodeDecodeError:
            return None
    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    return None if is_binary(text) else text


def is_binary(text: str) -> bool:
    """NUL characters, or control characters other than whitespace and escape (terminal colours
    are text) in more than 1 in 20 of the first 64 KiB."""
    sample = text[:65536]
    if "\x00" in sample:
        return True
    control = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\x0c\r\x1b")
    return bool(sample) and control > len(sample) // 20
