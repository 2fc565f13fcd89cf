"""A real image, built and run: podman builds the CPU lock's runtime and jupyter variants FROM a
debootstrap Debian base (registries are unreachable here), with the local torch 2.13.0 wheel,
and runs them as the non-root user with no network.

Inside the runtime image `torchship doctor` checks the stack against the lock the image carries
(and catches a foreign lock), and the reference workload trains over 2 processes with gloo.
The jupyter image answers /api/status 403 without its token and 200 with it, and headless
Chromium opens JupyterLab through the token URL.

Needs root and Debian's apt (it installs podman, runc and debootstrap when they are missing),
about 5 minutes the first time; skipped, with the reason, where it cannot run. Runs at once
share podman's store and the debootstrap root (tests/podman_env.py builds it once, whole);
all else a run writes lands in its own temporary folder, and nothing stays mounted there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium
from tests.conftest import LOCAL_TORCH_WHEELS, REPO, run_cli
from tests.podman_env import CPU_LOCK, ENGINE_ARGS, install_tools, prepare, sh, unmount_under
from tests.podman_env import build as build_image
from torchship.image import image_tag
from torchship.lock import read_lock
from torchship.lock.wheels import wheels_in

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@dataclass(frozen=True)
class Images:
    runtime: str
    jupyter: str


@pytest.fixture(scope="module", autouse=True)
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This run's folder for what it writes, TMPDIR of `torchship image build` (its context)
    and of podman (buildah's cache mounts) included: not /var/tmp, which runs share. Anything
    still mounted under it at the end is unmounted, after a failure too."""
    folder = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(folder))
        try:
            yield folder
        finally:
            unmount_under(folder)


@pytest.fixture(scope="module")
def images(work: Path) -> Images:
    reason = prepare(work)
    if reason:
        pytest.skip(reason)
    lock = read_lock(CPU_LOCK / "torchship.lock")
    # the tags `torchship image build` gives, which the docker site and `jupyter` look for
    out = Images(f"localhost/{image_tag(lock)}", f"localhost/{image_tag(lock, 'jupyter')}")
    build_image("runtime", out.runtime)
    build_image("jupyter", out.jupyter)
    return out


def remove_job(job_id: str) -> None:
    """Remove the job's container (the docker site keeps it, for status) from the store that
    runs share."""
    label = f"label=io.torchship.job-id={job_id}"
    ids = sh("podman", "ps", "-aq", "--filter", label, check=False).stdout.split()
    if ids:
        sh("podman", "rm", "--force", *ids, check=False)


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


def synced_facts(lock_dir: Path, out: Path) -> Path:
    """`torchship facts` inside the environment `torchship sync` builds here from the lock in
    `lock_dir`, in this run's cache (tests/conftest.py)."""
    # A schema 1 lock names no file for torch, and `torchship sync` then asks the lock's PyTorch
    # index for it even when a find-links folder holds the locked wheel; that index cannot be
    # reached here. So the environment is built from a copy naming the local wheel as torch's
    # file: the same Python, platform, packages and hashes, so the same environment key, and
    # the lock itself (`env path`, `exec --local`) then finds it built.
    lock = read_lock(lock_dir / "torchship.lock")
    wheel = wheels_in([str(LOCAL_TORCH_WHEELS)], "torch", lock.torch)[0]
    pkgs = tuple(replace(p, file=wheel.name) if p.name == "torch" else p for p in lock.packages)
    copy = out.parent / "lock-with-torch-file"
    copy.mkdir()
    shutil.copy(lock_dir / "torchship.toml", copy)
    (copy / "torchship.lock").write_text(replace(lock, packages=pkgs).to_toml())
    r = run_cli("sync", str(copy), "--find-links", str(LOCAL_TORCH_WHEELS), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    synced = json.loads(r.stdout)
    assert synced["env"] == "cpu" and synced["key"] == lock.primary.key
    where = run_cli("env", "path", str(lock_dir))
    assert where.returncode == 0 and where.stdout.strip() == synced["path"], where.stderr
    r = run_cli("exec", "--local", str(lock_dir), "--", "python", "-m", "torchship", "facts",
                "-o", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_the_synced_environment_and_the_image_hold_the_same_packages(
    images: Images, tmp_path: Path
) -> None:
    """One lock, the same environment everywhere: `torchship diff` of the facts taken inside
    the CPU environment synced here and inside the runtime image built from the same lock
    names no package, torch's build included; what differs is the machine's (Python's patch
    release, the host name, the container, …)."""
    lock = read_lock(CPU_LOCK / "torchship.lock")
    a = synced_facts(CPU_LOCK, tmp_path / "env.json")
    b = tmp_path / "image.json"
    b.write_text(run(images.runtime, "torchship", "facts"))
    env, image = json.loads(a.read_text()), json.loads(b.read_text())
    locked = {p.name: p.version for p in lock.packages}
    # both hold exactly the lock's packages: no pip, no torchship (its agent has no dist-info)
    assert env["packages"] == locked and image["packages"] == locked
    assert env["torch"] == image["torch"] == "2.13.0+cpu"

    def differences(x: Path, y: Path) -> list[dict[str, Any]]:
        r = run_cli("diff", str(x), str(y), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert (out["a"], out["b"]) == (str(x), str(y))
        return list(out["differences"])

    diffs = differences(a, b)
    print(json.dumps(diffs, indent=2))  # the record: what differs between env and image
    assert [d for d in diffs if d["packages"]] == []
    fields = {d["field"] for d in diffs}
    assert not fields & {"packages", "numpy", "torch", "torch_cuda"}, diffs
    assert "hostname" in fields  # the diff did compare two machines

    # it would see a package that differed: one version changed, numpy missing
    pkgs = {k: v for k, v in image["packages"].items() if k != "numpy"}
    doctored = dict(image, packages={**pkgs, "anyio": "0.0.1"})
    c = tmp_path / "doctored.json"
    c.write_text(json.dumps(doctored))
    changed = {p: d for d in differences(a, c) for p in d["packages"]}
    assert sorted(changed) == ["anyio", "numpy"]
    assert changed["anyio"]["a"]["anyio"] == locked["anyio"]
    assert changed["anyio"]["b"] == {"anyio": "0.0.1", "numpy": None}


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


def test_jupyter_needs_its_token(jupyter: tuple[str, str]) -> None:
    base, token = jupyter
    assert _status(f"{base}/api/status") == 403
    assert _status(f"{base}/api/status", token) == 200
    assert _status(f"{base}/api/contents", "wrong-token") == 403


def test_jupyterlab_renders_in_headlesschromium(jupyter: tuple[str, str], tmp_path: Path) -> None:
    reason = install_tools(("chromium",))
    if reason:
        pytest.skip(reason)
    base, token = jupyter
    lab = chromium(tmp_path, "--dump-dom", f"{base}/lab?token={token}")
    card = re.compile(r'class="[^"]*jp-LauncherCard')  # an element, not a CSS rule
    assert card.search(lab), lab[-2000:]  # JupyterLab rendered, its launcher open
    login = chromium(tmp_path, "--dump-dom", f"{base}/lab?token=nope")
    assert not card.search(login) and 'name="password"' in login  # the login page instead
    shot = tmp_path / "jupyterlab.png"
    chromium(tmp_path, f"--screenshot={shot}", f"{base}/lab?token={token}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TORCHSHIP_KEEP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TORCHSHIP_KEEP_SCREENSHOT"])


# --- the docker site and the launch commands, through the CLI, on podman --------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CPU lock with a job file, and the docker site pointed at podman with this sandbox's
    flags, no network for jobs, and a data dir of its own."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(CPU_LOCK / "torchship.lock", proj / "torchship.lock")
    (proj / "job.toml").write_text(
        '[job]\nname = "docker-e2e"\nworkload = "reference"\nprocesses_per_node = 2\n'
        "cpus = 2\nmemory_gib = 4\nmax_runtime_minutes = 10\n\n[job.workload_args]\n"
        "steps = STEPS\nd_model = 64\nlayers = 2\nheads = 2\ncheckpoint_every = 10\n"
    )
    monkeypatch.setenv("TORCHSHIP_ENGINE", "podman")
    monkeypatch.setenv("TORCHSHIP_ENGINE_ARGS", " ".join(ENGINE_ARGS))
    monkeypatch.setenv("TORCHSHIP_DOCKER_NETWORK", "none")
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path / "home"))
    return proj


def _steps(proj: Path, n: int) -> Path:
    job = proj / "job.toml"
    job.write_text(job.read_text().replace("STEPS", str(n)))
    return job


def test_run_on_the_docker_site(images: Images, project: Path) -> None:
    job = _steps(project, 20)
    r = run_cli("run", str(job), "--site", "docker")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "succeeded on docker://" in r.stdout and "parameters identical on all ranks" in r.stdout
    job_id = r.stdout.split("job ", 1)[1].split()[0]
    try:
        labels = sh("podman", "ps", "-a", "--filter", f"label=io.torchship.job-id={job_id}",
                    "--format", "{{.Labels}}").stdout  # fmt: skip
        assert "io.torchship.lock-hash" in labels  # found again by its labels
        status = run_cli("status", job_id)
        assert status.returncode == 0 and "succeeded" in status.stdout
    finally:
        remove_job(job_id)


def test_cancel_stops_the_container(images: Images, project: Path) -> None:
    job = _steps(project, 100000)
    r = run_cli("run", str(job), "--site", "docker", "--detach")
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = r.stdout.split("job ", 1)[1].split()[0]
    try:
        deadline = time.monotonic() + 60
        while "step 10/" not in run_cli("logs", job_id).stdout:
            assert time.monotonic() < deadline, run_cli("logs", job_id).stdout
            time.sleep(1)
        assert run_cli("cancel", job_id).returncode == 0
        deadline = time.monotonic() + 60
        while "cancelled" not in (out := run_cli("status", job_id).stdout):
            assert time.monotonic() < deadline, out
            time.sleep(1)
    finally:
        remove_job(job_id)  # a failed test leaves no 100000-step job running


def test_exec_and_jupyter_commands(images: Images, project: Path) -> None:
    r = run_cli(
        "exec", str(project), "--", "python", "-c", "import torch; print(torch.__version__)"
    )
    assert r.returncode == 0 and r.stdout.strip() == "2.13.0+cpu", r.stdout + r.stderr
    port = _free_port()
    r = run_cli("jupyter", str(project), "--port", str(port))
    assert r.returncode == 0, r.stdout + r.stderr
    url = r.stdout.split()[2]
    name = r.stdout.split("(", 1)[1].split(")", 1)[0]
    try:
        token = url.split("token=", 1)[1]
        assert url.startswith(f"http://127.0.0.1:{port}/lab?token=") and len(token) >= 24
        assert _status(f"http://127.0.0.1:{port}/api/status") == 403
        assert _status(f"http://127.0.0.1:{port}/api/status", token) == 200
    finally:
        sh("podman", "stop", name, check=False)
