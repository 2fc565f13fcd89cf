"""The exporter over real HTTP on 127.0.0.1, its exposition parsed by prometheus_client's own
parser: DCGM names, types and labels with the GPU's job id; job metrics from a real SQLite
store; without NVML, job metrics only and one clear line; the CLI as a process. Issue 17: one
snapshot per interval, the bounded server (idle, slow and surplus clients), and real damage to
a real jobs.db (truncated, garbage pages, not SQLite, a directory, no read permission) costing
only the job metrics, with one line per change."""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.prom import samples, scrape
from torchship.monitor.exporter import (
    DCGM,
    Collector,
    MetricsServer,
    Request,
    Snapshot,
    Snapshots,
    job_of_pids,
    parse_request,
    serve,
)
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
    assert got["torchship_store_up"] == [({}, 1.0)]
    assert got["torchship_exporter_snapshots_total"] == [({}, 1.0)]
    assert {lbl["reason"]: v for lbl, v in got["torchship_exporter_rejected_total"]} == {
        "busy": 0, "timeout": 0, "bad_request": 0, "dropped": 0}  # fmt: skip


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
    p, port = _serve_cli(tmp_path)
    try:
        text = _scrape_when_up(p, port)
        scrape(port)
        assert "torchship_jobs" in text
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    if "GPU metrics are off" in err or open_reader()[0] is None:
        assert err.count("GPU metrics are off") == 1
    assert f"serving http://127.0.0.1:{port}/metrics" in out


def test_cli_bad_cache_is_one_line() -> None:
    p = subprocess.run([sys.executable, "-m", "torchship", "metrics", "serve", "--cache-s", "-1"],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.splitlines() == [
        "error: --cache-s -1 is out of range",
        "hint: give 0-3600 seconds, below the scrape interval",
    ]


def test_cli_bad_port_is_one_line() -> None:
    p = subprocess.run([sys.executable, "-m", "torchship", "metrics", "serve", "--port", "70000"],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["error: --port 70000 is not a TCP port", "hint: give 1-65535"]


# --- one snapshot per interval (issue 17) ---


def test_snapshot_taken_at_most_once_per_interval() -> None:
    now = [100.0]
    taken: list[float] = []
    snaps = Snapshots(lambda: taken.append(now[0]) or [], max_age_s=5.0, clock=lambda: now[0])
    first = snaps.get()
    for t in (100.0, 101.0, 104.9):
        now[0] = t
        assert snaps.get() is first
    now[0] = 105.0
    second = snaps.get()
    assert second is not first and taken == [100.0, 105.0] and snaps.taken == 2


def test_concurrent_scrapes_wait_for_the_one_refresh() -> None:
    release, started = threading.Event(), threading.Event()
    calls: list[int] = []

    def collect() -> list[object]:
        calls.append(1)
        started.set()
        release.wait(10)
        return []

    snaps = Snapshots(collect, max_age_s=5.0)
    got: list[Snapshot] = []
    threads = [threading.Thread(target=lambda: got.append(snaps.get())) for _ in range(20)]
    for t in threads:
        t.start()
    assert started.wait(10)
    time.sleep(0.2)  # every other thread is waiting now
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(got) == 20 and len({id(s) for s in got}) == 1


def test_stale_snapshot_served_while_one_refresh_runs() -> None:
    now = [0.0]
    release = threading.Event()
    gate = [False]

    def collect() -> list[object]:
        if gate[0]:
            release.wait(10)
        return []

    snaps = Snapshots(collect, max_age_s=5.0, clock=lambda: now[0])
    old = snaps.get()
    gate[0], now[0] = True, 6.0
    refreshed: list[Snapshot] = []
    refresher = threading.Thread(target=lambda: refreshed.append(snaps.get()))
    refresher.start()
    time.sleep(0.2)
    assert snaps.get() is old  # one refresh old: served at once, not collected again
    now[0] = 11.0  # two intervals old: this scrape waits for the refresh under way
    waiter: list[Snapshot] = []
    second = threading.Thread(target=lambda: waiter.append(snaps.get()))
    second.start()
    time.sleep(0.2)
    assert not waiter
    release.set()
    refresher.join(10)
    second.join(10)
    assert waiter == refreshed and refreshed[0] is not old and snaps.taken == 2


# --- the bounded server ---


def exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize(
    ("head", "want"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
         Request("GET", "/metrics", "", True)),
        (b"GET /metrics?name[]=x HTTP/1.0\r\nAccept: application/openmetrics-text\r\n\r\n",
         Request("GET", "/metrics", "application/openmetrics-text", False)),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", None),  # no blank line: cut short
        (b"GET /metrics\r\n\r\n", None),  # HTTP/0.9
        (b"\x16\x03\x01\x02\x00\x01\xfc\x03\x03\r\n\r\n", None),  # TLS on a plain port
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", None),
    ],
)  # fmt: skip
def test_parse_request(head: bytes, want: Request | None) -> None:
    assert parse_request(head) == want


def test_http_answers(store_path: Path) -> None:
    server = serve(0, "127.0.0.1", collector=Collector(FakeGpus(1), lambda: JobStore(store_path)))
    port = server.server_port
    try:
        plain = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        zipped = exchange(port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
        om = exchange(port, b"GET / HTTP/1.1\r\nAccept: application/openmetrics-text; "
                      b"version=1.0.0\r\n\r\n")  # fmt: skip
        head = exchange(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        missing = exchange(port, b"GET /favicon.ico HTTP/1.1\r\n\r\n")
        post = exchange(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        junk = exchange(port, b"hello\r\n\r\n")
    finally:
        server.shutdown()
    status = {k: v.split(b"\r\n", 1)[0] for k, v in
              {"plain": plain, "head": head, "missing": missing, "post": post,
               "junk": junk}.items()}  # fmt: skip
    assert status == {"plain": b"HTTP/1.1 200 OK", "head": b"HTTP/1.1 200 OK",
                      "missing": b"HTTP/1.1 404 Not Found",
                      "post": b"HTTP/1.1 405 Method Not Allowed",
                      "junk": b"HTTP/1.1 400 Bad Request"}  # fmt: skip
    plain_head, _, plain_body = plain.partition(b"\r\n\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in plain_head
    assert f"Content-Length: {len(plain_body)}".encode() in plain_head
    assert head.endswith(b"\r\n\r\n") and head.partition(b"\r\n\r\n")[0] == plain_head
    zipped_head, _, zipped_body = zipped.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in zipped_head
    assert gzip.decompress(zipped_body) == plain_body  # the same snapshot
    assert b"application/openmetrics-text" in om and om.endswith(b"# EOF\n")
    assert samples(plain_body.decode())["torchship_store_up"] == [({}, 1.0)]


def test_idle_and_slow_clients_do_not_hold_the_pool(store_path: Path) -> None:
    server = serve(0, "127.0.0.1", None, "test", lambda: JobStore(store_path), cache_s=0,
                   workers=1, timeout_s=0.5)  # fmt: skip
    port = server.server_port
    stop = threading.Event()

    def trickle() -> None:  # one byte every 0.1 s: each recv is quick, the whole is not
        with socket.create_connection(("127.0.0.1", port)) as s, contextlib.suppress(OSError):
            for b in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n" * 100:
                if stop.wait(0.1):
                    break
                s.send(bytes([b]))

    idle = socket.create_connection(("127.0.0.1", port))
    slow = threading.Thread(target=trickle)
    slow.start()
    try:
        t = time.perf_counter()
        text = scrape(port)  # behind the idle client and the slow one on the only worker
        waited = time.perf_counter() - t
        rejected = {
            lbl["reason"]: v for lbl, v in samples(text)["torchship_exporter_rejected_total"]
        }
    finally:
        stop.set()
        slow.join(10)
        idle.close()
        server.shutdown()
    assert waited < 3.0
    assert rejected["timeout"] >= 1


def test_full_queue_is_answered_503_at_once(store_path: Path) -> None:
    server = MetricsServer("127.0.0.1", 0, Collector(None, lambda: JobStore(store_path)).collect,
                           workers=1, queued=1, timeout_s=5.0)  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    held = [socket.create_connection(("127.0.0.1", port))]  # the worker waits on it
    time.sleep(0.3)
    held.append(socket.create_connection(("127.0.0.1", port)))  # the queue's one place
    time.sleep(0.3)
    try:
        t = time.perf_counter()
        busy = exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        took = time.perf_counter() - t
    finally:
        for s in held:
            s.close()
    try:  # the two closed connections leave the worker and the queue: served again
        deadline = time.time() + 10
        while (ok := exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))[9:12] == b"503":
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        server.shutdown()
    assert busy.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"Retry-After: 1" in busy
    assert took < 2.0 and ok.startswith(b"HTTP/1.1 200 OK\r\n")
    rejected = samples(ok.partition(b"\r\n\r\n")[2].decode())["torchship_exporter_rejected_total"]
    assert {lbl["reason"]: v for lbl, v in rejected}["busy"] >= 1


# --- a damaged store costs only the job metrics (issue 17, item 14) ---


def _overwrite_pages(path: Path) -> None:
    with path.open("r+b") as f:  # pages 2-4 (of 4 KiB): table and index b-trees
        f.seek(4096)
        f.write(random.Random(14).randbytes(3 * 4096))


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"jobs.db, but a text file now\n" * 200)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGE = {
    "truncated": lambda p: os.truncate(p, p.stat().st_size // 2),
    "garbage pages": _overwrite_pages,
    "not SQLite": _not_sqlite,
    "a directory": _directory,
}


@pytest.fixture
def big_store(tmp_path: Path) -> Path:
    """A real store of 300 jobs (a few dozen pages), closed (its WAL checkpointed away)."""
    path = tmp_path / "home" / "jobs.db"
    with JobStore(path) as s:
        for i in range(300):
            j, _ = s.submit(f"k{i}", f"j{i}", {"args": ["x" * 100]}, site="local",
                            placement={"site": "local", "usd_per_hour": 1.0})  # fmt: skip
            s.transition(j.id, "running")
    assert not path.with_name("jobs.db-wal").exists()
    return path


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_store_costs_only_the_job_metrics(
    damage: str, big_store: Path, proc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    DAMAGE[damage](big_store)
    gpus = FakeGpus(2)
    server = serve(
        0, "127.0.0.1", collector=Collector(gpus, lambda: JobStore(big_store), "n", proc)
    )
    try:
        first, second = scrape(server.server_port), scrape(server.server_port)  # 200, not 500
    finally:
        server.shutdown()
    for text in (first, second):
        got = samples(text)
        assert got["torchship_store_up"] == [({}, 0.0)]
        assert "torchship_jobs" not in got and "torchship_placements_total" not in got
        assert len(got["DCGM_FI_DEV_GPU_UTIL"]) == 2  # the GPU metrics are all there
        assert got["torchship_gpu_metrics_enabled"] == [({}, 1.0)]
        assert "torchship_exporter_snapshots_total" in got
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchship metrics: job metrics are off: ")
    assert lines[0].endswith("; serving the rest (torchship_store_up 0) and trying again at "
                             "each snapshot")  # fmt: skip


def test_one_line_per_change_of_the_store(
    big_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = big_store.read_bytes()
    server = serve(0, "127.0.0.1", None, "test", lambda: JobStore(big_store), cache_s=0)
    port = server.server_port

    def up() -> list[float]:
        return [v for _, v in samples(scrape(port))["torchship_store_up"]]

    try:
        assert up() == [1.0]
        _not_sqlite(big_store)
        assert [up(), up(), up()] == [[0.0]] * 3
        big_store.write_bytes(good)
        assert [up(), up()] == [[1.0]] * 2
        _directory(big_store)
        assert [up(), up()] == [[0.0]] * 2
    finally:
        server.shutdown()
    lines = capsys.readouterr().err.splitlines()[1:]  # after "GPU metrics are off"
    # the reason is the store's own words (state.py's); the line around it is the exporter's
    off, rest = (
        "torchship metrics: job metrics are off: ",
        "; serving the rest (torchship_store_up 0) and trying again at each snapshot",
    )
    assert len(lines) == 3, lines
    assert lines[1] == "torchship metrics: job metrics are back: the job store reads again"
    for line in (lines[0], lines[2]):
        assert line.startswith(off) and line.endswith(rest) and len(line) > len(off + rest)
    assert lines[0] != lines[2]  # another condition: said again


def test_cli_unreadable_store_serves_the_rest(tmp_path: Path) -> None:
    under: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root reads any file: drop that power, as a service user lacks it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        under = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")
    with JobStore(tmp_path / "jobs.db") as s:
        s.submit("k1", "a", {}, site="local")
    (tmp_path / "jobs.db").chmod(0)
    p, port = _serve_cli(tmp_path, ("--cache-s", "0"), under)
    try:
        down = samples(_scrape_when_up(p, port))
        (tmp_path / "jobs.db").chmod(0o600)
        back = samples(scrape(port))
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert down["torchship_store_up"] == [({}, 0.0)] and "torchship_jobs" not in down
    assert "torchship_gpu_metrics_enabled" in down
    assert back["torchship_store_up"] == [({}, 1.0)]
    assert back["torchship_jobs"] == [({"state": "submitted", "site": "local"}, 1.0)]
    store_lines = [ln for ln in err.splitlines() if "job metrics are" in ln]
    assert len(store_lines) == 2, err
    assert "job metrics are off:" in store_lines[0]
    assert any(w in store_lines[0].lower() for w in ("permission", "unable to open"))
    assert store_lines[1].endswith("job metrics are back: the job store reads again")


def _serve_cli(
    home: Path, args: Sequence[str] = (), under: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], int]:
    """`torchship metrics serve ARGS` as a process on a free port, run by the command `under`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TORCHSHIP_HOME": str(home)}
    p = subprocess.Popen([*under, sys.executable, "-m", "torchship", "metrics", "serve", "--port",
                          str(port), *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    return p, port


def _scrape_when_up(p: subprocess.Popen[str], port: int) -> str:
    deadline = time.time() + 30
    while True:
        try:
            return scrape(port)
        except OSError:
            if time.time() > deadline or p.poll() is not None:
                raise
            time.sleep(0.2)
