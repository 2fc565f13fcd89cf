"""checkov's Dockerfile checks all pass on every rendered Dockerfile (goldens and examples).

checkov pins many packages of its own, so the test installs it into a venv of its own
(/var/tmp/torchship-checkov, reused) from PyPI; skipped with the reason where pip cannot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tools.scan_dockerfiles import checkov

from tests.conftest import REPO

pytestmark = pytest.mark.slow
VENV = Path("/var/tmp/torchship-checkov")
DOCKERFILES = sorted(
    [
        *REPO.glob("tests/golden/dockerfiles/*/Dockerfile"),
        *REPO.glob("examples/*/image/*/Dockerfile"),
    ]
)


@pytest.fixture(scope="module")
def checkov_exe() -> str:
    exe = VENV / "bin/checkov"
    if not exe.exists():
        for argv in (
            [sys.executable, "-m", "venv", str(VENV)],
            [str(VENV / "bin/pip"), "install", "-q", "checkov"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
            if proc.returncode != 0:
                pytest.skip(f"cannot install checkov: {proc.stderr.strip()[-300:]}")
    return str(exe)


def test_every_rendered_dockerfile_passes_checkov(checkov_exe: str) -> None:
    assert len(DOCKERFILES) >= 16
    failures = {}
    for path in DOCKERFILES:
        passed, failed, ids = checkov(checkov_exe, path)
        assert passed > 50, f"{path}: checkov ran {passed} checks; did it parse the file?"
        if failed:
            failures[str(path.relative_to(REPO))] = ids
    assert failures == {}
