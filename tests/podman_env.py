"""A real container engine here: podman (installed with apt when missing), a debootstrap Debian
base and uv's /uv in a FROM-scratch image, since no registry is reachable. Shared by
tests/integration/test_image_e2e.py and benchmarks/image_size.py.

Runs at once share only podman's own store (it locks itself) and the debootstrap root under
CACHE, which build_once() builds one run at a time and publishes whole. Everything else a run
writes goes to a folder of its own: the one it passes to prepare() for the uv image's context,
and TMPDIR for `torchship image build` and podman (test_image_e2e points it at its folder).
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL_TORCH_WHEELS = Path("/opt/wheels")
CPU_LOCK = REPO / "tests/data/locks/cpu"
CACHE = Path("/var/tmp/torchship-e2e")  # shared by runs: the debootstrap root (minutes to build)
ROOTFS = CACHE / "rootfs-bookworm"
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


# --- shared caches and mounts ---------------------------------------------------------------


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing), held for the block; it ends with the
    process, so a killed run never leaves it held. Children do not inherit it (O_CLOEXEC)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first, from /proc/self/mountinfo."""
    top = os.path.realpath(root)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # the 5th field; space, tab, newline and backslash come octal-escaped (\040)
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
        if point == top or point.startswith(top.rstrip("/") + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(root: Path) -> list[str]:
    """Unmount everything at or below `root` (a debootstrap killed by a timeout leaves its
    /proc and /sys mounted in the target); the mount points it undid. Lazily where busy."""
    undone: list[str] = []
    for _ in range(10):  # stacked mounts on one point come off one per pass
        points = mounts_under(root)
        if not points:
            return undone
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
            undone.append(point)
    raise AssertionError(f"still mounted under {root}: {mounts_under(root)}")


def remove_tree(path: Path) -> None:
    """rm -rf that first takes off what is mounted inside: never delete through a mount."""
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """`dest`, made by build(folder) the first time and reused after.

    Under an flock on DEST.lock, build() fills a new folder beside dest (DEST.build-XXXX),
    which is then published as the symlink dest by renaming a fresh link over it, atomically:
    runs at once never both build, and never see a half-built dest. The folder keeps the path
    it was built at, which a venv needs. What an interrupted build left is removed, mounts
    inside included; a build that raises (or skips) leaves nothing behind."""
    with locked(dest.with_name(f"{dest.name}.lock")):
        current = os.readlink(dest) if dest.is_symlink() and dest.exists() else None
        for old in dest.parent.glob(f"{dest.name}.build-*"):
            if old.is_symlink():  # a link not yet renamed over dest
                old.unlink()
            elif old.name != current:
                remove_tree(old)
        if current is not None:
            return dest
        if dest.is_symlink():
            dest.unlink()
        elif dest.exists():  # not ours to trust: say so rather than delete it
            raise AssertionError(f"{dest} exists and is not a link from build_once; remove it")
        folder = Path(tempfile.mkdtemp(prefix=f"{dest.name}.build-", dir=dest.parent))
        folder.chmod(0o755)  # mkdtemp makes it 0700: the mode of the root of an image built from it
        try:
            build(folder)
        except BaseException:
            remove_tree(folder)
            raise
        unmount_under(folder)  # what a finished build left mounted
        link = dest.with_name(f"{folder.name}.link")
        link.symlink_to(folder.name)
        os.replace(link, dest)
    return dest


# --- the images -----------------------------------------------------------------------------


def debootstrap(root: Path) -> None:
    """A minimal Debian bookworm with python3 into the empty folder `root`."""
    sh("debootstrap", "--variant=minbase", "--include=python3,ca-certificates", "bookworm",
       str(root), "http://deb.debian.org/debian")  # fmt: skip
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    assert (root / "usr/bin/python3.11").exists(), f"debootstrap made no python3.11 in {root}"


def base_image() -> str | None:
    """BASE imported from the debootstrap root, once; the reason when debootstrap cannot run
    here (no Debian mirror, say)."""
    with locked(CACHE / "base.lock"):  # one import, not one per run that found BASE missing
        if sh("podman", "image", "exists", BASE, check=False).returncode == 0:
            return None
        try:
            root = build_once(ROOTFS, debootstrap)
        except AssertionError as e:
            return f"cannot build the Debian base with debootstrap: {str(e)[-500:]}"
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        sh_in = subprocess.run(
            ["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, check=False
        )
        tar.wait()
        assert sh_in.returncode == 0, sh_in.stderr
    return None


def uv_image(ctx: Path) -> None:
    """uv's own image holds /uv; here it is built FROM scratch from this env's uv binary, in
    the empty folder `ctx`."""
    import uv

    shutil.copy2(uv.find_uv_bin(), ctx / "uv")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\n")
    sh("podman", "build", *ENGINE_ARGS, "--tag", UV, str(ctx))


def build(variant: str, tag: str, lock: Path = CPU_LOCK) -> None:
    """`torchship image build` of `lock` on the local base, as a user would run it (its
    context goes to TMPDIR)."""
    argv = [sys.executable, "-m", "torchship", "image", "build", str(lock)]
    argv += ["--engine", "podman", "--variant", variant, "--tag", tag]
    argv += ["--base-image", BASE, "--python", "/usr/bin/python3.11", "--uv-image", UV]
    argv += ["--find-links", str(LOCAL_TORCH_WHEELS), "--pytorch-index", "none"]
    argv += [f"--engine-arg={a}" for a in ["--network=host", *ENGINE_ARGS]]
    sh(*argv)
    # the image this tag named before is left untagged: removed, or every run keeps one (443
    # of them, 51 GB, filled this machine's disk on 2026-12-01 and the next build failed);
    # the build stages' cache carries no torchship label and stays
    sh("podman", "image", "prune", "--force", "--filter", "label=io.torchship.lock-hash",
       check=False)  # fmt: skip


def prepare(work: Path | None = None) -> str | None:
    """Engine, base and uv images ready; or the reason they cannot be here. `work`: the run's
    own folder for what it writes (None: the system's temporary folder)."""
    if not LOCAL_TORCH_WHEELS.is_dir():
        return f"needs the local torch 2.13.0 CPU wheel in {LOCAL_TORCH_WHEELS}"
    reason = install_tools() or base_image()
    if reason:
        return reason
    with tempfile.TemporaryDirectory(prefix="uv-image-", dir=work) as ctx:
        uv_image(Path(ctx))
    return None


def image_size(tag: str) -> int:
    return int(sh("podman", "image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
