"""Real locks: uv resolving against PyPI and a local find-links folder, and an unreachable index.

These run `torchship` as a subprocess, as a user would. They need PyPI (marker `network`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LOCAL_TORCH_WHEELS, REPO, run_cli
from torchship.compat import load_matrix
from torchship.lock import read_lock

pytestmark = pytest.mark.network


def torchship(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"UV_HTTP_RETRIES": "0"})


def test_quickstart_locks_from_pypi(tmp_path: Path) -> None:
    project = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples/quickstart", project)
    (project / "torchship.lock").unlink(missing_ok=True)
    out = torchship("lock", str(project))
    assert out.returncode == 0, out.stderr
    assert "locked quickstart: torch 2.13.0 (cu130, CUDA 13.0)" in out.stdout
    lock = read_lock(project / "torchship.lock")
    release = load_matrix().release("2.13.0")
    assert release is not None
    names = {p.name: p for p in lock.packages}
    # torch's own nvidia-* pins decide cuDNN and NCCL; they match the matrix's PyPI facts.
    assert lock.cudnn == dict(release.pypi_default_pins)["nvidia-cudnn-cu13"].lstrip("=")
    assert lock.nccl == dict(release.pypi_default_pins)["nvidia-nccl-cu13"].lstrip("=")
    assert names["torch"].version == "2.13.0" and len(names["torch"].hashes) > 5
    assert all(p.hashes and all(h.startswith("sha256:") for h in p.hashes) for p in lock.packages)
    assert "numpy" in names and lock.index_url == "https://pypi.org/simple"
    assert torchship("lock", "--check", str(project)).returncode == 0
    req = torchship("export", "requirements", str(project))
    assert req.returncode == 0 and "torch==2.13.0 \\" in req.stdout


def test_committed_quickstart_lock_is_current() -> None:
    """The example ships its lock (so `image render` works on a fresh clone); it must match."""
    out = torchship("lock", "--check", str(REPO / "examples/quickstart"))
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(
    not list(LOCAL_TORCH_WHEELS.glob("torch-2.13.0+cpu-*.whl")),
    reason="no local torch 2.13.0 CPU wheel in /opt/wheels",
)
def test_cpu_lock_from_a_find_links_folder(tmp_path: Path) -> None:
    (tmp_path / "torchship.toml").write_text('torch = "2.13.0"\ncuda = "cpu"\npython = "3.11"\n')
    out = torchship("lock", str(tmp_path), "--find-links", str(LOCAL_TORCH_WHEELS))
    assert out.returncode == 0, out.stderr
    lock = read_lock(tmp_path / "torchship.lock")
    torch = next(p for p in lock.packages if p.name == "torch")
    wheel = next(LOCAL_TORCH_WHEELS.glob("torch-2.13.0+cpu-*.whl"))
    digest = "sha256:" + hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert torch.version == "2.13.0+cpu" and digest in torch.hashes
    assert lock.index_url == "https://download.pytorch.org/whl/cpu" and lock.cuda is None
    assert not any(p.name.startswith("nvidia-") for p in lock.packages)


def test_unreachable_index_is_named_with_the_way_around(tmp_path: Path) -> None:
    (tmp_path / "torchship.toml").write_text('torch = "2.13.0"\ncuda = "cpu"\npython = "3.11"\n')
    # Port 9 (discard) on loopback refuses connections: an index that cannot be reached.
    # no find-links copy of the CPU wheel either (PIP_FIND_LINKS would serve it)
    out = run_cli(
        "lock",
        str(tmp_path),
        "--pytorch-index",
        "http://127.0.0.1:9/whl",
        env={"UV_HTTP_RETRIES": "0", "PIP_FIND_LINKS": ""},
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: cannot reach the package index http://127.0.0.1:9/whl/cpu")
    assert lines[1].startswith("hint: ") and "--find-links DIR" in lines[1]
    assert len(lines) == 2 and "Traceback" not in out.stderr
    assert not (tmp_path / "torchship.lock").exists()
