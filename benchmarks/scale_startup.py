"""Start-up: what every call of the command pays before it does anything, measured side by side
with `python -c pass` in one run; and what `torchship lock` adds to the uv call it wraps.

    python benchmarks/scale_startup.py [--runs 10] [--no-commands] [--no-lock]

Targets (issue 20): `torchship --version` <= 3x `python -c pass`; `torchship lock` adds <= 0.2 s
to uv. Each figure is the median of --runs fresh processes of the installed console script
(the `torchship` beside this Python), printed in seconds and, last on its line, as a ratio to
the baseline. Bytecode is written once before measuring (an installed wheel has it; an editable
install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile torchship at every start).

The lock figure locks a CPU spec (torch ==2.13.0, never unpinned) against the local wheel in
/opt/wheels, uv's cache warm, three ways: torch alone; with two packages (numpy, tqdm>=4: a
spec's packages are parsed as PEP 508 requirements before uv starts); and the same spec locked
again over its previous lock (whose pins are read and kept). Each times the whole `torchship
lock` from outside, the uv processes it runs from inside (Popen to exit), and the same uv calls
run alone (with the files they were given, the previous pins included). What torchship adds is
the median of each lock less the uv-alone run paired with it: the two run back to back, in
alternating order, so that the drift of a noisy machine (uv alone took 0.40 s at one hour and
0.75 s at the next here) falls on both sides of each difference. Where it goes is printed
beside it: from the process's start to uv's, and from uv's exit to the process's end
(time.perf_counter is the system's monotonic clock on Linux, the same in both processes), with
the load average, since two busy cores double every figure. The last line is the worst of the
three against the target. The first line names the Python: an interpreter built without
profile-guided optimisation (pyenv's default) starts and imports ~20% slower than a
distribution's or uv's own.
benchmarks/scale.py calls `run()`.
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VERSION_TARGET = 3.0  # x `python -c pass`
LOCK_TARGET_S = 0.2  # added to the uv call
WHEELS = Path("/opt/wheels")
TORCH = "2.13.0"  # pinned: an unpinned torch pulls gigabytes
SPEC = f'torch = "{TORCH}"\ncuda = "cpu"\npython = "3.11"\n'
PACKAGES = 'packages = ["numpy", "tqdm>=4"]\n'
CASES = (  # (what, spec, locked again over the previous lock)
    ("torch alone", SPEC, False),
    ("with 2 packages", SPEC + PACKAGES, False),
    ("locked again", SPEC + PACKAGES, True),
)

# Run in the child: `torchship lock` with every process it starts timed from Popen to exit.
_LOCK_CHILD = """
import subprocess, sys, time
spans = []
class Timed(subprocess.Popen):
    def __init__(self, args, *a, **k):
        self._t0 = time.perf_counter()
        self._stdin_text = None
        self._env = k.get("env")  # uv's environment, as the lock gave it
        self._files = {}  # what uv is given to read: the previous pins, the constraints
        for flag in ("--output-file", "--constraint"):
            if flag in args:
                path = args[args.index(flag) + 1]
                self._files[path] = open(path).read()
        super().__init__(args, *a, **k)
    def communicate(self, input=None, timeout=None):
        self._stdin_text = input if input is not None else self._stdin_text
        try:
            return super().communicate(input, timeout)
        finally:
            spans.append({"start": self._t0, "end": time.perf_counter(), "argv": list(self.args),
                          "stdin": self._stdin_text, "files": self._files, "env": self._env,
                          "code": self.returncode})
subprocess.Popen = Timed
from torchship.cli import main
code = main(sys.argv[1:])
print(repr({"code": code, "spans": spans}), file=sys.stderr)
sys.exit(code)
"""


def _median_s(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                       check=False)  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _console_script() -> str:
    here = Path(sys.executable).parent / "torchship"
    if not here.exists():
        raise SystemExit(f"no torchship console script beside {sys.executable}: pip install -e .")
    return str(here)


def _write_bytecode(argvs: Sequence[Sequence[str]]) -> None:
    """Run each once with bytecode writing allowed, as an installed wheel comes compiled."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for argv in argvs:
        subprocess.run(argv, capture_output=True, env=env, check=False)


def startup(runs: int = 10, commands: bool = True) -> list[tuple[str, float]]:
    """(what, median seconds) for the baseline first, then each start-up measured."""
    from torchship.cli import COMMANDS

    ts = _console_script()
    cases: list[tuple[str, list[str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("torchship --version", [ts, "--version"]),
        ("python -c 'import torchship'", [sys.executable, "-c", "import torchship"]),
        ("torchship --help", [ts, "--help"]),
    ]
    if commands:
        cases += [(f"torchship {name} --help", [ts, name, "--help"]) for name in COMMANDS]
    _write_bytecode([argv for _, argv in cases])
    return [(what, _median_s(argv, runs)) for what, argv in cases]


# One uv process of a lock, as the child recorded it: start, end (perf_counter), argv, stdin,
# files (path -> text: what it was given to read), env, code (its exit code; < 0: the lock
# killed it to start it again with other pins)
UvCall = dict[str, Any]


def _union_s(spans: Sequence[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _side_by_side(calls: Sequence[UvCall]) -> list[list[UvCall]]:
    """The calls a lock finished, grouped as it ran them: a call that started before the calls
    before it had all ended ran beside them (the other environments, after the primary). A
    call the lock killed (to start it again over a checked lock) is left out."""
    groups: list[list[UvCall]] = []
    end = float("-inf")
    for c in sorted((c for c in calls if c["code"] >= 0), key=lambda c: c["start"]):
        if groups and c["start"] < end:
            groups[-1].append(c)
        else:
            groups.append([c])
        end = max(end, c["end"])
    return groups


def _uv_alone(calls: Sequence[UvCall], given: Path) -> float | str:
    """Seconds to run the lock's uv calls alone, as it ran them (one after the other, or side
    by side), each with its files as it had them (the previous pins, the constraints) and its
    environment; or why a call did not answer as it had."""
    start = time.perf_counter()
    for group in _side_by_side(calls):
        procs: list[tuple[UvCall, subprocess.Popen[str]]] = []
        for c in group:
            call = list(c["argv"])
            for path, text in c["files"].items():
                copy = Path(given, f"{len(procs)}-{Path(path).name}")
                copy.write_text(text)
                call[call.index(path)] = str(copy)
            pipe = subprocess.PIPE
            proc = subprocess.Popen(
                call, stdin=pipe, stdout=pipe, stderr=pipe, text=True, env=c["env"]
            )
            procs.append((c, proc))
        for c, proc in procs:
            _, err = proc.communicate(c["stdin"])
            if proc.returncode != c["code"]:
                return f"uv alone exited {proc.returncode}, in the lock {c['code']}: {err[-300:]}"
    return time.perf_counter() - start


def lock_overhead(runs: int = 5, spec: str = SPEC, relock: bool = False) -> dict[str, float] | str:
    """Medians of `torchship lock` (whole, from outside), of its uv processes (from inside), of
    those uv calls run alone, and of what the lock adds (each lock less the uv-alone run paired
    with it: run side by side, in alternating order, so that a noisy machine's drift falls on
    both); or why it could not be measured. `relock`: the lock each run makes stays for the
    next, which locks over it."""
    if not list(WHEELS.glob(f"torch-{TORCH}+cpu-*.whl")):
        return f"skipped: no torch {TORCH} CPU wheel in {WHEELS}"
    _write_bytecode([[_console_script(), "lock", "--help"]])
    walls, inside, alone, added, before, after = [], [], [], [], [], []
    calls: list[UvCall] = []
    env = {**os.environ, "UV_HTTP_RETRIES": "0"}
    runs += runs % 2  # as many pairs of each order
    with tempfile.TemporaryDirectory(prefix="torchship-bench-lock-") as tmp:
        project, given = Path(tmp, "project"), Path(tmp, "given")
        project.mkdir()
        given.mkdir()
        (project / "torchship.toml").write_text(spec)
        argv = [sys.executable, "-c", _LOCK_CHILD, "lock", str(project)]
        argv += ["--find-links", str(WHEELS)]
        for i in range(runs + 1):  # the first warms uv's cache (and makes the lock) uncounted
            if not relock:
                (project / "torchship.lock").unlink(missing_ok=True)
            solo = _uv_alone(calls, given) if i % 2 == 0 and i else None
            start = time.perf_counter()
            out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            wall = time.perf_counter() - start
            if out.returncode != 0:
                return f"failed: torchship lock: {out.stderr.strip()[-400:]}"
            calls = ast.literal_eval(out.stderr.strip().splitlines()[-1])["spans"]
            if not i:
                continue
            solo = _uv_alone(calls, given) if solo is None else solo
            if isinstance(solo, str):
                return f"failed: {solo}"
            walls.append(wall)
            alone.append(solo)
            added.append(wall - solo)
            inside.append(_union_s([(c["start"], c["end"]) for c in calls]))
            before.append(min(c["start"] for c in calls) - start)
            after.append(start + wall - max(c["end"] for c in calls))
    return {
        "lock": statistics.median(walls),
        "uv_inside": statistics.median(inside),
        "uv_alone": statistics.median(alone),
        "added": statistics.median(added),
        "uv_calls": float(sum(len(g) for g in _side_by_side(calls))),
        "before_uv": statistics.median(before),
        "after_uv": statistics.median(after),
    }


def run(runs: int = 10, commands: bool = True, lock: bool = True) -> None:
    """Print every start-up figure against `python -c pass`, then the lock's overhead."""
    print(f"python {sys.version.split()[0]}: {os.path.realpath(sys.executable)}")
    figures = startup(runs, commands)
    base = figures[0][1]
    width = max(len(w) for w, _ in figures)
    for what, s in figures:
        print(f"{what:<{width}}  {s:6.3f} s  {s / base:5.1f}x")
    version = dict(figures)["torchship --version"] / base
    print(f"version ratio: {version:.1f}x `python -c pass` (target <= {VERSION_TARGET:g}x)")
    if not lock:
        return
    worst: tuple[float, str] | None = None
    for what, spec, relock in CASES:
        load = os.getloadavg()[0]
        got = lock_overhead(max(3, runs), spec, relock)
        if isinstance(got, str):
            print(f"lock overhead ({what}): {got}")
            return
        added = got["added"]
        worst = max(worst or (added, what), (added, what))
        print(
            f"torchship lock, {what}: {got['lock']:.3f} s; its {got['uv_calls']:.0f} uv call(s) "
            f"{got['uv_inside']:.3f} s inside it, {got['uv_alone']:.3f} s alone"
        )
        print(
            f"  adds {added:.3f} s to uv (whole less uv inside: "
            f"{got['lock'] - got['uv_inside']:.3f} s); start to uv's start "
            f"{got['before_uv']:.3f} s, uv's exit to the end {got['after_uv']:.3f} s; "
            f"load average {load:.2f} to {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
    assert worst is not None
    print(
        f"lock overhead: at most {worst[0]:.3f} s added to uv ({worst[1]}; target <= "
        f"{LOCK_TARGET_S:g} s), {worst[0] / LOCK_TARGET_S:.2f}x the target"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-commands", action="store_true", help="skip each command's --help")
    ap.add_argument("--no-lock", action="store_true", help="skip the lock overhead")
    args = ap.parse_args()
    run(args.runs, not args.no_commands, not args.no_lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
