"""Scale (issue 20): the job store's questions at 10k, 100k and 1M jobs of history, the
exporter's scrape, the simulator's month and the command's start-up, each against a baseline
measured in the same run, with its growth exponent per 10× (log10 of the ratio of times at
sizes 10× apart: 0 is flat, 1 linear).

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--runs 100] [--only store]
                               [--keep DIR]

Stores: written as JobStore.submit and transition write them (the quickstart job's spec, a
placement record, two events a job; the schema, indexes and triggers made by JobStore), in one
transaction each, and kept in --keep (default $TMPDIR/torchship-scale) for the next run. Every
job is finished except 20 lost ones whose checks have stopped: the figures are the store's own
(what reconcile adds is one call per site, tests/unit/test_store_scale.py and
tests/unit/test_batch_status*.py).

Figures (targets from the issue):
- `status` default view: the command in this process (`torchship.cli.main(["status"])`,
  output discarded), p99 of --runs, < 150 ms at 1M; and as a fresh process: median wall and
  peak RSS (< 200 MB at 1M), against `python -c pass`. Baseline: the bare SQLite query of the
  same 50 rows.
- one-job lookup (what `status JOB`, `logs` and `cancel` ask: the job by id prefix and its
  events, through an open store): p99 < 5 ms at 1M; the whole `status JOB` in this process
  (argument parsing and printing too) as its median. Baseline: the bare primary-key SELECT.
- exporter: serve() with its cache off (every scrape a fresh snapshot through its one
  read-only connection), --runs sequential scrapes over HTTP: p99 < 50 ms at 1M. Baseline: the
  full-scan tallies query of schema 3 on the same file.
- simulator and start-up: benchmarks/scale_simulate.py and benchmarks/scale_startup.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart" / "job.toml"
TARGETS = {"status_p99_ms": 150.0, "status_rss_mb": 200.0, "lookup_p99_ms": 5.0,
           "exporter_p99_ms": 50.0}  # fmt: skip
# the exporter's query before schema 4 (a full scan, JSON parsed on every row): the baseline
OLD_TALLIES = (
    "SELECT state, COALESCE(site_name, site, ''),"
    " COALESCE(json_extract(placement, '$.site'), site_name, site, ''),"
    " COALESCE(json_extract(placement, '$.decision'), 'asked'), COUNT(*),"
    " SUM(COALESCE(json_extract(placement, '$.usd_per_hour'), 0) * MAX(0,"
    " (CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'lost')"
    " THEN updated_at ELSE ? END) - created_at) / 3600.0) FROM jobs GROUP BY 1, 2, 3, 4"
)
SITES = ("workstation", "onprem", "slurm-a100", "aws-p5", "gcp-a3")


def build(path: Path, n: int) -> None:
    """A store of `n` finished jobs (20 of them lost and no longer checked)."""
    from torchship.spec.job import load_job
    from torchship.state import NEVER, JobStore

    JobStore(path).close()
    spec = json.dumps(asdict(load_job(EXAMPLE)), sort_keys=True)
    rnd = random.Random(n)
    placements = [json.dumps({"site": s, "decision": d, "usd_per_hour": p, "reason": "bench",
                              "rejected": [], "sites": None}, sort_keys=True)
                  for s in SITES for d, p in (("local", 0.0), ("burst", 24.5))]  # fmt: skip
    t0 = time.time() - 365 * 86400
    step = 365 * 86400 / n
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    for start in range(0, n, 50_000):
        rows, events = [], []
        for i in range(start, min(n, start + 50_000)):
            at = t0 + i * step
            job_id = f"{int(at * 1000):012x}{rnd.getrandbits(32):08x}"
            lost = i >= n - 20
            state = "lost" if lost else ("succeeded", "succeeded", "failed", "cancelled")[i % 4]
            placement = placements[i % len(placements)]
            site = SITES[(i % len(placements)) // 2]
            rows.append((job_id, f"key-{i}", f"job{i}", spec, "sha256:" + "0" * 64, site,
                         placement, state, f"docker://host/{job_id}", 0, at, at + 600,
                         NEVER if lost else None))  # fmt: skip
            events += [(job_id, "submitted", at, None), (job_id, state, at + 600, None)]
        db.executemany(
            "INSERT INTO jobs (id, key, name, spec, lock_hash, site_name, placement, state,"
            " handle, exit_code, created_at, updated_at, recheck_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany("INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)",
                       events)  # fmt: skip
    db.execute("COMMIT")
    db.execute("ANALYZE")  # what `torchship state vacuum` leaves too: the planner's statistics
    db.close()


def store_for(keep: Path, n: int) -> Path:
    from torchship.state import SCHEMA_VERSION

    folder = keep / f"{n}-v{SCHEMA_VERSION}"
    path = folder / "jobs.db"
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for f in folder.glob("jobs.db*"):
            f.unlink()
        started = time.perf_counter()
        build(path, n)
        (folder / "done").write_text("")
        print(f"  built {n:,} jobs in {time.perf_counter() - started:.1f} s: {path} "
              f"({path.stat().st_size / 2**20:,.0f} MiB)", flush=True)  # fmt: skip
    return path


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def timed(call: Callable[[], object], runs: int) -> list[float]:
    call()  # warm: the first call pays imports and the page cache
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def quiet_main(args: list[str]) -> int:
    from torchship.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(args)


def process(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one fresh process. The peak is GNU time's (%M): a
    child forked from this process would count this process's pages as its own before exec."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], env=env, check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    assert done.returncode == 0, (argv, done.returncode, done.stderr[-500:])
    return wall, int(done.stderr.strip().splitlines()[-1]) / 1024


def store_figures(path: Path, runs: int) -> dict[str, float]:
    from torchship.jobs import get_job
    from torchship.monitor.exporter import serve
    from torchship.state import JobStore

    os.environ["TORCHSHIP_HOME"] = str(path.parent)
    env = {**os.environ}
    exe = str(Path(sys.executable).with_name("torchship"))
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    bare = timed(lambda: db.execute("SELECT id, name, site_name, state, exit_code, handle,"
                                    " created_at, updated_at FROM jobs ORDER BY id DESC LIMIT 50"
                                    ).fetchall(), runs)  # fmt: skip
    status = timed(lambda: quiet_main(["status"]), runs)
    procs = [process([exe, "status"], env) for _ in range(5)]
    passes = [process([sys.executable, "-c", "pass"], env)[0] for _ in range(5)]
    count = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    some = db.execute("SELECT id FROM jobs ORDER BY id LIMIT 1 OFFSET ?", (count // 2,)).fetchone()[
        0
    ]
    bare_get = timed(lambda: db.execute("SELECT * FROM jobs WHERE id = ?", (some,)).fetchone(),
                     runs)  # fmt: skip
    store = JobStore(path)
    lookup = timed(lambda: (get_job(store, some[:16]), store.events(some)), runs)
    lookup_cli = timed(lambda: quiet_main(["status", some[:16]]), max(3, runs // 5))
    store.close()
    old = timed(lambda: db.execute(OLD_TALLIES, (time.time(),)).fetchall(), max(3, runs // 20))
    server = serve(0, "127.0.0.1", None, "benchmark", lambda: JobStore(path, readonly=True),
                   cache_s=0)  # fmt: skip
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        scrape = timed(lambda: urllib.request.urlopen(url, timeout=30).read(), runs)
    finally:
        server.shutdown()
    db.close()
    return {
        "bare_ms": p99(bare) * 1000, "status_p99_ms": p99(status) * 1000,
        "status_process_ms": statistics.median(w for w, _ in procs) * 1000,
        "pass_ms": statistics.median(passes) * 1000,
        "status_rss_mb": max(m for _, m in procs),
        "bare_get_ms": p99(bare_get) * 1000, "lookup_p99_ms": p99(lookup) * 1000,
        "lookup_cli_ms": statistics.median(lookup_cli) * 1000,
        "old_tallies_ms": statistics.median(old) * 1000, "exporter_p99_ms": p99(scrape) * 1000,
    }  # fmt: skip


def exponent(small: float, big: float, factor: float) -> float:
    return math.log10(big / small) / math.log10(factor) if small > 0 and big > 0 else 0.0


def run_store(sizes: list[int], runs: int, keep: Path) -> bool:
    print(f"job store: {runs} runs per figure; sizes {', '.join(f'{n:,}' for n in sizes)}")
    figures = {n: store_figures(store_for(keep, n), runs) for n in sizes}
    for n, f in figures.items():
        print(f"  {n:>9,} jobs: status p99 {f['status_p99_ms']:7.1f} ms (bare SQLite "
              f"{f['bare_ms']:.2f} ms); as a process {f['status_process_ms']:.0f} ms = "
              f"{f['status_process_ms'] / f['pass_ms']:.1f}x python -c pass, peak RSS "
              f"{f['status_rss_mb']:.0f} MiB; lookup p99 {f['lookup_p99_ms']:.2f} ms (bare "
              f"{f['bare_get_ms']:.3f} ms; `status JOB` in-process median "
              f"{f['lookup_cli_ms']:.1f} ms); exporter scrape p99 {f['exporter_p99_ms']:.1f} ms "
              f"(schema-3 full scan {f['old_tallies_ms']:.0f} ms)", flush=True)  # fmt: skip
    ok = True
    ordered = sorted(figures)
    for a, b in itertools.pairwise(ordered):
        keys = ("status_p99_ms", "lookup_p99_ms", "exporter_p99_ms", "old_tallies_ms")
        growth = {k: exponent(figures[a][k], figures[b][k], b / a) for k in keys}
        print(f"  growth exponent {a:,} -> {b:,}: " +
              ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))  # fmt: skip
    top = figures[ordered[-1]]
    for key, target in TARGETS.items():
        ratio = top[key] / target
        ok &= ratio < 1
        print(f"  at {ordered[-1]:,} jobs: {key} {top[key]:.1f} against target {target:g}: "
              f"{ratio:.2f} of it")  # fmt: skip
    print(f"store: status p99 at {ordered[-1]:,} jobs against the bare query of its rows: "
          f"{top['status_p99_ms'] / top['bare_ms']:.1f}x; exporter against schema 3's scan: "
          f"{top['exporter_p99_ms'] / top['old_tallies_ms']:.3f}x")  # fmt: skip
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--only", choices=("store", "simulate", "startup"))
    p.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "torchship-scale")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    ok = True
    if args.only in (None, "simulate"):
        import scale_simulate

        scale_simulate.run()
    if args.only in (None, "startup"):
        import scale_startup

        scale_startup.run()
    if args.only in (None, "store"):
        sizes = [int(s) for s in args.sizes.split(",")]
        ok &= run_store(sizes, args.runs, args.keep)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
