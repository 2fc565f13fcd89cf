"""The reference workload for real: torch on CPU, torchrun with two processes, gloo.

Trains (the loss falls, every rank ends with the same parameters), survives a worker killed
with SIGKILL (torchrun restarts the group, it resumes from the newest checkpoint and ends
bit for bit where an uninterrupted run ends), and its checkpoints are atomic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

torch = pytest.importorskip(
    "torch", reason="the reference workload needs torch (pip install -e '.[dev]')"
)

from tests.prom import samples, scrape  # noqa: E402
from torchship.workload import checkpoint  # noqa: E402
from torchship.workload.train import main  # noqa: E402

SMALL = ["--d-model", "64", "--layers", "2", "--heads", "2", "--seq-len", "32"]


def torchrun(
    out: Path, *args: str, restarts: int = 0, tag: str = "", env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        f"--max-restarts={restarts}",
        "-m",
        "torchship.workload",
        *SMALL,
        "--summary",
        str(out / "summary.json"),
        "--metrics",
        str(out / "metrics.jsonl"),
        *args,
    ]
    full = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TS_TEST_RUN": tag}
    return subprocess.Popen(
        cmd, env=full | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(p: subprocess.Popen[str]) -> str:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    return out


def summary(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "summary.json").read_text())
    return data


def test_two_process_ddp_trains_and_ranks_agree(tmp_path: Path) -> None:
    log = finish(torchrun(tmp_path, "--steps", "40", "--log-every", "10"))
    s = summary(tmp_path)
    assert s["world_size"] == 2 and s["backend"] == "gloo"
    assert s["params_identical"] is True and len(set(s["param_digests"])) == 1  # type: ignore[arg-type]
    assert s["final_loss"] < s["first_loss"] - 1.0  # type: ignore[operator]
    assert s["tokens_per_s"] and s["mfu"] is None  # no MFU without a GPU peak
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 10, 20, 30, 40]
    assert "done: 40 steps" in log


def test_training_metrics_scraped_and_json_logs_while_two_ranks_train(tmp_path: Path) -> None:
    """TORCHSHIP_METRICS_PORT: local rank 0 serves the training series while it trains (scraped
    here over HTTP mid-run); TORCHSHIP_LOG_FORMAT=json: every line is a JSON object carrying
    the job id and rank, both ranks writing their own step events."""
    env = {"TORCHSHIP_JOB_ID": "job-tel", "TORCHSHIP_METRICS_PORT": "0",
           "TORCHSHIP_LOG_FORMAT": "json"}  # fmt: skip
    p = torchrun(tmp_path, "--steps", "400", "--log-every", "20", env=env)
    assert p.stdout is not None
    lines: list[str] = []
    got: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in p.stdout:
        lines.append(line)
        if line.startswith("{") and '"event": "metrics"' in line:
            port = json.loads(line)["port"]
        if '"event": "step"' in line and '"step": 100,' in line and not got:
            got = samples(scrape(port))  # mid-run: the loop is still going
    assert p.wait(timeout=300) == 0, "".join(lines)
    assert got, "".join(lines)
    labels = {"torchship_job": "job-tel", "rank": "0"}
    (lab, step), = got["torchship_train_step"]  # fmt: skip
    assert lab == labels and 100 <= step < 400
    assert got["torchship_train_steps_target"] == [(labels, 400)]
    assert got["torchship_train_step_seconds_count"][0][1] >= 100 - 3  # the untimed warmup
    assert got["torchship_train_tokens_total"][0][1] > 0
    assert 0 < got["torchship_train_loss"][0][1] < 10
    assert got["torchship_train_info"][0][0]["backend"] == "gloo"
    records = [json.loads(x) for x in lines if x.startswith("{")]
    assert all(r["job"] == "job-tel" and r["rank"] in (0, 1) for r in records)
    steps = [r for r in records if r["event"] == "step"]
    assert {r["rank"] for r in steps} == {0, 1}
    by_step = {r["step"]: r["loss"] for r in steps if r["rank"] == 0}
    jsonl = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert by_step == {r["step"]: r["loss"] for r in jsonl}  # one truth, two outlets
    assert [r["event"] for r in records if r["rank"] == 1][-1] == "done"


def _worker_pid(tag: str, rank: int) -> int | None:
    want = {f"TS_TEST_RUN={tag}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if want <= env and b"torchship.workload" in cmd and b"torch.distributed.run" not in cmd:
            return int(entry.name)
    return None


def _logged_steps(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max((json.loads(x)["step"] for x in lines if x.strip()), default=0)


@pytest.mark.slow
@pytest.mark.e2e  # 27 s: with the long end-to-end tests, so the suite stays under 10 minutes
def test_sigkill_a_worker_then_resume_ends_bitwise_equal(tmp_path: Path) -> None:
    args = ["--steps", "150", "--checkpoint-every", "25", "--log-every", "5"]
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    finish(torchrun(clean, *args, "--checkpoint-dir", str(clean / "ck")))

    tag = uuid.uuid4().hex
    p = torchrun(faulty, *args, "--checkpoint-dir", str(faulty / "ck"), restarts=1, tag=tag)
    deadline = time.time() + 120
    while _logged_steps(faulty / "metrics.jsonl") < 35:  # past the checkpoint at step 25
        assert p.poll() is None and time.time() < deadline, "the run ended before the kill"
        time.sleep(0.02)
    pid = _worker_pid(tag, rank=1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    log = finish(p)

    a, b = summary(clean), summary(faulty)
    assert b["resumed_from_step"] in (25, 50, 75, 100, 125), log  # restarted, from a checkpoint
    assert "resumed from" in log
    assert b["final_loss"] == a["final_loss"]  # exact float equality
    assert b["param_digests"] == a["param_digests"]
    final = [checkpoint.load_newest(d / "ck") for d in (clean, faulty)]
    assert final[0] is not None and final[1] is not None and final[0].step == final[1].step == 150
    for name, t in final[0].state["model"].items():
        assert torch.equal(t, final[1].state["model"][name]), name


def test_checkpoints_are_atomic_and_a_damaged_one_is_skipped(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    for step in (10, 20, 30):
        checkpoint.save(
            ck,
            step,
            {"model": {"w": torch.full((2,), float(step))}, "optimizer": {}, "config": {}},
            keep=2,
        )
    assert [s for s, _ in checkpoint.checkpoints(ck)] == [30, 20]  # keeps the newest two
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]  # no temp files left
    checkpoint.path_for(ck, 40).write_bytes(b"torn write")  # as if an unsafe writer crashed
    loaded = checkpoint.load_newest(ck)
    assert loaded is not None and loaded.step == 30
    assert loaded.skipped[0][0].name == "step-00000040.pt"
    assert torch.equal(loaded.state["model"]["w"], torch.full((2,), 30.0))


def test_one_process_with_compile_and_bf16_autocast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.json"
    code = main(
        [
            *SMALL,
            "--steps",
            "6",
            "--log-every",
            "3",
            "--compile",
            "aot_eager",
            "--amp",
            "bf16",
            "--summary",
            str(out),
        ]
    )
    assert code == 0
    s = json.loads(out.read_text())
    assert s["compile"] == "aot_eager" and s["amp"] == "bf16" and s["world_size"] == 1
    assert s["final_loss"] < s["first_loss"]
    assert "compile aot_eager" in capsys.readouterr().out


def test_missing_data_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", "/nonexistent/corpus.txt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data /nonexistent/corpus.txt: no such file") and "hint:" in err


def test_a_save_killed_before_its_rename_is_reported_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A preemption (Slurm requeue) during the first save leaves only open_atomic's temp file;
    the next run starts from step 0, and says why, rather than silently."""
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / ".step-00000010.pt.0123456789ab.tmp").write_bytes(b"half a checkpoint")
    out = tmp_path / "s.json"
    assert main([*SMALL, "--steps", "2", "--checkpoint-dir", str(ck), "--summary", str(out)]) == 0
    said = capsys.readouterr().out
    assert "no complete checkpoint" in said and ".step-00000010.pt.0123456789ab.tmp" in said, said
    assert json.loads(out.read_text())["resumed_from_step"] == 0
