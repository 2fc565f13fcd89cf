"""The `torchship` command: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success; 1 the request cannot be met (nothing fits, lock out of date, index
unreachable); 2 bad usage or bad input; 130 interrupted. No traceback unless --debug.

Start-up is paid on every call, so this module imports nothing heavy: `torchship --version`
answers before any parser is built, and `torchship --help` lists the commands from COMMANDS
without importing one of their modules. A command imports its own module only (and what that
imports inside its `run`).
"""

from __future__ import annotations

import errno
import sys
from importlib import import_module

from torchship._version import __version__
from torchship.errors import TorchshipError, UsageError, few_lines, one_line

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a few ms at start-up)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

# Each command by the name the user types: its module, and the one-line help that module's
# add_parser gives it (repeated here so that the top-level help imports no command module; a
# test checks that the two agree). `torchship run` imports cli/run.py alone, so it does not pay
# for Kubernetes rendering or the simulator.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("init", "write a commented torchship.toml"),
    "resolve": ("resolve", "find the torch build that runs on the targets"),
    "lock": ("lock", "resolve the spec and write torchship.lock"),
    "sync": ("env", "build the lock's environment for this machine; print its path"),
    "env": ("env", "the synced environments in torchship's cache"),
    "export": ("export", "export the lock in another format"),
    "facts": ("facts", "write this machine's facts as JSON"),
    "doctor": ("doctor", "diagnose a machine or a pasted report: the cause and the fix"),
    "diff": ("diff", "what differs between two machines, and what matters"),
    "image": ("image", "render or build the project's image from its lock"),
    "jupyter": ("container", "JupyterLab in the project's image, on 127.0.0.1 with a fresh token"),
    "shell": ("container", "an interactive shell in the project's runtime image"),
    "exec": (
        "container",
        "run one command in the project's runtime image: exec [PROJECT] -- CMD ...",
    ),
    "site": ("site", "add, list or check the sites placement may use"),
    "plan": ("plan", "place a job across the sites and explain the choice"),
    "simulate": ("simulate", "replay a job trace under each placement policy"),
    "run": ("run", "run a job (job.toml) on a site, after a preflight"),
    "status": ("status", "jobs and their states (one job: its history)"),
    "logs": ("logs", "a job's output"),
    "cancel": ("cancel", "stop a job"),
    "state": ("state", "check, repair, prune or vacuum the job store (jobs.db)"),
    "metrics": ("metrics", "Prometheus metrics: GPUs (DCGM names) and jobs"),
    "report": ("report", "an HTML page about one run, with plots"),
}
COMMAND_MODULES = {name: module for name, (module, _) in COMMANDS.items()}


def build_parser(command: str | None = None, *, load_all: bool = False) -> argparse.ArgumentParser:
    """The parser. Only `command`'s module is imported and adds its full parser; every other
    command is a stub that carries its name and help, enough for `--help` and for "invalid
    choice". `load_all`: every module adds its own (the tests compare them with COMMANDS)."""
    from torchship.cli._parser import Parser

    parser = Parser(
        prog="torchship",
        description="One pinned PyTorch + CUDA environment, resolved for your GPUs and drivers.",
    )
    parser.add_argument("--version", action="version", version=f"torchship {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    wanted = set(COMMAND_MODULES.values()) if load_all else {COMMAND_MODULES.get(command or "")}
    known = command in COMMAND_MODULES and not load_all  # the others' stubs would go unused
    for name, (module, helptext) in COMMANDS.items():
        if name in sub.choices:  # added by its module with an earlier name (sync, then env)
            continue
        if module in wanted:
            import_module(f"torchship.cli.{module}").add_parser(sub)
        elif not known:
            sub.add_parser(name, help=helptext, add_help=False)
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
        if args_list[:1] == ["--version"]:  # what argparse would print, without building it
            print(f"torchship {__version__}")
            return _flushed(0)
        parser = build_parser(_command(args_list))
        try:
            args = parser.parse_args(args_list)
        except SystemExit:  # --help, or argparse's own usage error: written, then flushed here
            sys.stdout.flush()  # so that a full disk under it is said, not lost at exit
            raise
        if args.command is None:
            parser.print_help()
            return _flushed(2)
        code: int = args.run(args)
        return _flushed(code)
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
    except OSError as e:  # a full disk is the machine's state, not a bug (`status > /dev/full`)
        if debug or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            if debug:
                raise
            return _internal(e)
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: no space left to write{where}: {e.strerror}", file=sys.stderr)
        print("hint: free some space on that file system, or write elsewhere", file=sys.stderr)
        _discard_stdout()  # what could not be written is dropped, not retried at exit
        return 1
    except Exception as e:
        if debug:
            raise
        return _internal(e)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is still buffered
    succeeds instead of printing a second error and exiting 120 (as Python's docs do for
    SIGPIPE)."""
    import os

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file under stdout: nothing buffered
        pass


def _flushed(code: int) -> int:
    """`code`, once what was printed is written: a block-buffered stdout (a file, not a
    terminal) fails on a full disk only when flushed, which at exit would lose the error."""
    sys.stdout.flush()
    return code


def _internal(e: BaseException) -> int:
    print(f"error: internal error: {type(e).__name__}: {one_line(str(e))}", file=sys.stderr)
    print("hint: re-run with --debug and report the traceback", file=sys.stderr)
    return INTERNAL_ERROR
