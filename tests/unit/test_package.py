"""The package contract: import has no side effects, __all__ is complete, writes are atomic."""

from __future__ import annotations

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
