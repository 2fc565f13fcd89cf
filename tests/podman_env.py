"""A real container engine here: podman (installed with apt when missing), a debootstrap Debian
base and uv's /uv in a FROM-scratch image, since no registry is reachable. Shared by
tests/integration/test_image_e2e.py and benchmarks/image_size.py.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL_TORCH_WHEELS = Path("/opt/wheels")
CPU_LOCK = REPO / "tests/data/locks/cpu"
WORK = Path("/var/tmp/torchship-e2e")  # debootstrap root, reused between runs
BASE = "localhost/torchship-e2e-base:bookworm"
UV = "localhost/torchship-e2e-uv:local"


def limits() -> list[str]:
    """podman's default ulimits exceed what this sandbox may set (no CAP_SYS_RESOURCE)."""
    out = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        n = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        out.append(f"--ulimit={name}={n}:{n}")
    return out


# crun cannot create containers under this kernel's hybrid cgroups; runc can.
ENGINE_ARGS = ["--runtime=runc", *limits()]


def sh(*argv: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def install_tools(tools: tuple[str, ...] = ("podman", "runc", "debootstrap")) -> str | None:
    """Debian packages named as their commands (podman, runc, debootstrap, chromium), installed
    with apt when missing; the reason when they cannot be."""
    missing = [t for t in tools if not shutil.which(t)]
    if not missing:
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"needs {', '.join(missing)} (root with apt-get installs them)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=900, check=False
        )
        if proc.returncode != 0:
            return f"{' '.join(argv)} failed: {proc.stderr.strip()[-300:]}"
    return None


def base_image() -> None:
    if sh("podman", "image", "exists", BASE, check=False).returncode == 0:
        return
    rootfs = WORK / "rootfs"
    if not (rootfs / "usr/bin/python3.11").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        sh(
            "debootstrap",
            "--variant=minbase",
            "--include=python3,ca-certificates",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        )
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    sh_in = subprocess.run(
        ["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, check=False
    )
    tar.wait()
    assert sh_in.returncode == 0, sh_in.stderr


def uv_image() -> None:
    """uv's own image holds /uv; here it is built FROM scratch from this env's uv binary."""
    import uv

    ctx = WORK / "uv"
    ctx.mkdir(parents=True, exist_ok=True)
    shutil.copy2(uv.find_uv_bin(), ctx / "uv")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\n")
    sh("podman", "build", *ENGINE_ARGS, "--tag", UV, str(ctx))


def build(variant: str, tag: str, lock: Path = CPU_LOCK) -> None:
    """`torchship image build` of `lock` on the local base, as a user would run it."""
    argv = [sys.executable, "-m", "torchship", "image", "build", str(lock)]
    argv += ["--engine", "podman", "--variant", variant, "--tag", tag]
    argv += ["--base-image", BASE, "--python", "/usr/bin/python3.11", "--uv-image", UV]
    argv += ["--find-links", str(LOCAL_TORCH_WHEELS), "--pytorch-index", "none"]
    argv += [f"--engine-arg={a}" for a in ["--network=host", *ENGINE_ARGS]]
    sh(*argv)


def prepare() -> str | None:
    """Engine, base and uv images ready; or the reason they cannot be here."""
    if not LOCAL_TORCH_WHEELS.is_dir():
        return f"needs the local torch 2.13.0 CPU wheel in {LOCAL_TORCH_WHEELS}"
    reason = install_tools()
    if reason:
        return reason
    WORK.mkdir(parents=True, exist_ok=True)
    base_image()
    uv_image()
    return None


def image_size(tag: str) -> int:
    return int(sh("podman", "image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
