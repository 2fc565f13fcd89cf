"""The local site's pure parts: the plan (exact command, env, folders) and the preflight."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.unit.test_doctor_checks import HEALTHY
from torchship.backends.base import Request, parse_handle
from torchship.backends.local import LocalBackend, LocalOptions
from torchship.backends.preflight import blocking, preflight
from torchship.backends.supervise import job_pids
from torchship.doctor.facts import Facts, GPUFact
from torchship.errors import UsageError
from torchship.lock import read_lock
from torchship.spec.job import JobSpec, job_from_table, load_job

OPTS = LocalOptions(python="/venv/bin/python", home=Path("/data/ts"), host="box")
QUICKSTART_LOCK = read_lock(REPO / "examples/quickstart/torchship.lock")


def job(**kw: object) -> JobSpec:
    table = {"workload": "reference", **kw}
    return job_from_table(table, "/proj/job.toml", "proj")


def test_reference_job_plan_is_exact() -> None:
    spec = load_job(REPO / "examples/quickstart/job.toml")
    r = LocalBackend(OPTS).plan(spec, None, "abc123")
    run = "/data/ts/runs/abc123"
    assert r.argv[:6] == (
        "/venv/bin/python",
        "-m",
        "torchship.backends.supervise",
        "--run-dir",
        run,
        "--job-id",
    )
    i = r.argv.index("--")
    assert r.argv[i + 1 :] == (
        "/venv/bin/python",
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        "--rdzv-id=abc123",
        "--max-restarts=1",
        "-m",
        "torchship.workload",
        "--steps",
        "60",
        "--checkpoint-every",
        "20",
        "--checkpoint-dir",
        f"{REPO}/examples/quickstart/checkpoints",  # relative: to the job file's folder
        "--summary",
        f"{run}/summary.json",
        "--metrics",
        f"{run}/metrics.jsonl",
    )
    assert f"--max-runtime-s={30 * 60}" in r.argv  # max_runtime_minutes = 30
    assert r.env["TORCHSHIP_JOB_ID"] == "abc123" and r.env["OMP_NUM_THREADS"] == "1"
    assert r.cwd == run and r.text.startswith(f"cd {run} && TORCHSHIP_JOB_ID=abc123 ")
    assert r.text.endswith(f"--metrics {run}/metrics.jsonl")
    # pure: the same inputs give the same plan
    assert LocalBackend(OPTS).plan(spec, None, "abc123") == r


def test_command_job_runs_through_torchrun_with_this_python() -> None:
    spec = job_from_table(
        {"command": ["python", "train.py", "--lr", "3e-4"], "env": {"A": "1"}, "retries": 2},
        "/proj/sub/job.toml",
        "proj",
    )
    r = LocalBackend(OPTS).plan(spec, None, "j1")
    assert r.argv[-5:] == ("--no-python", "/venv/bin/python", "train.py", "--lr", "3e-4")
    assert "--max-restarts=2" in r.argv and r.cwd == "/proj/sub" and r.env["A"] == "1"
    assert r.max_runtime_s is None and not any(a.startswith("--max-runtime") for a in r.argv)


def test_checkpoint_dir_relative_to_the_job_file_absolute_as_is_unset_per_run() -> None:
    """A relative checkpoint_dir was per run, so a re-run restarted at step 0."""
    rel = LocalBackend(OPTS).plan(job(checkpoint_dir="ck"), None, "j")
    assert rel.env["TORCHSHIP_CHECKPOINT_DIR"] == "/proj/ck"  # the job file is /proj/job.toml
    assert rel.argv[rel.argv.index("--checkpoint-dir") + 1] == "/proj/ck"
    ab = LocalBackend(OPTS).plan(job(checkpoint_dir="/scratch/ck"), None, "j")
    assert ab.env["TORCHSHIP_CHECKPOINT_DIR"] == "/scratch/ck"
    unset = LocalBackend(OPTS).plan(job(), None, "j")
    assert unset.env["TORCHSHIP_CHECKPOINT_DIR"] == "/data/ts/runs/j/checkpoints"


def test_job_env_wins_over_defaults() -> None:
    r = LocalBackend(OPTS).plan(job(env={"GLOO_SOCKET_IFNAME": "eth0"}, cpus=8), None, "j")
    assert r.env["GLOO_SOCKET_IFNAME"] == "eth0"
    assert r.env["OMP_NUM_THREADS"] == "8"  # 8 CPUs, one process


def test_multi_node_job_is_refused_with_a_way_out() -> None:
    with pytest.raises(UsageError) as e:
        LocalBackend(OPTS).plan(job(nodes=2), None, "j")
    assert "job.nodes = 2" in e.value.message and "Kubernetes" in e.value.hint
    assert LocalBackend(OPTS).capabilities().multi_node is False


@pytest.mark.parametrize(
    "handle", ["local://box", "docker://box/j", "local:///j", "local://box/a/b", "j"]
)
def test_bad_handles(handle: str) -> None:
    with pytest.raises(UsageError):
        parse_handle(handle, "local")


def test_handle_of_another_host_is_refused() -> None:
    with pytest.raises(UsageError) as e:
        LocalBackend(OPTS).status("local://elsewhere/j")
    assert "run this command on elsewhere" in e.value.hint


# --- preflight ------------------------------------------------------------------------------

CPU_BOX = Facts(
    origin="probe",
    python="3.11.7",
    torch="2.13.0+cpu",
    packages={p.name: p.version for p in QUICKSTART_LOCK.packages} | {"torch": "2.13.0+cpu"},
    shm_bytes=8 * 2**30,
)


def codes(spec: JobSpec, facts: Facts, lock: object = QUICKSTART_LOCK) -> dict[str, str]:
    found = preflight(spec, lock, facts, exists=lambda p: p.name != "missing")  # type: ignore[arg-type]
    return {f.code: f.severity for f in found}


def test_cpu_job_on_a_cpu_box_with_the_locked_versions_passes() -> None:
    # the CPU build of the locked torch stands in for the cu130 build; no GPU findings
    assert codes(job(), CPU_BOX) == {"lock-environment": "info"}
    cpu_env = QUICKSTART_LOCK.environment("cpu")
    assert cpu_env is not None
    exact = dataclasses.replace(CPU_BOX, packages={p.name: p.version for p in cpu_env.packages})
    found = preflight(job(), QUICKSTART_LOCK, exact)
    assert [(f.code, f.severity) for f in found] == [("lock-environment", "info")]
    assert "matches environment cpu of quickstart's lock" in found[0].message


def test_cpu_job_still_catches_drift_of_other_packages() -> None:
    drifted = dataclasses.replace(CPU_BOX, packages={**CPU_BOX.packages, "numpy": "1.26.4"})
    found = preflight(job(), QUICKSTART_LOCK, drifted)
    err = next(f for f in found if f.code == "lock-mismatch")
    assert "numpy 1.26.4" in err.message and "pip install numpy==" in err.fix
    other_torch = dataclasses.replace(CPU_BOX, torch="2.12.0+cpu")
    assert codes(job(), other_torch)["lock-mismatch"] == "error"


def test_gpu_job_on_a_cpu_box_is_refused() -> None:
    found = codes(job(gpus_per_node=1), CPU_BOX)
    assert found["not-enough-gpus"] == "error"
    # the interpreter is the lock's cpu environment: what is wrong is the machine, not the stack
    assert found["lock-environment"] == "info" and "lock-mismatch" not in found
    assert "no-gpu-visible" in found
    schema1 = dataclasses.replace(QUICKSTART_LOCK, environments=(), schema_version=1)
    assert codes(job(gpus_per_node=1), CPU_BOX, schema1)["lock-mismatch"] == "error"


def test_gpu_models_are_matched_by_model_not_by_string() -> None:
    h100 = dataclasses.replace(HEALTHY, gpus=(*HEALTHY.gpus, HEALTHY.gpus[0]))
    assert "gpu-model-not-accepted" not in codes(
        job(gpus_per_node=2, gpu_models=["h100-sxm"]), h100, None
    )
    l4 = dataclasses.replace(HEALTHY, gpus=(GPUFact(0, "NVIDIA L4", cc="8.9"),))
    found = preflight(job(gpus_per_node=1, gpu_models=["H100", "A100"]), None, l4)
    bad = next(f for f in found if f.code == "gpu-model-not-accepted")
    assert "NVIDIA L4" in bad.message and bad.severity == "error"


def test_missing_data_torch_and_lock() -> None:
    spec = job(data=[{"path": "missing"}, {"path": "there"}])
    assert codes(spec, CPU_BOX)["data-missing"] == "error"
    no_torch = dataclasses.replace(CPU_BOX, torch=None)
    assert codes(job(), no_torch)["torch-missing"] == "error"
    assert codes(job(), CPU_BOX, None) == {"no-lock": "warning"}
    assert not blocking(preflight(job(), None, CPU_BOX))


def test_apply_of_a_job_already_started_starts_nothing(tmp_path: Path) -> None:
    """A retry after a client died between starting a job and recording it: one job runs."""
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    request = Request(
        site="local",
        kind="local",
        job_id=job_id,
        text="sleep 30",
        argv=("sleep", "30"),
        env={"TORCHSHIP_JOB_ID": job_id},
        run_dir=str(tmp_path / job_id),
    )
    be = LocalBackend(dataclasses.replace(OPTS, home=tmp_path))
    try:
        handles = {be.apply(request), be.apply(request)}
        assert handles == {f"local://box/{job_id}"} and len(job_pids(job_id)) == 1
    finally:
        for pid in job_pids(job_id):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mask", [0o077, 0o022])
def test_run_folders_and_their_files_are_private_under_any_umask(tmp_path: Path, mask: int) -> None:
    """request.json (it holds [job.env]), the log and the supervisor's records were 0644
    whatever the umask, in folders the umask left open to all."""
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"  # made by the run
    run = home / "runs" / job_id
    argv = (sys.executable, "-m", "torchship.backends.supervise", "--run-dir", str(run))
    argv += ("--job-id", job_id, "--no-gpu-samples", "--", sys.executable, "-c", "pass")
    env = {"TORCHSHIP_JOB_ID": job_id, "API_TOKEN": "s3cret"}
    request = Request("local", "local", job_id, "API_TOKEN=s3cret …", argv, env, None, str(run))
    old = os.umask(mask)
    try:
        LocalBackend(dataclasses.replace(OPTS, home=home)).apply(request)
        deadline = time.time() + 60
        while not (run / "exit.json").exists():
            assert time.time() < deadline, (run / "log").read_text()
            time.sleep(0.05)
    finally:
        os.umask(old)
    assert "s3cret" in (run / "request.json").read_text()
    for folder in (home, home / "runs", run):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert modes == dict.fromkeys(("request.json", "log", "supervisor.json", "exit.json"), 0o600)
