"""The SkyPilot site against the real SkyPilot (its CLI, its local API server, its task schema),
installed from PyPI into a venv of its own (VENV, shared by runs: built once and published
whole by tests/podman_env.py's build_once); skipped with the reason where pip cannot. No cloud
is reachable or credentialed here — the API server runs with HOME in a temporary folder — so
these prove our side of the contract: every task we render loads with SkyPilot's own
`Task.from_yaml`; `sky launch` failing before any VM exists is recorded as failed with
SkyPilot's own error; status and cancel read the real CLI's output.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.test_skypilot_site import LOCK, SAY_RANK, SITE, job, run_id
from tests.podman_env import build_once
from torchship.backends.skypilot import SkyPilotBackend, sky_task
from torchship.sites import load_sites
from torchship.spec.job import load_job

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
VENV = Path("/var/tmp/torchship-skypilot-venv")  # a link to the venv build_once published


def install_skypilot(venv: Path) -> None:
    """SkyPilot from PyPI into a new venv at `venv`; skips with pip's reason where it cannot."""
    for argv in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin/pip"), "install", "-q", "skypilot"],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot install skypilot: {proc.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def venv() -> Path:
    return build_once(VENV, install_skypilot)


@pytest.fixture(scope="module")
def sky_env(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """HOME for SkyPilot with no cloud credentials, and its own local API server on a port of
    this run's: on SkyPilot's default (46580) runs at once would share one server, and one's
    `sky api stop` would stop the other's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HOME": str(tmp_path_factory.mktemp("sky-user")),
           "SKYPILOT_API_SERVER_LOCAL_PORT": str(port)}  # fmt: skip
    yield env
    stop = [str(venv / "bin/sky"), "api", "stop"]
    subprocess.run(stop, env={**os.environ, **env}, capture_output=True, timeout=120, check=False)


def test_every_rendered_task_loads_with_skypilots_own_schema(venv: Path, tmp_path: Path) -> None:
    sites = {s.name: s for s in load_sites(REPO / "examples/hybrid/sites.toml")}
    tasks = sorted((REPO / "examples/hybrid/sky").glob("*.sky.yaml"))
    data = [{"path": "s3://corpus/v1", "mount": "/data/corpus", "class": "public"}]
    bucket = job(SAY_RANK, nodes=2, max_runtime_minutes=90, data=data)
    extra = tmp_path / "bucket.sky.yaml"
    extra.write_text(yaml.safe_dump(sky_task(bucket, LOCK, "0a1b", sites["gcp-a2"])))
    one = load_job(REPO / "examples/hybrid/job-1node.toml")
    mine = tmp_path / "one.sky.yaml"
    mine.write_text(yaml.safe_dump(sky_task(one, LOCK, "0a1c", sites["gcp-a2"])))
    check = (
        "import sys, sky\n"
        "for f in sys.argv[1:]:\n"
        "    t = sky.Task.from_yaml(f)\n"
        "    r = next(iter(t.resources))\n"
        "    print(f, t.num_nodes, r.accelerators, sorted(t.file_mounts or {}) or "
        "sorted(t.storage_mounts or {}))\n"
    )
    files = [*map(str, tasks), str(extra), str(mine)]
    out = subprocess.run([str(venv / "bin/python"), "-c", check, *files], capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(x.split(" ", 1) for x in out.stdout.splitlines())
    assert lines[str(REPO / "examples/hybrid/sky/pretrain-2node.sky.yaml")].startswith("2 ")
    assert "/data/corpus" in lines[str(extra)]


def real_backend(venv: Path, sky_env: dict[str, str], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> SkyPilotBackend:  # fmt: skip
    for name, value in sky_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return SkyPilotBackend(SITE, tmp_path / "ts-home", str(venv / "bin/sky"))


def test_a_launch_that_fails_before_any_vm_is_failed_with_skypilots_error(
    venv: Path, sky_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    be = real_backend(venv, sky_env, tmp_path, monkeypatch)
    handle = be.apply(be.plan(job(SAY_RANK), LOCK, run_id("0real1")))
    deadline = time.time() + 240
    while be.status(handle).state in ("pending", "running") and time.time() < deadline:
        time.sleep(1)
    st = be.status(handle)
    assert st.state == "failed", st
    assert st.reason.startswith("sky launch failed (exit 1): "), st.reason
    assert len(st.reason) > len("sky launch failed (exit 1): ") + 10  # SkyPilot's own words
    be.cancel(handle)  # ended: nothing to cancel
    assert be.status(handle).state == "failed"


def test_status_and_cancel_read_the_real_cli_for_a_cluster_that_is_not_there(
    venv: Path, sky_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    be = real_backend(venv, sky_env, tmp_path, monkeypatch)
    handle = "sky://ts-0gone/0gone"
    assert be.queue("ts-0gone") is None  # `sky queue -o json`: progress lines, then {}
    assert be.status(handle).state == "lost"
    be.cancel(handle)  # `sky cancel` exits 2 (no cluster), `sky down` says not found: done
    st = be.status(handle)
    assert (st.state, st.reason) == ("cancelled", "cancelled; cluster down")
