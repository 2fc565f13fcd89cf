"""argparse for the command line, kept out of `torchship.cli` so that `torchship --version`
does not import it."""

from __future__ import annotations

import argparse
from typing import NoReturn

from torchship.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")
