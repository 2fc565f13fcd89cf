"""argparse for the command line, kept out of `torchship.cli` so that `torchship --version`
does not import it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from torchship.errors import UsageError


def terminal_columns() -> int:
    """shutil.get_terminal_size's width: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the width: its own asks shutil, and importing shutil (with
    bz2, lzma and fnmatch) took ~4 ms of every command's start, the first argument added
    (issue 20)."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        if len(args) < 3 and kwargs.get("width") is None:  # width: the fourth parameter
            kwargs["width"] = terminal_columns() - 2  # as argparse takes it
        super().__init__(prog, *args, **kwargs)


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) < 6:  # formatter_class: the sixth parameter
            kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")
