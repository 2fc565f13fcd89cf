"""Reading a file the user named: its text, or one clear error saying what is wrong with it."""

from __future__ import annotations

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
