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

from torchship.workload import checkpoint  # noqa: E402
from torchship.workload.train import main  # noqa: E402

SMALL = ["--d-model", "64", "--layers", "2", "--heads", "2", "--seq-len", "32"]


def torchrun(out: Path, *args: str, restarts: int = 0, tag: str = "") -> subprocess.Popen[str]:
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
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TS_TEST_RUN": tag}
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
