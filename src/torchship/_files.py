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
