"""The exporter over real HTTP on 127.0.0.1, its exposition parsed by prometheus_client's own
parser: DCGM names, types and labels with the GPU's job id; job metrics from a real SQLite
store; without NVML, job metrics only and one clear line; the CLI as a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.prom import samples, scrape
from torchship.monitor.exporter import DCGM, Collector, job_of_pids, serve
from torchship.monitor.gpus import FakeGpus, open_reader
from torchship.state import JobStore


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A /proc with two processes: 4242 of job j-abc, 4343 of nobody's."""
    root = tmp_path / "proc"
    for pid, env in ((4242, b"PATH=/bin\0TORCHSHIP_JOB_ID=j-abc\0"), (4343, b"HOME=/\0")):
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "environ").write_bytes(env)
    return root


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.db"
    with JobStore(path) as s:
        placed = {"site": "gcp-a2", "decision": "run", "usd_per_hour": 3600.0}
        j1, _ = s.submit("k1", "a", {}, site="skypilot", placement=placed)
        s.transition(j1.id, "running")
        j2, _ = s.submit("k2", "b", {}, site="local", placement={"site": "local"})
        s.transition(j2.id, "succeeded", exit_code=0)
    return path


def test_gpu_and_job_metrics_over_http(proc: Path, store_path: Path) -> None:
    gpus = FakeGpus(2, clock=lambda: 60.0)
    gpus.pids = {0: (9999, 4343, 4242)}  # 9999 is gone: skipped
    gpus.xids = {1: 79}
    clock = iter([time.time() + 1.0] * 10)
    collector = Collector(gpus, lambda: JobStore(store_path), "node-a", proc, lambda: next(clock))
    server = serve(0, "127.0.0.1", collector=collector)
    try:
        text = scrape(server.server_port)
    finally:
        server.shutdown()
    got = samples(text)
    for name, _, typ, _ in DCGM:
        # dcgm-exporter's names, never renamed ("unknown" is written as text format's untyped)
        assert f"# TYPE {name} {typ.replace('unknown', 'untyped')}\n" in text
        assert len(got[name]) == 2
    util = {lbl["gpu"]: (lbl, v) for lbl, v in got["DCGM_FI_DEV_GPU_UTIL"]}
    assert util["0"][0] == {"gpu": "0", "UUID": "GPU-00000000-0000-0000-0000-000000000000",
                            "device": "nvidia0", "modelName": "NVIDIA H100 80GB HBM3",
                            "Hostname": "node-a", "torchship_job": "j-abc"}  # fmt: skip
    assert util["1"][0]["torchship_job"] == ""
    assert {lbl["gpu"]: v for lbl, v in got["DCGM_FI_DEV_XID_ERRORS"]} == {"0": 0, "1": 79}
    assert got["torchship_gpu_metrics_enabled"] == [({}, 1.0)]
    jobs = {(lbl["state"], lbl["site"]): v for lbl, v in got["torchship_jobs"]}
    assert jobs == {("running", "skypilot"): 1, ("succeeded", "local"): 1}
    placements = {(lbl["site"], lbl["decision"]): v for lbl, v in got["torchship_placements_total"]}
    assert placements == {("gcp-a2", "run"): 1, ("local", "asked"): 1}
    # $3600/h for the time since submission (≥ 1 s by the clock given): about $1 or more
    [(labels, usd)] = got["torchship_cost_usd_total"]
    assert labels == {"site": "gcp-a2"} and 1.0 <= usd < 5.0


def test_without_nvml_job_metrics_only_and_one_line(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(0, "127.0.0.1", None, "NVML did not start: no NVIDIA driver here",
                   lambda: JobStore(store_path))  # fmt: skip
    try:
        first, second = scrape(server.server_port), scrape(server.server_port)
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert err.count("GPU metrics are off") == 1
    assert "NVML did not start: no NVIDIA driver here; serving job metrics only" in err
    got = samples(second)
    assert got["torchship_gpu_metrics_enabled"] == [({}, 0.0)]
    assert not any(k.startswith("DCGM_") for k in got) and "torchship_jobs" in got
    assert first.count("# TYPE") == second.count("# TYPE")


def test_job_of_pids(proc: Path) -> None:
    assert job_of_pids([1, 4343, 4242], proc) == "j-abc"
    assert job_of_pids([4343], proc) == ""
    assert job_of_pids([], proc) == ""


def test_open_reader_says_why_here() -> None:
    reader, why = open_reader()
    if reader is None:  # this machine: no driver (or no nvidia-ml-py)
        assert why and ("NVML" in why or "nvidia-ml-py" in why)
    else:
        assert reader.read() is not None


def test_cli_serves_and_says_once_that_gpu_metrics_are_off(tmp_path: Path) -> None:
    env = {**os.environ, "TORCHSHIP_HOME": str(tmp_path)}
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "torchship", "metrics", "serve", "--port",
                          str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)  # fmt: skip
    try:
        deadline = time.time() + 30
        text = ""
        while time.time() < deadline:
            try:
                text = scrape(port)
                break
            except OSError:
                time.sleep(0.2)
        scrape(port)
        assert "torchship_jobs" in text
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    if "GPU metrics are off" in err or open_reader()[0] is None:
        assert err.count("GPU metrics are off") == 1
    assert f"serving http://127.0.0.1:{port}/metrics" in out


def test_cli_bad_port_is_one_line() -> None:
    p = subprocess.run([sys.executable, "-m", "torchship", "metrics", "serve", "--port", "70000"],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["error: --port 70000 is not a TCP port", "hint: give 1-65535"]
