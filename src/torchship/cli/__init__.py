"""The `torchship` command: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success; 1 the request cannot be met (nothing fits, lock out of date, index
unreachable); 2 bad usage or bad input; 130 interrupted. No traceback unless --debug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import NoReturn

from torchship._version import __version__
from torchship.errors import TorchshipError, UsageError, few_lines, one_line

# Each command's module, by the name the user types: a command imports only its own module
# (and what that needs), so `torchship run` does not pay for Kubernetes rendering or the
# simulator. A name that is not here (help, a typo) builds the whole parser. A test checks that
# this table and the modules' parsers agree.
COMMAND_MODULES = {
    "init": "init",
    "resolve": "resolve",
    "lock": "lock",
    "sync": "env",
    "env": "env",
    "export": "export",
    "facts": "facts",
    "doctor": "doctor",
    "diff": "diff",
    "image": "image",
    "jupyter": "container",
    "shell": "container",
    "exec": "container",
    "site": "site",
    "plan": "plan",
    "simulate": "simulate",
    "run": "run",
    "status": "status",
    "logs": "logs",
    "cancel": "cancel",
    "state": "state",
    "metrics": "metrics",
    "report": "report",
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: with `command`, only that command's module is imported and added."""
    parser = _Parser(
        prog="torchship",
        description="One pinned PyTorch + CUDA environment, resolved for your GPUs and drivers.",
    )
    parser.add_argument("--version", action="version", version=f"torchship {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    names = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else COMMAND_MODULES.values()
    for module in dict.fromkeys(names):
        import_module(f"torchship.cli.{module}").add_parser(sub)
    return parser


def _command(args: Sequence[str]) -> str | None:
    """The command named in `args`: the first word that is not a top-level option."""
    return next((a for a in args if not a.startswith("-")), None)


def _print_error(err: TorchshipError) -> None:
    """`error:` and `hint:`, cut short: the last wall against a message that echoes a user's
    value whole. Bad input is one line; other errors may span a few (a build's log tail)."""
    message = one_line(err.message) if isinstance(err, UsageError) else few_lines(err.message)
    print(f"error: {message}", file=sys.stderr)
    if err.hint:
        print(f"hint: {one_line(err.hint)}", file=sys.stderr)


def _take_debug(args: list[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before `--` (after the command too), taken out of the arguments;
    what follows `--` is the user's command and is left alone."""
    end = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != "--debug"]
    return [*head, *args[end:]], len(head) < end


INTERNAL_ERROR = 3  # a bug in torchship: never mistaken for "errors found" (1) or bad input (2)


def main(argv: Sequence[str] | None = None) -> int:
    args_list, debug = _take_debug(list(sys.argv[1:] if argv is None else argv))
    for stream in (sys.stdout, sys.stderr):  # an ASCII terminal gets '?' for '·', not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        args = build_parser(_command(args_list)).parse_args(args_list)
        if args.command is None:
            build_parser().print_help()
            return 2
        code: int = args.run(args)
        return code
    except TorchshipError as e:
        if debug:
            raise
        _print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if debug:
            raise
        print(f"error: internal error: {type(e).__name__}: {one_line(str(e))}", file=sys.stderr)
        print("hint: re-run with --debug and report the traceback", file=sys.stderr)
        return INTERNAL_ERROR
