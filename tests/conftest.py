"""Shared fixtures and helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.podman_env import LOCAL_TORCH_WHEELS
from torchship.compat import Matrix, Request, Resolution, load_matrix, lookup_gpu
from torchship.compat.resolve import resolve
from torchship.spec.fields import parse_cuda, parse_driver, parse_glibc, parse_torch

REPO = Path(__file__).resolve().parents[1]
__all__ = ["LOCAL_TORCH_WHEELS", "REPO", "run_cli", "venv_tool"]


def pytest_configure(config: pytest.Config) -> None:
    """Synced environments go to a cache of this test run's own (removed at its end), so a run
    never uses, or is disturbed by, the user's cache or a concurrent run: the first test that
    runs a job syncs the quickstart's environment, and every later one finds it there.
    TORCHSHIP_TEST_CACHE_DIR names a cache to keep between runs instead (a developer's choice;
    CI never sets it)."""
    keep = os.environ.get("TORCHSHIP_TEST_CACHE_DIR")
    path = keep or tempfile.mkdtemp(prefix="torchship-test-cache-")
    os.environ["TORCHSHIP_CACHE_DIR"] = path
    config.stash[_CACHE] = "" if keep else path


def _example_files() -> set[str]:
    return {str(p.relative_to(REPO)) for p in (REPO / "examples").rglob("*")}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_EXAMPLES] = _example_files()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run leaves the examples as it found them (a job run in place writes its checkpoints
    beside its job.toml: tests copy the example first)."""
    before = session.config.stash.get(_EXAMPLES, None)
    if before is None:
        return
    new = sorted(_example_files() - before)
    if new:
        print(f"\nerror: the tests wrote into examples/: {', '.join(new[:5])}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_EXAMPLES = pytest.StashKey[set[str]]()


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_CACHE, "")
    if path:
        shutil.rmtree(path, ignore_errors=True)


_CACHE = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden", action="store_true", help="rewrite golden files from the current code"
    )


@pytest.fixture(scope="session")
def matrix() -> Matrix:
    return load_matrix()


def request(
    torch: str,
    gpus: Iterable[str] = (),
    driver: str | None = None,
    cuda: str = "auto",
    python: str | None = None,
    glibc: str | None = None,
    allow_forward_compat: bool = False,
    domain: tuple[str, ...] = (),
) -> Request:
    m = load_matrix()
    spec, pin = parse_torch(torch)
    return Request(
        torch=spec,
        torch_text=torch,
        cuda=pin or parse_cuda(cuda),
        python=python,
        gpus=tuple(lookup_gpu(m, g) for g in gpus),
        driver=parse_driver(driver) if driver else None,
        glibc=parse_glibc(glibc) if glibc else None,
        allow_forward_compat=allow_forward_compat,
        domain_libraries=domain,
    )


def res(torch: str, gpus: Iterable[str] = (), **kw: object) -> Resolution:
    return resolve(request(torch, gpus, **kw), load_matrix())  # type: ignore[arg-type]


def codes(r: Resolution) -> dict[str, str]:
    return {x.variant: x.code for x in r.rejected}


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m torchship ARGS` as a user runs it (a separate process, real exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "torchship", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )


def venv_tool(venv: Path, package: str, exe: str) -> Path:
    """`exe` from `package` installed from PyPI into a venv of its own, shared by runs; skips
    the test with pip's reason where it cannot be installed.

    The venv is built once, whole, by build_once (tests/podman_env.py): in a folder of its own
    under an flock, published as the link VENV.venv only when `exe` is there, so runs at once
    never build it twice or use it half-built, and a killed build is never used. (VENV.venv,
    not VENV: a folder at VENV may be the non-atomic build of this helper's earlier version,
    which a run of that version may still be using; it is left alone.)"""
    from tests.podman_env import build_once

    def install(folder: Path) -> None:
        for argv in (
            [sys.executable, "-m", "venv", str(folder)],
            [str(folder / "bin/pip"), "install", "-q", package],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
            if proc.returncode != 0:
                pytest.skip(f"cannot install {package}: {proc.stderr.strip()[-300:]}")
        assert (folder / "bin" / exe).exists(), f"{package} installed no {exe}"

    return build_once(venv.with_name(f"{venv.name}.venv"), install) / "bin" / exe
