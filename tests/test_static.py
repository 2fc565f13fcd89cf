"""Lint and strict typing are part of the suite, so CI enforces them like any test."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "src", "tests", "tools", "benchmarks"],
        ["ruff", "format", "--check", "src", "tests", "tools", "benchmarks"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_static(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (pip install -e '.[dev]')")
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
