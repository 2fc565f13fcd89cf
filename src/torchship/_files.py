"""Reading a file the user named: its text, or one clear error saying what is wrong with it."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from torchship.errors import UsageError


def read_user_text(path: str | Path, what: str, missing_hint: str) -> str:
    """The UTF-8 text of `path`; UsageError "no <what>" when it is missing, else why it cannot
    be read."""
    p = Path(path)
    try:
        return p.read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: no {what}", missing_hint) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: cannot be read ({e})", "check the path and permissions") from None


def _size_str(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def read_pasted_text(path: str, what: str, hint: str, limit: int) -> str:
    """Text a user pasted or saved (`-`: stdin), bounded: a directory, a FIFO, a device such as
    /dev/zero, binary data or more than `limit` bytes is one clear UsageError, never a hang."""
    if path == "-":
        raw = sys.stdin.buffer.read(limit + 1)
        where = "stdin"
    else:
        where = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file", hint) from None
        except OSError as e:
            raise UsageError(f"{path}: cannot be read ({e.strerror})", "check the path") from None
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{path}: is a directory, not a {what}", hint)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(
                f"{path}: is not a regular file (a FIFO, socket or device)",
                f"save the {what} to a file first, or pipe it in with `-`",
            )
        if st.st_size > limit:
            raise UsageError(
                f"{path}: is {_size_str(st.st_size)}; a {what} is read up to {_size_str(limit)}",
                "paste the relevant part: the environment report and the error around the failure",
            )
        try:
            with open(path, "rb") as fh:
                raw = fh.read(limit + 1)
        except OSError as e:
            raise UsageError(f"{path}: cannot be read ({e.strerror})", "check the path") from None
    if len(raw) > limit:
        raise UsageError(
            f"{where}: more than {_size_str(limit)}; a {what} is read up to {_size_str(limit)}",
            "paste the relevant part: the environment report and the error around the failure",
        )
    sample = raw[:65536]
    if b"\x00" in sample or (sample and _non_text(sample) > len(sample) // 20):
        raise UsageError(f"{where}: is binary, not a {what}", hint)
    return raw.decode("utf-8", errors="replace")


def _non_text(data: bytes) -> int:
    """Control bytes other than whitespace and escape (terminal colours are text)."""
    return sum(1 for b in data if b < 32 and b not in (9, 10, 12, 13, 27))
