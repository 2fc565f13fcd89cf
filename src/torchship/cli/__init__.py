"""The `torchship` command: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success; 1 the request cannot be met (nothing fits, lock out of date, index
unreachable); 2 bad usage or bad input; 130 interrupted. No traceback unless --debug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from torchship._version import __version__
from torchship.cli import cancel as cancel_cmd
from torchship.cli import container as container_cmd
from torchship.cli import diff as diff_cmd
from torchship.cli import doctor as doctor_cmd
from torchship.cli import env as env_cmd
from torchship.cli import export as export_cmd
from torchship.cli import facts as facts_cmd
from torchship.cli import image as image_cmd
from torchship.cli import init as init_cmd
from torchship.cli import lock as lock_cmd
from torchship.cli import logs as logs_cmd
from torchship.cli import metrics as metrics_cmd
from torchship.cli import plan as plan_cmd
from torchship.cli import report as report_cmd
from torchship.cli import resolve as resolve_cmd
from torchship.cli import run as run_cmd
from torchship.cli import simulate as simulate_cmd
from torchship.cli import site as site_cmd
from torchship.cli import status as status_cmd
from torchship.errors import TorchshipError, UsageError

COMMANDS = (
    init_cmd,
    resolve_cmd,
    lock_cmd,
    env_cmd,
    export_cmd,
    facts_cmd,
    doctor_cmd,
    diff_cmd,
    image_cmd,
    container_cmd,
    site_cmd,
    plan_cmd,
    simulate_cmd,
    run_cmd,
    status_cmd,
    logs_cmd,
    cancel_cmd,
    metrics_cmd,
    report_cmd,
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torchship",
        description="One pinned PyTorch + CUDA environment, resolved for your GPUs and drivers.",
    )
    parser.add_argument("--version", action="version", version=f"torchship {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    return parser


def _print_error(err: TorchshipError) -> None:
    print(f"error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"hint: {err.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        args = build_parser().parse_args(args_list)
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
        print(f"error: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: re-run with --debug and report the traceback", file=sys.stderr)
        return 1
