"""Sync vs uv, side by side in one run. Targets: a cold sync ≤ 1.2× a plain `uv pip sync` of the
same hashed requirements; a warm `torchship run` start ≤ 2× `uv run python -c pass` in a synced
uv project, and under 1 s.

    python benchmarks/sync.py [--runs 3] [--starts 15]

Cold: `torchship sync examples/quickstart` into an empty cache, against `uv venv` + `uv pip
sync --require-hashes --compile-bytecode` of the same environment's requirements (exported by
`torchship export requirements --env cpu`) into an empty folder: the same uv work (torchship
compiles bytecode, so the baseline does too; the plain uv call without it is printed for the
record). uv's own download cache is warm for both (warmed first), so the ratio is torchship's
overhead, not the network's. Runs alternate.

Warm: `torchship run --detach JOB` for a job of the quickstart project whose command is
`python -c pass` (a cache hit, the preflight, the plan, the store, the launch: the command
returns once the job is started), against `uv run python -c pass` in a uv project holding the
same packages, synced once before; `torchship exec --local -- python -c pass` is printed too
(uv run's exact counterpart). Medians; the last line is the warm ratio.

torchship's own modules are byte-compiled first, as `pip install` does (an editable install
under PYTHONDONTWRITEBYTECODE=1, as on this project's machines, would otherwise recompile
every module on every start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples/quickstart"
TS = [sys.executable, "-m", "torchship"]


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return took


def find_links() -> list[str]:
    return [f for f in os.environ.get("PIP_FIND_LINKS", "").split() if f]


def uv_bin() -> str:
    from torchship.lock.uv import find_uv

    return find_uv()


def cold(runs: int, work: Path, env: dict[str, str]) -> dict[str, list[float]]:
    reqs = work / "requirements.txt"
    timed([*TS, "export", "requirements", str(QUICKSTART), "--env", "cpu", "-o", str(reqs)], env)
    # the find-links folder holds the CPU torch wheel: as torchship sync does, leave the
    # PyTorch index out (it cannot be reached here)
    lines = reqs.read_text().splitlines()
    reqs.write_text("\n".join(ln for ln in lines if not ln.startswith("--extra-index-url")))
    links = [a for f in find_links() for a in ("--find-links", f)]
    uv = uv_bin()
    times: dict[str, list[float]] = {"torchship sync": [], "uv pip sync": [], "uv, no bytecode": []}

    def uv_sync(folder: Path, compile_bytecode: bool) -> float:
        start = time.perf_counter()
        subprocess.run([uv, "venv", "-q", "--relocatable", str(folder)], env=env, check=True)
        argv = [uv, "pip", "sync", "-q", "--require-hashes", "--python", str(folder / "bin/python")]
        argv += [*links, *(["--compile-bytecode"] if compile_bytecode else []), str(reqs)]
        subprocess.run(argv, env=env, check=True)
        return time.perf_counter() - start

    uv_sync(work / "warm", True)  # uv's download cache holds every file from here on
    for i in range(runs):
        cache = work / f"cache-{i}"
        times["torchship sync"].append(
            timed([*TS, "sync", str(QUICKSTART), "-q"], {**env, "TORCHSHIP_CACHE_DIR": str(cache)})
        )
        times["uv pip sync"].append(uv_sync(work / f"uv-{i}", True))
        times["uv, no bytecode"].append(uv_sync(work / f"plain-{i}", False))
        for folder in (cache, work / f"uv-{i}", work / f"plain-{i}"):
            shutil.rmtree(folder, ignore_errors=True)
    return times


def uv_project(work: Path, env: dict[str, str]) -> Path:
    """A uv project with the quickstart's CPU packages, synced once."""
    proj = work / "uvproj"
    proj.mkdir()
    links = ", ".join(f'"{f}"' for f in find_links())
    (proj / "pyproject.toml").write_text(
        '[project]\nname = "bench"\nversion = "0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["torch==2.13.0+cpu", "numpy>=2"]\n'
        f"[tool.uv]\nfind-links = [{links}]\npackage = false\n"
    )
    subprocess.run([uv_bin(), "sync", "-q"], cwd=proj, env=env, check=True)
    return proj


def wait_for_jobs(home: Path, timeout_s: float = 120.0) -> None:
    """Until every run folder has its exit record: a detached job still starting torchrun
    would take the CPU from the next measurement."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = list((home / "runs").glob("*"))
        if all((r / "exit.json").exists() for r in runs):
            return
        time.sleep(0.2)
    raise SystemExit(f"jobs under {home} did not end within {timeout_s:g} s")


def warm(starts: int, work: Path, env: dict[str, str]) -> dict[str, list[float]]:
    proj = work / "proj"
    proj.mkdir()
    for name in ("torchship.toml", "torchship.lock"):
        shutil.copy(QUICKSTART / name, proj / name)
    (proj / "job.toml").write_text(
        '[job]\nname = "noop"\nprocesses_per_node = 1\ncommand = ["python", "-c", "pass"]\n'
    )
    env = {**env, "TORCHSHIP_HOME": str(work / "home")}
    timed([*TS, "sync", str(proj), "-q"], env)  # the environment exists: every run is a hit
    uvproj = uv_project(work, env)
    uv = uv_bin()
    times: dict[str, list[float]] = {"torchship run": [], "torchship exec": [], "uv run": []}
    run = [*TS, "run", "--detach", str(proj / "job.toml")]
    execute = [*TS, "exec", "--local", str(proj), "--", "python", "-c", "pass"]
    for _ in range(starts):
        times["torchship run"].append(timed(run, env))
        wait_for_jobs(work / "home")  # each detached job (torchrun) ends outside the timing
        times["torchship exec"].append(timed(execute, env))
        times["uv run"].append(timed([uv, "run", "python", "-c", "pass"], env, uvproj))
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="cold syncs of each kind")
    ap.add_argument("--starts", type=int, default=15, help="warm starts of each kind")
    ap.add_argument("--warm-only", action="store_true", help="skip the cold syncs")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    import compileall

    import torchship

    compileall.compile_dir(str(Path(torchship.__file__).parent), quiet=1)
    with tempfile.TemporaryDirectory(prefix="torchship-bench-sync-") as tmp:
        work = Path(tmp)
        env["TORCHSHIP_CACHE_DIR"] = str(work / "cache")
        if not args.warm_only:
            c = {k: statistics.median(v) for k, v in cold(args.runs, work, env).items()}
            print(f"cold, median of {args.runs} (uv's download cache warm for both):")
            print(f"  torchship sync:              {c['torchship sync']:.2f} s")
            print(f"  uv venv + uv pip sync:       {c['uv pip sync']:.2f} s (bytecode too)")
            print(f"  uv, without bytecode:        {c['uv, no bytecode']:.2f} s (for the record)")
            print(f"  cold ratio: {c['torchship sync'] / c['uv pip sync']:.2f}x (target <= 1.2x)")
        w = {k: statistics.median(v) for k, v in warm(args.starts, work, env).items()}
    print(f"warm starts, median of {args.starts}:")
    print(f"  torchship run --detach:      {w['torchship run'] * 1000:.0f} ms")
    print(f"  torchship exec --local:      {w['torchship exec'] * 1000:.0f} ms")
    print(f"  uv run python -c pass:       {w['uv run'] * 1000:.0f} ms")
    print(f"  exec ratio: {w['torchship exec'] / w['uv run']:.2f}x")
    ratio = w["torchship run"] / w["uv run"]
    print(f"warm run start ratio: {ratio:.2f}x (target <= 2x, and under 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
