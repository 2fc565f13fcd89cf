"""The Slurm site on a real Slurm cluster (tests/slurm_env.py): slurmctld and slurmd from
Debian's slurm-wlm, started here in network namespaces, stopped by PID.

torchship runs on the cluster's login node (inside the first node's namespace), with the
site's `python` the interpreter of this test run (torch 2.13 CPU): the quickstart job to
`succeeded` (2 processes, gloo), a cancelled job, a requeued job that resumes from its
checkpoint, placement reading a real pending queue, and a two-node torchrun across two
slurmd in two namespaces joined by a veth pair.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.slurm_env import INTERFACE, SlurmCluster, slurm_cluster, unavailable

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

SITES = """
[[site]]
name = "hpc"
kind = "slurm"
tier = 1
trust = "private"
data_classes = ["public", "internal"]
max_nodes = 2
partition = "debug"
python = "{python}"
runs_dir = "{runs}"
interface = "{interface}"
wait_budget_minutes = 5
time_limit_minutes = 30

[[site]]
name = "burst"
kind = "local"
tier = 2
trust = "private"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    why = unavailable()
    if why:
        pytest.skip(f"no Slurm here: {why}")
    with slurm_cluster(tmp_path_factory.mktemp("slurm") / "cluster", nodes=1) as c:
        yield c


def setup(root: Path) -> dict[str, str]:
    """A TORCHSHIP_HOME and sites file in `root`; the quickstart project copied there."""
    (root / "runs").mkdir(parents=True, exist_ok=True)
    sites = root / "sites.toml"
    sites.write_text(SITES.format(python=sys.executable, runs=root / "runs", interface=INTERFACE))
    shutil.copytree(REPO / "examples/quickstart", root / "quickstart", dirs_exist_ok=True)
    return {"TORCHSHIP_HOME": str(root / "home"), "TORCHSHIP_SITES": str(sites)}


def ts(c: SlurmCluster, env: dict[str, str], *args: str, check: bool = True) -> Any:
    return c.run(sys.executable, "-m", "torchship", *args, env=env, timeout=120, check=check)


def submit(c: SlurmCluster, env: dict[str, str], job: Path, site: str = "hpc") -> str:
    out = ts(c, env, "run", str(job), "--site", site, "--detach", "--json")
    return str(json.loads(out.stdout)["job"]["id"])


def status(c: SlurmCluster, env: dict[str, str], job_id: str) -> dict[str, Any]:
    data = json.loads(ts(c, env, "status", job_id, "--json").stdout)
    return dict(data[0] if isinstance(data, list) else data)


def wait_for(
    c: SlurmCluster, env: dict[str, str], job_id: str, states: set[str], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = status(c, env, job_id)
        if job["state"] in states:
            return job
        time.sleep(0.5)
    log = ts(c, env, "logs", job_id, check=False).stdout[-3000:]
    raise AssertionError(f"{job_id} not {states} in {timeout} s: {job}\n{log}\n{c.logs()}")


def slurm_id(job: dict[str, Any]) -> str:
    return str(job["handle"]).split("?id=", 1)[1].split("&", 1)[0]


def test_the_quickstart_job_runs_to_succeeded(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = setup(tmp_path)
    job_id = submit(cluster, env, tmp_path / "quickstart/job.toml")
    job = wait_for(cluster, env, job_id, {"succeeded", "failed", "lost"})
    log = ts(cluster, env, "logs", job_id).stdout
    assert job["state"] == "succeeded", log
    assert job["site"] == "hpc" and job["handle"].startswith("slurm://localhost/")
    summary = json.loads((tmp_path / "runs" / job_id / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 60, summary
    assert f"[torchship] job {slurm_id(job)}" in log
    # Slurm's own view agrees, and the script it ran is the plan's
    seen = cluster.run("scontrol", "show", "job", slurm_id(job)).stdout
    assert "JobState=COMPLETED" in seen and "ExitCode=0:0" in seen


def test_a_running_job_is_cancelled(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = setup(tmp_path)
    job = tmp_path / "quickstart/job.toml"
    job.write_text(job.read_text().replace("steps = 60", "steps = 100000"))
    job_id = submit(cluster, env, job)
    running = wait_for(cluster, env, job_id, {"running"})
    ts(cluster, env, "cancel", job_id)
    done = wait_for(cluster, env, job_id, {"cancelled", "failed", "succeeded"}, timeout=60)
    assert done["state"] == "cancelled", done
    gone = cluster.run("squeue", "-h", "-j", slurm_id(running), check=False).stdout
    assert gone.strip() == ""  # nothing of it left in the queue


def test_a_requeued_job_resumes_from_its_checkpoint(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = setup(tmp_path)
    job = tmp_path / "quickstart/job.toml"
    job.write_text(
        job.read_text().replace("steps = 60", "steps = 160").replace("every = 20", "every = 10")
    )
    job_id = submit(cluster, env, job)
    running = wait_for(cluster, env, job_id, {"running"})
    checkpoints = tmp_path / "runs" / job_id / "checkpoints"
    # a finished checkpoint, renamed into place: not "*", which also matches the temp file
    # (.step-00000010.pt.<random>.tmp) of one being written, and a requeue then kills the
    # writer before its rename, leaving nothing to resume from (the flake of 2026-11-30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(checkpoints.glob("step-*.pt")):
        time.sleep(0.3)
    assert any(checkpoints.glob("step-*.pt")), "no checkpoint before the requeue"
    cluster.run("scontrol", "requeue", slurm_id(running))  # as preemption with requeue does
    done = wait_for(cluster, env, job_id, {"succeeded", "failed", "cancelled", "lost"}, 300)
    log = ts(cluster, env, "logs", job_id).stdout
    assert done["state"] == "succeeded", log
    # Failed once (2026-11-30): the log had one header, "(restart 0)", and a run from step 0
    # that began 2 min after the first (Slurm's delay for a requeued job). Say everything then.
    seen = cluster.run("scontrol", "show", "job", slurm_id(running), check=False).stdout
    kept = sorted(p.name for p in checkpoints.glob("*"))
    assert "(restart 1)" in log and "resumed from" in log, f"{log}\n{seen}\ncheckpoints: {kept}"


def test_placement_reads_the_real_pending_queue(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = setup(tmp_path)
    plan = ["plan", str(tmp_path / "quickstart/job.toml"), "--json"]
    assert json.loads(ts(cluster, env, *plan).stdout)["placement"]["site"] == "hpc"
    # both CPUs taken for 20 minutes, and a second job waiting behind it
    block = ["sbatch", "--parsable", "-p", "debug", "-c", "2", "-t", "20", "-o", "/dev/null",
             "--wrap", "sleep 600"]  # fmt: skip
    ids = [cluster.run(*block).stdout.strip() for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        start = ""
        while time.monotonic() < deadline:  # until backfill has estimated the start
            start = cluster.run("squeue", "-h", "-t", "PENDING", "--start", "-o", "%S").stdout
            if start.strip() and "N/A" not in start:
                break
            time.sleep(0.5)
        placement = json.loads(ts(cluster, env, *plan).stdout)["placement"]
        assert placement["site"] == "burst", placement  # hpc's wait is past its 5 min budget
        hpc = next(r for r in placement["rejected"] if r["site"] == "hpc")
        assert "min" in hpc["reason"], hpc
    finally:
        cluster.run("scancel", *ids, check=False)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    why = unavailable()
    if why:
        pytest.skip(f"no Slurm here: {why}")
    with slurm_cluster(tmp_path_factory.mktemp("slurm2") / "cluster", nodes=2) as c:
        yield c


def test_a_two_node_torchrun_over_slurm(two_nodes: SlurmCluster, tmp_path: Path) -> None:
    env = setup(tmp_path)
    job = tmp_path / "quickstart/job.toml"
    job.write_text(
        job.read_text()
        .replace("nodes = 1", "nodes = 2")
        .replace("processes_per_node = 2", "processes_per_node = 1")
    )
    job_id = submit(two_nodes, env, job)
    done = wait_for(two_nodes, env, job_id, {"succeeded", "failed", "lost"})
    log = ts(two_nodes, env, "logs", job_id).stdout
    assert done["state"] == "succeeded", log[-3000:]
    summary = json.loads((tmp_path / "runs" / job_id / "summary.json").read_text())
    assert summary["world_size"] == 2, summary
    assert "on n[1-2]" in log, log[:2000]


def test_statuses_asks_slurm_once_for_all_jobs(cluster: SlurmCluster, tmp_path: Path) -> None:
    """The batch of `torchship status` (issue 20): squeue for all the jobs at once (one it no
    longer knows among them), exit records read together; each job as `status` says alone."""
    from torchship.backends.base import SiteStatus
    from torchship.backends.slurm import SlurmBackend, SlurmSiteOptions, make_handle

    runs = tmp_path / "runs"
    wraps = {"ok": "true", "fail": "exit 3", "long": "sleep 600"}
    ids = {}
    for name, wrap in wraps.items():
        (runs / name).mkdir(parents=True)
        ids[name] = cluster.run("sbatch", "--parsable", "-p", "debug", "-c", "1", "-t", "5",
                                "-o", "/dev/null", "--wrap", wrap).stdout.strip()  # fmt: skip
    try:
        (runs / "ok/exit.json").write_text('{"state": "succeeded", "exit_code": 0, "ended_at": 1}')
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline:  # the short ones ended, the long one runs
            seen = cluster.run("squeue", "-h", "-t", "all", "-j", ",".join(ids.values()),
                               "-o", "%T").stdout  # fmt: skip
            if sorted(seen.split()) == ["COMPLETED", "FAILED", "RUNNING"]:
                break
            time.sleep(0.3)
        assert sorted(seen.split()) == ["COMPLETED", "FAILED", "RUNNING"], seen
        calls: list[list[str]] = []

        def runner(argv: list[str], **kw: Any) -> Any:
            calls.append(argv)
            return subprocess.run([*cluster.prefix, *argv], **kw)  # noqa: PLW1510

        be = SlurmBackend(None, runner=runner)
        o = SlurmSiteOptions(runs_dir=str(runs))
        handles = [make_handle(o, name, sid) for name, sid in ids.items()]
        handles.append(make_handle(o, "gone", "999999"))  # no such job: squeue leaves it out
        batch = be.statuses(handles)
        assert [c[0] for c in calls] == ["squeue", "sh", "sacct"], calls
        alone = {h: be.status(h) for h in handles}
        assert batch == alone
        assert [s.state for s in batch.values() if isinstance(s, SiteStatus)] == [
            "succeeded", "failed", "running", "lost"]  # fmt: skip
        # one id squeue no longer knows: an error of squeue's, read as not known
        assert be.statuses(handles[-1:]) == {handles[-1]: alone[handles[-1]]}
    finally:
        cluster.run("scancel", *ids.values(), check=False)
