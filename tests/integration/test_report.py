"""`torchship report` over a real run: the quickstart-sized reference workload on the local site
(real torchrun, real SQLite), GPU samples from the sampler over the seam's fake, the page
written by the CLI as a process, then opened in headless Chromium: every plot decodes, nothing
is fetched from anywhere, and a screenshot is taken (docs/img/report.png)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.conftest import run_cli
from tests.podman_env import install_tools
from torchship.monitor.gpus import FakeGpus
from torchship.monitor.sampler import Sampler

pytest.importorskip("torch", reason="local runs start torchrun (pip install -e '.[dev]')")
pytest.importorskip("matplotlib", reason="the report's plots (pip install -e '.[dev]')")

JOB = """
[job]
name = "report-demo"
workload = "reference"
processes_per_node = 2
retries = 0
[job.workload_args]
steps = 80
d_model = 64
layers = 2
heads = 2
seq_len = 32
log_every = 5
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str, Path]:
    """(env, job id, run folder) of a finished run, with GPU samples over its span."""
    tmp = tmp_path_factory.mktemp("report")
    env = {"TORCHSHIP_HOME": str(tmp / "home")}
    (tmp / "job.toml").write_text(JOB)
    proc = run_cli("run", str(tmp / "job.toml"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads(run_cli("status", "--json", env=env).stdout)
    job_id = status[0]["id"]
    run = tmp / "home" / "runs" / job_id
    # two GPUs sampled every 5 s of a 3-minute span by the supervisor's sampler, over the
    # NVML seam's fake (this machine has no GPU)
    t0 = status[0]["created_at"]
    now = [t0]
    gpus = FakeGpus(2, clock=lambda: now[0] - t0)
    sampler = Sampler(gpus, run / "gpus.jsonl", job_id, 1.0, clock=lambda: now[0])
    for _ in range(36):
        now[0] += 5
        sampler.sample_once()
    return env, job_id, run


def test_report_page_from_a_real_run(finished: tuple[dict[str, str], str, Path]) -> None:
    env, job_id, run = finished
    proc = run_cli("report", job_id[:12], env=env)
    assert proc.returncode == 0, proc.stderr
    page = run / "report.html"
    assert proc.stdout.splitlines()[0] == str(page)
    html = page.read_text()
    assert html.count('<img alt="') == 6  # loss, throughput, step time, grad norm, 2 GPU plots
    assert not re.search(r"<script|<link|(src|href)=\"(https?:)?//", html)  # self-contained
    for fact in (job_id, "report-demo", "succeeded", "local", "not priced"):
        assert fact in html, fact
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['final_loss']:.4f}" in html
    assert "Missing" not in html  # metrics, GPU samples and summary were all there


def test_report_renders_in_headless_chromium(
    finished: tuple[dict[str, str], str, Path], tmp_path: Path
) -> None:
    reason = install_tools(("chromium",))
    if reason:
        pytest.skip(reason)
    env, job_id, _ = finished
    out = tmp_path / "page.html"
    assert run_cli("report", job_id, "-o", str(out), env=env).returncode == 0
    # a copy with a probe: after load, the title says how many plots decoded, and whether the
    # page fits the window's width
    probe = out.read_text().replace(
        "</body>",
        "<script>addEventListener('load',()=>{const i=[...document.images];"
        "document.title='decoded '+i.filter(x=>x.complete&&x.naturalWidth>300).length+'/'+"
        "i.length+' fits '+(document.documentElement.scrollWidth<=innerWidth)})</script></body>",
    )
    (tmp_path / "probe.html").write_text(probe)
    dom = chromium(tmp_path, "--dump-dom", (tmp_path / "probe.html").as_uri())
    assert "<title>decoded 6/6 fits true</title>" in dom, dom[:400]  # no sideways scroll
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", out.as_uri(), window="1280,1500")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TORCHSHIP_KEEP_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TORCHSHIP_KEEP_REPORT_SCREENSHOT"])


def test_report_says_what_is_missing_and_refuses_bad_output(
    finished: tuple[dict[str, str], str, Path], tmp_path: Path
) -> None:
    env, job_id, run = finished
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 81, "loss"')  # a torn last line, as a killed run leaves
    (run / "gpus.jsonl").rename(run / "gpus.jsonl.bak")
    try:
        proc = run_cli("report", job_id, "-o", str(tmp_path / "r.html"), env=env)
    finally:
        (run / "gpus.jsonl.bak").rename(run / "gpus.jsonl")
    assert proc.returncode == 0
    notes = [x for x in proc.stdout.splitlines() if x.startswith("note: ")]
    assert len(notes) == 2 and "1 line(s)" in notes[0] and "no GPU samples" in notes[1]
    html = (tmp_path / "r.html").read_text()
    assert "Missing" in html and html.count('<img alt="') == 4
    for args, says in (([job_id, "-o", str(tmp_path)], "is a folder"),
                       ([job_id, "-o", str(tmp_path / "no/such/r.html")], "no folder"),
                       (["nosuchjob"], "no job 'nosuchjob'")):  # fmt: skip
        proc = run_cli("report", *args, env=env)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2


def test_supervisor_samples_the_jobs_gpus(tmp_path: Path) -> None:
    """The sampler attributes a GPU to the job through the real /proc of a real process."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             env={**os.environ, "TORCHSHIP_JOB_ID": "job-s"})  # fmt: skip
    try:
        gpus = FakeGpus(2)
        gpus.pids = {1: (child.pid,)}
        time.sleep(0.2)
        sampler = Sampler(gpus, tmp_path / "gpus.jsonl", "job-s", 0.05).start()
        time.sleep(0.5)
        sampler.stop()
    finally:
        child.kill()
        child.wait()
    rows = [json.loads(x) for x in (tmp_path / "gpus.jsonl").read_text().splitlines()]
    assert len(rows) >= 4 and sampler.errors == 0
    assert {r["gpu"] for r in rows if r["job"]} == {1} and {r["gpu"] for r in rows} == {0, 1}
    assert all(r["mem_total_mib"] == 81559 for r in rows)
