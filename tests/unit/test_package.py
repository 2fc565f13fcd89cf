"""The package contract: import has no side effects, __all__ is complete, writes are atomic."""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import torchship
from torchship._atomic import write_text_atomic


def test_import_pulls_in_no_heavy_or_optional_module() -> None:
    code = (
        "import sys, torchship; bad = [m for m in ('torch', 'uv', 'pynvml', 'kubernetes', "
        "'docker', 'numpy') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_commands_import_only_their_own_module() -> None:
    """`torchship run` loads neither Kubernetes rendering nor the simulator nor YAML, and the
    table of command modules agrees with the parsers the modules add (their help strings too:
    tests/unit/test_startup.py)."""
    from torchship.cli import COMMAND_MODULES, build_parser

    full = build_parser(load_all=True)
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(COMMAND_MODULES)
    for name in COMMAND_MODULES:
        one = build_parser(name)
        one_sub = next(a for a in one._actions if isinstance(a, argparse._SubParsersAction))
        assert name in one_sub.choices
    code = (
        "import sys; from torchship.cli import build_parser; build_parser('run');"
        "print(sorted(m for m in ('torchship.k8s.render', 'torchship.place.simulate', 'yaml',"
        " 'torchship.backends.docker') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_complete() -> None:
    public = {
        n
        for n in dir(torchship)
        if not n.startswith("_") and not inspect.ismodule(getattr(torchship, n))
    }
    assert public <= set(torchship.__all__)
    for name in torchship.__all__:
        assert hasattr(torchship, name), name


def test_atomic_write_replaces_whole_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.txt"
    write_text_atomic(target, "old")
    assert target.read_text() == "old"

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_write_takes_a_fresh_name_and_never_one_that_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, elsewhere = tmp_path / "f.txt", tmp_path / "elsewhere"
    elsewhere.write_text("keep")
    draws = iter([b"\x00" * 6, b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws))
    # the first name drawn is a link to another file: written through, it would change it
    (tmp_path / f".f.txt.{'00' * 6}.tmp").symlink_to(elsewhere)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and elsewhere.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".f.txt.000000000000.tmp",
                                                           "elsewhere", "f.txt"]  # fmt: skip


def test_every_data_file_ships_in_the_wheel() -> None:
    """A data file that package-data does not name is missing from `pip install .` (editable
    installs hide it): the doctor's signatures were, until this test."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["torchship"]
    package = root / "src/torchship"
    for path in package.rglob("*"):
        if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
