"""A real image, built and run: podman builds the CPU lock's runtime and jupyter variants FROM a
debootstrap Debian base (registries are unreachable here), with the local torch 2.13.0 wheel,
and runs them as the non-root user with no network.

Inside the runtime image `torchship doctor` checks the stack against the lock the image carries
(and catches a foreign lock), and the reference workload trains over 2 processes with gloo.
The jupyter image answers /api/status 403 without its token and 200 with it, and headless
Chromium opens JupyterLab through the token URL.

Needs root and Debian's apt (it installs podman, runc and debootstrap when they are missing),
about 5 minutes the first time; skipped, with the reason, where it cannot run.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import LOCAL_TORCH_WHEELS, REPO
from torchship.lock import read_lock

pytestmark = pytest.mark.slow

CPU_LOCK = REPO / "tests/data/locks/cpu"
WORK = Path("/var/tmp/torchship-e2e")  # debootstrap root, reused between runs
BASE = "localhost/torchship-e2e-base:bookworm"
UV = "localhost/torchship-e2e-uv:local"


def _limits() -> list[str]:
    """podman's default ulimits exceed what this sandbox may set (no CAP_SYS_RESOURCE)."""
    out = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        n = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        out.append(f"--ulimit={name}={n}:{n}")
    return out


# crun cannot create containers under this kernel's hybrid cgroups; runc can.
ENGINE_ARGS = ["--runtime=runc", *_limits()]


def sh(*argv: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _install_tools() -> str | None:
    """podman, runc and debootstrap, installed with apt when missing; the reason when not."""
    missing = [t for t in ("podman", "runc", "debootstrap") if not shutil.which(t)]
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


def _base_image() -> None:
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


def _uv_image() -> None:
    """uv's own image holds /uv; here it is built FROM scratch from this env's uv binary."""
    import uv

    ctx = WORK / "uv"
    ctx.mkdir(parents=True, exist_ok=True)
    shutil.copy2(uv.find_uv_bin(), ctx / "uv")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\n")
    sh("podman", "build", *ENGINE_ARGS, "--tag", UV, str(ctx))


def _build(variant: str, tag: str) -> None:
    argv = [sys.executable, "-m", "torchship", "image", "build", str(CPU_LOCK)]
    argv += ["--engine", "podman", "--variant", variant, "--tag", tag]
    argv += ["--base-image", BASE, "--python", "/usr/bin/python3.11", "--uv-image", UV]
    argv += ["--find-links", str(LOCAL_TORCH_WHEELS), "--pytorch-index", "none"]
    argv += [f"--engine-arg={a}" for a in ["--network=host", *ENGINE_ARGS]]
    sh(*argv)


@dataclass(frozen=True)
class Images:
    runtime: str
    jupyter: str


@pytest.fixture(scope="module")
def images() -> Images:
    if not LOCAL_TORCH_WHEELS.is_dir():
        pytest.skip(f"needs the local torch 2.13.0 CPU wheel in {LOCAL_TORCH_WHEELS}")
    reason = _install_tools()
    if reason:
        pytest.skip(reason)
    WORK.mkdir(parents=True, exist_ok=True)
    _base_image()
    _uv_image()
    lock = read_lock(CPU_LOCK / "torchship.lock")
    out = Images(
        f"localhost/e2e-cpu:runtime-{lock.short_hash}",
        f"localhost/e2e-cpu:jupyter-{lock.short_hash}",
    )
    _build("runtime", out.runtime)
    _build("jupyter", out.jupyter)
    return out


def run(image: str, *cmd: str, extra: tuple[str, ...] = (), check: bool = True) -> str:
    argv = ["podman", "run", "--rm", "--network=none", "--user=1000:1000", "--shm-size=1g"]
    argv += [*ENGINE_ARGS, *extra, image, *cmd]
    return sh(*argv, check=check, timeout=600).stdout


def test_labels_user_and_lock_in_the_image(images: Images) -> None:
    lock = read_lock(CPU_LOCK / "torchship.lock")
    fmt = '{{index .Config.Labels "io.torchship.lock-hash"}} {{.Config.User}}'
    out = sh("podman", "image", "inspect", "--format", fmt, images.runtime).stdout.split()
    assert out == [lock.content_hash, "1000:1000"]
    inside = run(images.runtime, "sh", "-c", "id -u; test -e /run/secrets/ca-bundle || echo none")
    # non-root, and the build secret (the CA bundle) never landed in a layer
    assert inside.split() == ["1000", "none"]
    assert run(images.runtime, "sh", "-c", "cat $TORCHSHIP_LOCK") == lock.to_toml()


def test_doctor_inside_checks_the_image_against_its_lock(images: Images) -> None:
    out = run(images.runtime, "torchship", "doctor")
    assert "0 error(s)" in out and "torch 2.13.0+cpu" in out
    # another project's lock: the doctor names the drift and exits non-zero
    foreign = f"{REPO}/examples/quickstart/torchship.lock:/tmp/other.lock:ro,Z"
    env = ("-v", foreign, "-e", "TORCHSHIP_LOCK=/tmp/other.lock")
    p = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network=none",
            "--user=1000:1000",
            "--shm-size=1g",
            *ENGINE_ARGS,
            *env,
            images.runtime,
            "torchship",
            "doctor",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode != 0 and "lock" in p.stdout, p.stdout + p.stderr


def test_reference_workload_two_processes_no_network(images: Images) -> None:
    out = run(
        images.runtime,
        "python",
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        "--master-port=29500",
        "-m",
        "torchship.workload",
        "--steps=20",
        "--d-model=64",
        "--layers=2",
        "--heads=2",
    )
    assert "done: 20 steps" in out and "params identical on all ranks: True" in out, out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # not listening yet
        return 0


@pytest.fixture
def jupyter(images: Images) -> Iterator[tuple[str, str]]:
    port, token, name = _free_port(), os.urandom(16).hex(), f"e2e-jupyter-{os.getpid()}"
    sh(
        "podman",
        "run",
        "-d",
        "--name",
        name,
        "--user=1000:1000",
        *ENGINE_ARGS,
        "-e",
        f"JUPYTER_TOKEN={token}",
        "-p",
        f"127.0.0.1:{port}:8888",
        images.jupyter,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _status(f"{base}/api", None) != 200:
            assert time.monotonic() < deadline, sh("podman", "logs", name, check=False).stderr
            time.sleep(0.5)
        yield base, token
    finally:
        sh("podman", "rm", "-f", name, check=False)


def test_jupyter_needs_its_token(jupyter: tuple[str, str], tmp_path: Path) -> None:
    base, token = jupyter
    assert _status(f"{base}/api/status") == 403
    assert _status(f"{base}/api/status", token) == 200
    assert _status(f"{base}/api/contents", "wrong-token") == 403
    if shutil.which("chromium") is None:
        return  # the screenshot in docs/ was taken where Chromium is installed
    lab = _chromium(tmp_path, "--dump-dom", f"{base}/lab?token={token}")
    card = re.compile(r'class="[^"]*jp-LauncherCard')  # an element, not a CSS rule
    assert card.search(lab), lab[-2000:]  # JupyterLab rendered, its launcher open
    login = _chromium(tmp_path, "--dump-dom", f"{base}/lab?token=nope")
    assert not card.search(login) and 'name="password"' in login  # the login page instead
    shot = tmp_path / "jupyterlab.png"
    _chromium(tmp_path, f"--screenshot={shot}", f"{base}/lab?token={token}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TORCHSHIP_KEEP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TORCHSHIP_KEEP_SCREENSHOT"])


def _chromium(tmp: Path, *args: str) -> str:
    """Headless Chromium with a fresh profile each time (no login cookie carried over)."""
    profile = tmp / f"profile-{os.urandom(4).hex()}"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
        "--virtual-time-budget=20000",
    ]
    proc = subprocess.run(
        ["chromium", *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )
    return proc.stdout
