"""The SkyPilot site end to end against tests/fake_sky.py, a stand-in `sky` on PATH (SkyPilot
and a cloud are absent here): apply starts `sky launch` under the supervisor, the task's run
script really runs (one and two "nodes", a real torchrun rendezvous), status, logs, cancel, a
lost client, a failed provisioning, and `torchship run --site auto` choosing the site.
tests/integration/test_skypilot_real.py checks the same code against the real SkyPilot CLI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from torchship.backends.skypilot import SkyPilotBackend, cluster_name
from torchship.errors import UsageError
from torchship.lock import read_lock
from torchship.sites import sites_from_toml
from torchship.spec.job import JobSpec, job_from_table

LOCK = read_lock(REPO / "examples/hybrid/torchship.lock")
SITES = """
[[site]]
name = "cloud-cpu"
kind = "skypilot"
tier = 2
trust = "public"
data_classes = ["public"]
region = "us-east-1"
max_nodes = 2
price_per_gpu_hour = 1.0
price_as_of = "2026-11-01"
price_source = "test"
registry = "registry.example/ml/"
"""
SITE = sites_from_toml(SITES, "sites.toml")[0]
RUN = os.urandom(3).hex()  # this run's suffix to job ids: see run_id()
# What each process of the job prints: its rank among all processes of all nodes. One write()
# of the whole line: the task sets PYTHONUNBUFFERED=1, under which print('rank', r, ...) writes
# each piece apart, and four processes appending at once interleave them ("rank rank 1 2 of").
SAY_RANK = ["python", "-c", "import os; os.write(1, f\"rank {os.environ['RANK']} of "
            "{os.environ['WORLD_SIZE']}\\n\".encode())"]  # fmt: skip


@pytest.fixture
def sky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `sky` on PATH that is tests/fake_sky.py; `python` on PATH is this interpreter.

    Both are scripts that exec it by its own path: a symlink to a virtualenv's bin/python from
    another folder no longer finds the venv's pyvenv.cfg beside it, so it would start the base
    interpreter without the venv's packages (torch, torchship)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = shlex.quote(sys.executable)
    fake_sky = shlex.quote(str(REPO / "tests/fake_sky.py"))
    for name, argv in (("sky", f"{python} {fake_sky}"), ("python", python)):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SKY_HOME", str(tmp_path / "sky-home"))
    monkeypatch.setenv("TORCHSHIP_HOME", str(tmp_path / "ts-home"))
    return bin_dir / "sky"


def run_id(name: str) -> str:
    """A job id of this test run: a supervisor sweeps every process whose environment carries
    TORCHSHIP_JOB_ID=<id> when its job ends, so runs of these tests at once must not share ids
    (one would kill the other's job)."""
    return f"{name}-{RUN}"


def job(command: list[str], **kw: object) -> JobSpec:
    table = {"name": "hello", "command": command, "gpus_per_node": 0, **kw}
    return job_from_table(table, str(REPO / "examples/hybrid/job.toml"), "hybrid")


def backend(tmp_path: Path, sky: Path | None) -> SkyPilotBackend:
    return SkyPilotBackend(SITE, tmp_path / "ts-home", str(sky) if sky else None)


def wait_end(be: SkyPilotBackend, handle: str, timeout_s: float = 120) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        st = be.status(handle)
        if st.state not in ("pending", "running"):
            return st.state
        time.sleep(0.3)
    raise AssertionError(f"{handle} still {be.status(handle)} after {timeout_s} s")


def cluster_exists(tmp_path: Path, job_id: str) -> bool:
    return (tmp_path / "sky-home/clusters" / f"{cluster_name(job_id)}.json").exists()


def test_two_nodes_rendezvous_through_the_task_and_the_cluster_goes_down(
    tmp_path: Path, sky: Path
) -> None:
    be, job_id = backend(tmp_path, sky), run_id("0a1b2c")
    request = be.plan(job(SAY_RANK, nodes=2, processes_per_node=2), LOCK, job_id)
    handle = be.apply(request)
    assert handle == f"sky://ts-{job_id}/{job_id}"
    assert wait_end(be, handle) == "succeeded"
    log = "".join(be.logs(handle))
    # four processes over two nodes found each other through SkyPilot's variables
    # four processes print at once: on a loaded machine their lines can share a line of the log
    assert sorted(re.findall(r"rank \d+ of \d+", log)) == [f"rank {r} of 4" for r in range(4)]
    request_json = tmp_path / "ts-home/runs" / job_id / "request.json"
    assert "--down" in json.loads(request_json.read_text())["argv"]
    deadline = time.time() + 10  # --down: the cluster is released once the job ends
    while cluster_exists(tmp_path, job_id) and time.time() < deadline:
        time.sleep(0.1)
    assert not cluster_exists(tmp_path, job_id)
    assert be.status(handle).state == "succeeded"  # the record outlives the cluster


def test_a_failing_job_is_failed_with_the_reason(tmp_path: Path, sky: Path) -> None:
    be = backend(tmp_path, sky)
    handle = be.apply(be.plan(job(["python", "-c", "raise SystemExit(3)"]), LOCK, run_id("f41l")))
    assert wait_end(be, handle) == "failed"
    st = be.status(handle)
    assert st.exit_code == 1 and st.reason.startswith("the job failed on the cluster (")


def test_provisioning_failure_names_sky_launchs_error(
    tmp_path: Path, sky: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SKY_FAIL", "provision")
    be = backend(tmp_path, sky)
    handle = be.apply(be.plan(job(SAY_RANK), LOCK, run_id("n0cap")))
    assert wait_end(be, handle) == "failed"
    st = be.status(handle)
    assert st.reason.startswith("sky launch failed (exit 1): ")
    assert "ResourcesUnavailableError" in st.reason


def test_cancel_stops_the_job_on_the_cluster_and_releases_it(tmp_path: Path, sky: Path) -> None:
    be = backend(tmp_path, sky)
    sleeper = ["python", "-c", "import time; print('up', flush=True); time.sleep(600)"]
    job_id = run_id("c4nc3l")
    handle = be.apply(be.plan(job(sleeper), LOCK, job_id))
    deadline = time.time() + 60
    while be.status(handle).state != "running" and time.time() < deadline:
        time.sleep(0.2)
    assert be.status(handle).state == "running"
    be.cancel(handle)
    assert wait_end(be, handle, 30) == "cancelled"
    assert not cluster_exists(tmp_path, job_id)
    be.cancel(handle)  # again: nothing to do, no error


def test_a_lost_client_is_read_from_the_cluster_then_lost_after_teardown(
    tmp_path: Path, sky: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine lost `sky launch` (killed, rebooted): the job runs on; status asks the
    cluster, and once --down removed it, says so instead of guessing."""
    monkeypatch.setenv("FAKE_SKY_DOWN_AFTER_S", "3")
    be = backend(tmp_path, sky)
    slow = ["python", "-c", "import time; time.sleep(4)"]
    job_id = run_id("l0st")
    handle = be.apply(be.plan(job(slow), LOCK, job_id))
    run = tmp_path / "ts-home/runs" / job_id
    deadline = time.time() + 60
    while be.status(handle).state != "running" and time.time() < deadline:
        time.sleep(0.2)
    sup = json.loads((run / "supervisor.json").read_text())
    os.killpg(int(sup["pid"]), signal.SIGKILL)  # the supervisor and the sky client, not the job
    for c in be._children:
        c.wait()
    assert be.status(handle).state == "running"  # from `sky queue` on the cluster
    st = wait_end(be, handle, 60)
    assert st == "succeeded"  # seen before --down removed the cluster
    while cluster_exists(tmp_path, job_id):
        time.sleep(0.2)
    st2 = be.status(handle)
    assert st2.state == "lost" and f"cluster ts-{job_id} is gone" in st2.reason


def test_without_sky_apply_says_how_to_install_it(tmp_path: Path) -> None:
    be = backend(tmp_path, None)
    request = be.plan(job(SAY_RANK), LOCK, run_id("n0sky"))  # planning needs no SkyPilot
    with pytest.raises(UsageError, match="SkyPilot is not installed") as e:
        be.apply(request)
    assert "pip install 'skypilot[aws]'" in e.value.hint


def test_run_site_auto_launches_on_the_skypilot_site(tmp_path: Path, sky: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(REPO / "examples/hybrid/torchship.lock", proj / "torchship.lock")
    (proj / "sites.toml").write_text(SITES)
    (proj / "job.toml").write_text(
        '[job]\nname = "hello"\ngpus_per_node = 0\nprocesses_per_node = 2\n'
        f"command = {json.dumps(SAY_RANK)}\n"
    )
    cli = [sys.executable, "-m", "torchship"]
    out = subprocess.run([*cli, "run", str(proj / "job.toml"), "--site", "auto", "--sites",
                          str(proj / "sites.toml")], capture_output=True, text=True, timeout=180,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "rank 1 of 2" in out.stdout
    status = subprocess.run([*cli, "status", "--json"], capture_output=True, text=True,
                            check=True)  # fmt: skip
    jobs = json.loads(status.stdout)
    assert [(j["site"], j["state"]) for j in jobs] == [("cloud-cpu", "succeeded")]  # its name
    assert jobs[0]["handle"].startswith("sky://ts-")


HOSTILE = ["${HOME}", "$(touch pwned1)", "`touch pwned2`", "a b", "x\ny", "'q\"", "; touch pwned3"]


def test_hostile_arguments_reach_the_program_verbatim(tmp_path: Path, sky: Path) -> None:
    """The task's `run` script, executed by bash on the (fake) cluster: an argument holding
    `${`, `$(…)`, backquotes, quotes, spaces or newlines is one literal word, never code
    (an argument with `${` was left unquoted and ran `touch`)."""
    out = tmp_path / "argv.json"
    record = ["python", "-c", "import json, sys; open(sys.argv[1], 'w').write("
              "json.dumps(sys.argv[2:]))", str(out), *HOSTILE]  # fmt: skip
    be, job_id = backend(tmp_path, sky), run_id("h0st1le")
    handle = be.apply(be.plan(job(record), LOCK, job_id))
    assert wait_end(be, handle) == "succeeded", "".join(be.logs(handle))
    assert json.loads(out.read_text()) == HOSTILE
    assert not list(Path.cwd().glob("pwned*")) and not list(tmp_path.rglob("pwned*"))
