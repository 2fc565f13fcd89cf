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


# --- locks across platforms (issue 18): uv resolving for each platform against PyPI -------------

FLEET_SPEC = """
name = "fleet"
torch = "2.13.0"
python = "3.11"
packages = ["numpy", "tqdm"]
[targets]
gpus = ["H100", "GB200"]
driver = "580.95.05"
cpu = false
platforms = ["linux-x86_64", "linux-aarch64", "macos-arm64"]
"""


def test_a_lock_across_linux_x86_64_aarch64_and_macos_from_pypi(tmp_path: Path) -> None:
    (tmp_path / "torchship.toml").write_text(FLEET_SPEC)
    out = torchship("lock", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lock = read_lock(tmp_path / "torchship.lock")
    envs = {e.name: e for e in lock.all_environments()}
    assert list(envs) == ["cu130", "linux-aarch64-cu130", "macos-arm64-cpu"]
    arm, mac = envs["linux-aarch64-cu130"], envs["macos-arm64-cpu"]
    assert arm.platform == "aarch64-manylinux_2_28" and mac.macos_min == "14.0"
    # every pin hashed; torch's hashes on each platform include that platform's wheel's
    for e in envs.values():
        assert all(p.hashes for p in e.packages)
    torch = {name: next(p for p in e.packages if p.name == "torch") for name, e in envs.items()}
    assert {t.version for t in torch.values()} == {"2.13.0"}
    numpy = {next(p.version for p in e.packages if p.name == "numpy") for e in envs.values()}
    assert len(numpy) == 1  # one numpy everywhere: the primary's pins constrain the others
    assert any(p.name == "nvidia-nccl-cu13" for p in arm.packages)
    assert not any(p.name.startswith("nvidia-") for p in mac.packages)
    assert torchship("lock", "--check", str(tmp_path)).returncode == 0
    req = torchship("export", "requirements", str(tmp_path), "--env", "macos-arm64-cpu")
    assert req.returncode == 0 and "on aarch64-apple-darwin" in req.stdout


@pytest.mark.skipif(
    not list(LOCAL_TORCH_WHEELS.glob("torch-2.13.0+cpu-cp311-*.whl")),
    reason="no local torch 2.13.0 CPU wheel in /opt/wheels",
)
def test_a_cpu_lock_for_linux_macos_and_windows(tmp_path: Path) -> None:
    (tmp_path / "torchship.toml").write_text(
        'name = "cpu-fleet"\ntorch = "2.13.0"\ncuda = "cpu"\npython = "3.11"\n'
        'packages = ["numpy", "tqdm"]\n[targets]\n'
        'platforms = ["linux-x86_64", "macos-arm64", "windows-x86_64"]\n'
    )
    out = torchship("lock", str(tmp_path), "--find-links", str(LOCAL_TORCH_WHEELS))
    assert out.returncode == 0, out.stderr
    lock = read_lock(tmp_path / "torchship.lock")
    assert [e.name for e in lock.all_environments()] == [
        "cpu",
        "macos-arm64-cpu",
        "windows-x86_64-cpu",
    ]
    win = lock.environment("windows-x86_64-cpu")
    assert win is not None and win.platform == "x86_64-pc-windows-msvc"
    assert win.torch == "2.13.0" and "colorama" in {p.name for p in win.packages}


def test_a_package_without_a_wheel_for_one_platform_is_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "torchship.toml").write_text(
        'name = "no-wheel"\ntorch = "2.13.0"\npython = "3.11"\npackages = ["numpy", "triton"]\n'
        '[targets]\ngpus = ["H100"]\ncpu = false\nplatforms = ["linux-x86_64", "macos-arm64"]\n'
    )
    out = torchship("lock", str(tmp_path))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 2, out.stderr
    assert lines[0].startswith("error: macos-arm64-cpu: no wheel of triton for macosx_14_0_arm64")
    assert lines[1].startswith("hint: leave it out there with a marker") and "darwin" in lines[1]
    assert not (tmp_path / "torchship.lock").exists()
    # the fix the hint gives works: triton is locked on Linux and left out on the Mac
    spec = (tmp_path / "torchship.toml").read_text()
    marker = lines[1].split('("', 1)[1].split('")', 1)[0]
    (tmp_path / "torchship.toml").write_text(spec.replace('"triton"', f'"{marker}"'))
    out = torchship("lock", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lock = read_lock(tmp_path / "torchship.lock")
    mac = lock.environment("macos-arm64-cpu")
    assert mac is not None and "triton" not in {p.name for p in mac.packages}
    assert "triton" in {p.name for p in lock.packages}


def test_an_unreachable_index_of_one_platform_fails_the_whole_lock(tmp_path: Path) -> None:
    """Windows' CUDA builds live on the PyTorch index only (here a port nothing listens on);
    an RTX 4090 is checked on Windows, so its environment is a CUDA one."""
    (tmp_path / "torchship.toml").write_text(
        FLEET_SPEC.replace('"macos-arm64"]', '"macos-arm64", "windows-x86_64"]').replace(
            '"GB200"]', '"GB200", "RTX 4090"]'
        )
    )
    out = run_cli(
        "lock",
        str(tmp_path),
        "--pytorch-index",
        "http://127.0.0.1:9/whl",
        env={"UV_HTTP_RETRIES": "0", "PIP_FIND_LINKS": ""},
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 2, out.stderr
    assert lines[0].startswith("error: cannot reach the package index http://127.0.0.1:9/whl/cu")
    assert lines[0].endswith("(locking windows-x86_64-cu132)")
    assert "--platform win_amd64" in lines[1]
    assert not (tmp_path / "torchship.lock").exists()
