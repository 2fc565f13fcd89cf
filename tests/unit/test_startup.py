"""Start-up cost: what `import torchship`, `torchship --version`, `--help` and each command's
parser load. Every call of the command pays for it (issue 20: `--version` took 15x `python -c
pass` when every command imported the whole library), so each check runs a fresh interpreter
and lists the offenders by name. The times themselves are measured by
benchmarks/scale_startup.py, not asserted here (2 shared cores make wall times noisy)."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO
from torchship.cli import COMMANDS, build_parser

QUICKSTART_LOCK = REPO / "examples" / "quickstart" / "torchship.lock"

# Never loaded by `import torchship` nor by `torchship --version`: the network and e-mail
# stacks (what yaml, urllib.request and http drag in), the job store's SQLite, process
# spawning, argparse and typing (a few ms each, at every start), any third-party package, and
# what other commands keep off their own starts (shutil, tempfile, socket, logging: below).
HEAVY = (
    "yaml",
    "http",
    "http.client",
    "ssl",
    "email",
    "urllib.request",
    "json",
    "sqlite3",
    "subprocess",
    "argparse",
    "typing",
    "dataclasses",
    "pathlib",
    "packaging",
    "platformdirs",
    "tomllib",
    "tomli_w",
    "prometheus_client",
    "uv",
    "shutil",
    "tempfile",
    "socket",
    "socketserver",
    "logging",
    "packaging.tags",
)
# What `torchship --version` may load of torchship itself
# (torchship._lazy: the package's PEP 562 names, a dozen lines that import nothing)
VERSION_MODULES = {
    "torchship",
    "torchship._lazy",
    "torchship._version",
    "torchship.cli",
    "torchship.errors",
}


def loaded_after(code: str) -> dict[str, list[str]]:
    """{"heavy": …, "torchship": …}: the modules of HEAVY and of torchship in sys.modules after
    `code` runs in a fresh interpreter (SystemExit from argparse's --help is caught)."""
    probe = (
        "import sys\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "except SystemExit:\n    pass\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "ours = sorted(m for m in sys.modules if m.split('.')[0] == 'torchship')\n"
        "print(repr({'heavy': heavy, 'torchship': ours}), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    data: dict[str, list[str]] = ast.literal_eval(out.stderr.strip().splitlines()[-1])
    return data


def test_import_torchship_loads_nothing_heavy() -> None:
    got = loaded_after("import torchship")
    assert got["heavy"] == []
    assert set(got["torchship"]) == {"torchship", "torchship._lazy", "torchship._version"}


def test_version_builds_no_parser_and_loads_nothing_heavy() -> None:
    got = loaded_after("from torchship.cli import main\nmain(['--version'])")
    assert got["heavy"] == []
    assert set(got["torchship"]) <= VERSION_MODULES, set(got["torchship"]) - VERSION_MODULES


def test_version_prints_what_argparse_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from torchship._version import __version__
    from torchship.cli import main

    assert main(["--version"]) == 0
    fast = capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # argparse's own --version action, as before
        build_parser().parse_args(["--version"])
    assert e.value.code == 0
    assert fast == capsys.readouterr().out == f"torchship {__version__}\n"


@pytest.mark.parametrize("args", [["--help"], []], ids=["--help", "no-command"])
def test_top_level_help_imports_no_command_module(args: list[str]) -> None:
    got = loaded_after(f"from torchship.cli import main\nmain({args!r})")
    commands = [m for m in got["torchship"] if m.startswith("torchship.cli.")]
    assert commands == ["torchship.cli._parser"]
    assert "yaml" not in got["heavy"] and "sqlite3" not in got["heavy"]


def test_top_level_help_lists_every_command_with_its_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from torchship.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    lazy = capsys.readouterr().out
    build_parser(load_all=True).print_help()
    assert lazy == capsys.readouterr().out  # the same page as with every module loaded
    for name in COMMANDS:
        assert f"    {name} " in lazy


def test_command_table_agrees_with_each_modules_parser() -> None:
    """COMMANDS repeats each command's one-line help so that `--help` imports no module: it
    must say what the module's own add_parser says, in the same order."""
    full = build_parser(load_all=True)
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert list(helps) == list(COMMANDS)
    for name, (_, helptext) in COMMANDS.items():
        assert helps[name] == helptext, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_parser_loads_only_its_own_module(name: str) -> None:
    """`torchship NAME --help` builds NAME's parser from its module alone: the library it
    runs is imported inside `run`, so neither YAML nor HTTP nor SQLite comes with it."""
    module = f"torchship.cli.{COMMANDS[name][0]}"
    got = loaded_after(f"from torchship.cli import main\nmain([{name!r}, '--help'])")
    commands = {m for m in got["torchship"] if m.startswith("torchship.cli.")}
    # container's `exec --local` and the lock-reading commands share cli/lock.py's lock_path
    allowed = {module, "torchship.cli._parser", "torchship.cli._output", "torchship.cli.lock"}
    assert commands <= allowed, commands - allowed
    if COMMANDS[name][0] not in ("status", "state", "logs", "cancel", "simulate"):  # others'
        assert not {"yaml", "http", "ssl", "email", "sqlite3", "urllib.request"} & set(
            got["heavy"]
        ), got["heavy"]
        library = {
            m
            for m in got["torchship"]
            if not m.startswith("torchship.cli") and m not in VERSION_MODULES
        }
        # light by design: the site kinds' registry, the layout facts
        assert library <= {"torchship.backends", "torchship.conventions"}, library


@pytest.mark.parametrize("columns", ["50", "120", "", "junk"])
def test_help_is_as_wide_as_argparses_own_formatter_makes_it(
    columns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser tells argparse's formatter the width instead of letting it ask shutil (an
    import of ~4 ms at every start): the same width, from $COLUMNS or else the terminal."""
    from torchship.cli._parser import Formatter

    monkeypatch.setenv("COLUMNS", columns)
    for name in ("lock", "status", None):
        ours = build_parser(name, load_all=name is None)
        assert ours.formatter_class is Formatter
        theirs = build_parser(name, load_all=name is None)
        parsers = [theirs] + [
            p for a in theirs._actions if isinstance(a, argparse._SubParsersAction)
            for p in a.choices.values()
        ]  # fmt: skip
        for p in parsers:
            p.formatter_class = argparse.HelpFormatter
        assert ours.format_help() == theirs.format_help()
        if name:
            assert ours._subparsers is not None
            [mine] = [a for a in ours._actions if isinstance(a, argparse._SubParsersAction)]
            [other] = [a for a in theirs._actions if isinstance(a, argparse._SubParsersAction)]
            assert mine.choices[name].format_help() == other.choices[name].format_help()


def test_a_commands_parser_imports_no_shutil() -> None:
    got = loaded_after("from torchship.cli import build_parser\nbuild_parser('lock')")
    assert "shutil" not in got["heavy"]


def test_constants_repeated_for_the_parsers_agree() -> None:
    """The parsers' choices and defaults, repeated in cli/ so that parsing loads no library
    module, match the modules they come from."""
    from torchship.cli import image as image_cli
    from torchship.cli import lock as lock_cli
    from torchship.cli import metrics as metrics_cli
    from torchship.cli import simulate as simulate_cli
    from torchship.image import VARIANTS
    from torchship.image.build import ENGINES
    from torchship.lock import LOCK_FILE
    from torchship.monitor.exporter import DEFAULT_CACHE_S, DEFAULT_PORT
    from torchship.place.simulate import POLICIES

    assert image_cli.VARIANTS == VARIANTS
    assert image_cli.ENGINES == ENGINES
    assert lock_cli.LOCK_FILE == LOCK_FILE
    assert simulate_cli.POLICIES == POLICIES
    assert (metrics_cli.DEFAULT_PORT, metrics_cli.DEFAULT_CACHE_S) == (
        DEFAULT_PORT,
        DEFAULT_CACHE_S,
    )


def test_a_machines_facts_and_its_environments_load_without_the_doctors_checks() -> None:
    """`sync`, `exec --local` and `run` need a machine's facts and the lock's environments,
    not the doctor's checks, whose patterns took ~60 ms to compile at every `exec --local`;
    the container commands' module loads no `secrets` (hmac, random) until it needs a token."""
    got = loaded_after(
        "import torchship.env, torchship.doctor.facts, torchship.doctor.probe\n"
        "import torchship.cli.container, torchship.cli.env"
    )
    checks = [m for m in got["torchship"] if m.startswith("torchship.doctor.checks")]
    assert checks == [] and "torchship.lock.compile" not in got["torchship"], got["torchship"]
    code = "import sys, torchship.cli.container; print('secrets' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_the_preflight_of_run_loads_no_paste_reader_monitor_or_socket() -> None:
    """`run` checks the machine's facts (torchship.backends.preflight) and starts a supervisor
    (torchship.backends.local): the paste reader (~40 patterns) serves pasted text alone, the
    monitor (NVML, the exporter's socketserver) the supervisor process alone, and neither the
    host's name nor the doctor's data needs socket or tempfile, nor a lock's find-links wheel
    packaging.tags with logging (~45 ms of every `run`)."""
    assert 'file = "torch-' in QUICKSTART_LOCK.read_text()
    got = loaded_after(
        "import torchship.backends.preflight, torchship.backends.local, torchship.state\n"
        "from torchship.doctor.diagnosis import diagnose_facts\n"
        "from torchship.doctor.signatures import load_signatures\n"
        "from torchship._host import hostname\n"
        "from torchship.lock.model import read_lock\n"
        "load_signatures(), hostname()\n"
        f"read_lock(__import__('pathlib').Path({str(QUICKSTART_LOCK)!r}))  # a find-links wheel"
    )
    unwanted = {"socket", "socketserver", "tempfile", "packaging.tags", "logging"}
    assert unwanted.isdisjoint(got["heavy"]), got["heavy"]
    late = ("torchship.doctor.reader", "torchship.monitor")
    assert [m for m in got["torchship"] if m.startswith(late)] == []
