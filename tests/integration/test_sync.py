"""`torchship sync` for real: uv builds the lock's environments from PyPI and this machine's
find-links folder (PIP_FIND_LINKS, which holds the CPU torch wheel), into the test run's own
cache (tests/conftest.py). Killed syncs, concurrent syncs, a hash that does not match, an
unreachable index and another platform are each tried, as is running a job and a command
inside the environment, and the README's first command in a fresh venv.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from torchship.lock import read_lock, write_lock
from torchship.lock.compile import parse_compiled
from torchship.lock.model import LockedPackage
from torchship.lock.uv import find_uv

pytestmark = [pytest.mark.network, pytest.mark.slow]
QUICKSTART = REPO / "examples/quickstart"
LOCK = read_lock(QUICKSTART / "torchship.lock")
CPU = LOCK.environment("cpu")
assert CPU is not None


@pytest.fixture(scope="module")
def small_packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[LockedPackage, ...]:
    """A real, small environment (numpy and one pure-Python package) locked with hashes from
    PyPI: quick to build, so that killing and racing syncs of it is cheap."""
    reqs = "numpy==2.4.6\nsix==1.17.0\n"
    argv = [find_uv(), "pip", "compile", "-", "--generate-hashes", "--no-header", "--no-config"]
    argv += ["--emit-index-annotation", "--python-version", "3.11", "--quiet"]
    argv += ["--python-platform", "x86_64-manylinux_2_28"]
    proc = subprocess.run(argv, input=reqs, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"PyPI cannot be reached: {proc.stderr.strip()[-200:]}")
    return parse_compiled(proc.stdout)


def project(folder: Path, **cpu_changes: object) -> Path:
    """A folder holding the quickstart's lock with its cpu environment changed (no spec)."""
    folder.mkdir(parents=True, exist_ok=True)
    cpu = dataclasses.replace(CPU, **cpu_changes)  # type: ignore[arg-type]
    write_lock(dataclasses.replace(LOCK, environments=(cpu,)), folder / "torchship.lock")
    return folder


def cli(*args: str, cache: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"UV_HTTP_RETRIES": "0", **env}
    if cache is not None:
        extra["TORCHSHIP_CACHE_DIR"] = str(cache)
    return run_cli(*args, env=extra)


def leftovers(cache: Path) -> list[str]:
    envs = cache / "envs"
    if not envs.is_dir():
        return []
    return sorted(
        p.name
        for p in envs.iterdir()
        if p.name != ".locks" and not (p / "torchship-env.json").is_file()
    )


# --- the quickstart's environment -------------------------------------------------------------


def test_sync_builds_exactly_the_locked_cpu_environment_then_hits_the_cache() -> None:
    first = cli("sync", str(QUICKSTART), "--json")
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["env"] == "cpu" and info["reason"].startswith("this machine has no NVIDIA driver")
    assert "environment cpu: this machine has no NVIDIA driver" in first.stderr
    python = Path(info["python"])
    probe = (
        "import importlib.metadata as m, json, sys, torch;"
        "print(json.dumps({'torch': torch.__version__, 'prefix': sys.prefix,"
        " 'dists': sorted((d.metadata['Name'].lower().replace('_', '-'), d.version)"
        " for d in m.distributions())}))"
    )
    out = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    got = json.loads(out.stdout)
    assert got["torch"] == "2.13.0+cpu" and got["prefix"] == info["path"]
    # exactly the lock: every package at its version, and nothing else (not even torchship)
    assert [tuple(d) for d in got["dists"]] == sorted((p.name, p.version) for p in CPU.packages)
    started = time.monotonic()
    second = cli("sync", str(QUICKSTART), "--json")
    wall = time.monotonic() - started
    again = json.loads(second.stdout)
    assert second.returncode == 0 and again["cached"] is True and again["path"] == info["path"]
    assert again["seconds"] < 0.5 and wall < 3.0  # a cache hit: stats, no uv
    listed = cli("env", "list", "--json")
    assert any(
        e["path"] == info["path"] and e["lock"] == "quickstart" for e in json.loads(listed.stdout)
    )
    path = cli("env", "path", str(QUICKSTART))
    assert path.returncode == 0 and path.stdout.strip() == info["path"]


def test_exec_local_runs_a_command_in_the_environment(tmp_path: Path) -> None:
    code = "import sys, filelock; print(sys.prefix, filelock.__version__); sys.exit(3)"
    out = cli("exec", "--local", str(QUICKSTART), "--", "python", "-c", code)
    locked = next(p.version for p in CPU.packages if p.name == "filelock")
    assert out.returncode == 3, out.stderr  # the command's own exit code
    prefix, version = out.stdout.split()
    assert "/envs/cpu-" in prefix and version == locked
    missing = cli("exec", "--local", str(QUICKSTART), "--", "no-such-program")
    assert missing.returncode == 2 and "cannot run 'no-such-program'" in missing.stderr


def test_a_local_run_happens_inside_the_environment_with_the_agent(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("torchship.toml", "torchship.lock"):
        (proj / name).write_text((QUICKSTART / name).read_text())
    code = (
        "import importlib.metadata as m, json, sys, torchship.workload, filelock;"
        "names = {d.metadata['Name'].lower() for d in m.distributions()};"
        "print('JOB', json.dumps({'prefix': sys.prefix, 'filelock': filelock.__version__,"
        " 'torchship_dist': 'torchship' in names}))"
    )
    (proj / "job.toml").write_text(
        '[job]\nname = "where"\nprocesses_per_node = 1\n'
        f"command = ['python', '-c', {json.dumps(code)}]\n"
    )
    home = tmp_path / "home"
    out = cli("run", str(proj / "job.toml"), TORCHSHIP_HOME=str(home))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "environment cpu (" in out.stdout
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("JOB "))
    got = json.loads(line[4:])
    locked = next(p.version for p in CPU.packages if p.name == "filelock")
    assert "/envs/cpu-" in got["prefix"] and got["filelock"] == locked
    assert got["torchship_dist"] is False  # the agent rides along without being a package
    # --no-sync keeps the old behaviour: this Python, checked against the lock
    dry = cli("run", str(proj / "job.toml"), "--dry-run", "--no-sync", TORCHSHIP_HOME=str(home))
    assert sys.executable in dry.stdout
    assert not any(ln.startswith("environment ") for ln in dry.stdout.splitlines())


def test_a_spec_changed_since_the_lock_is_not_run(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "torchship.lock").write_text((QUICKSTART / "torchship.lock").read_text())
    spec = (QUICKSTART / "torchship.toml").read_text().replace('"numpy>=2",', '"numpy>=2", "tqdm",')
    (proj / "torchship.toml").write_text(spec)
    out = cli("sync", str(proj))
    assert out.returncode == 1 and "is out of date: packages" in out.stderr
    assert "torchship lock" in out.stderr.splitlines()[1]


# --- failures leave nothing half-built --------------------------------------------------------


def test_a_killed_sync_leaves_the_cache_usable(
    tmp_path: Path, small_packages: tuple[LockedPackage, ...]
) -> None:
    proj = project(tmp_path / "small", packages=small_packages)
    cache = tmp_path / "cache"
    env = {**os.environ, "TORCHSHIP_CACHE_DIR": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchship", "sync", str(proj)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((cache / "envs").glob(".tmp-cpu-*")):
        assert proc.poll() is None, "the sync ended before it could be killed"
        time.sleep(0.005)
    time.sleep(0.3)  # well inside uv's work: the venv exists, packages are going in
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert leftovers(cache), "a killed sync leaves its temporary folder"
    assert cli("env", "path", str(proj), cache=cache).returncode == 1  # not taken as synced
    again = cli("sync", str(proj), cache=cache)
    assert again.returncode == 0, again.stderr
    assert leftovers(cache) == []  # the next sync swept what the killed one left
    python = Path(again.stdout.strip()) / "bin/python"
    subprocess.run([str(python), "-c", "import numpy, six"], check=True, timeout=120)


def test_concurrent_syncs_build_once_and_agree(
    tmp_path: Path, small_packages: tuple[LockedPackage, ...]
) -> None:
    proj = project(tmp_path / "small", packages=small_packages)
    cache = tmp_path / "cache"
    env = {**os.environ, "TORCHSHIP_CACHE_DIR": str(cache)}
    argv = [sys.executable, "-m", "torchship", "sync", str(proj), "--json"]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    infos = [json.loads(out) for out, _ in results]
    assert len({i["path"] for i in infos}) == 1
    assert sorted(i["cached"] for i in infos) == [False, True, True]  # one built, two waited
    assert leftovers(cache) == []


def test_a_file_that_does_not_match_the_locked_hash_is_refused(
    tmp_path: Path, small_packages: tuple[LockedPackage, ...]
) -> None:
    wrong = tuple(
        dataclasses.replace(p, hashes=("sha256:" + "0" * 64,)) if p.name == "six" else p
        for p in small_packages
    )
    proj = project(tmp_path / "small", packages=wrong)
    cache = tmp_path / "cache"
    out = cli("sync", str(proj), cache=cache)
    assert out.returncode == 1
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert errors[0].startswith("error: six 1.17.0: the file found does not match the lock's hash")
    assert errors[1].startswith("hint: ") and len(errors) == 2
    assert "Traceback" not in out.stderr and leftovers(cache) == []
    assert not list((cache / "envs").glob("cpu-*"))


def test_an_unreachable_index_without_a_find_links_copy_names_torch(tmp_path: Path) -> None:
    proj = project(tmp_path / "p", index_url="http://127.0.0.1:9/whl/cpu")
    cache = tmp_path / "cache"
    out = cli("sync", str(proj), cache=cache, PIP_FIND_LINKS="")
    assert out.returncode == 1
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert errors == [
        "error: torch 2.13.0+cpu: its index http://127.0.0.1:9/whl/cpu cannot be reached "
        "(Connection refused (os error 111))",
        "hint: put torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl in a folder and "
        "pass --find-links DIR (or set PIP_FIND_LINKS)",
    ]
    assert leftovers(cache) == []


def test_an_environment_of_another_platform_is_refused(tmp_path: Path) -> None:
    """A lock across platforms synced on this (x86_64) machine: its aarch64 environment is
    refused naming the platform, before anything is built."""
    fleet = tmp_path / "fleet"
    shutil.copytree(REPO / "tests/data/locks/fleet", fleet)
    out = cli("sync", str(fleet), "--env", "linux-aarch64-cu130", cache=tmp_path / "cache")
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == (
        "error: environment linux-aarch64-cu130 of golden-fleet cannot be installed here: it is "
        "locked for aarch64-manylinux_2_28; this machine is x86_64"
    )
    assert out.stderr.splitlines()[1].startswith("hint: sync it on a linux-aarch64 machine")
    assert not (tmp_path / "cache/envs").exists()


def test_a_lock_whose_environment_was_moved_to_another_platform_is_refused_unread(
    tmp_path: Path,
) -> None:
    """The quickstart's cpu environment hand-edited to aarch64's platform: a schema 2 lock's
    environments are all linux-x86_64, so the lock itself is refused (exit 2)."""
    proj = project(tmp_path / "p", platform="aarch64-manylinux_2_28")
    out = cli("sync", str(proj), cache=tmp_path / "cache")
    assert out.returncode == 2
    assert "environments.cpu.platform: 'aarch64-manylinux_2_28' is not a platform of " \
        "linux-x86_64" in out.stderr.splitlines()[0]  # fmt: skip
    assert not (tmp_path / "cache/envs").exists()


# --- a newcomer's machine ---------------------------------------------------------------------


def test_readme_first_command_in_a_fresh_venv_whatever_pypi_released(tmp_path: Path) -> None:
    """`pip install . && torchship run examples/quickstart`, with other versions of the lock's
    packages in the outer venv (as a newer PyPI release would put there): the job runs in the
    synced environment, so nothing it sees changes."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
    done = subprocess.run(
        [*pip, str(REPO)], capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    locked = {p.name: p.version for p in CPU.packages}
    drift = subprocess.run(
        [*pip, "filelock!=" + locked["filelock"], "numpy!=" + locked["numpy"]],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert drift.returncode == 0, drift.stderr[-2000:]
    env = {
        **os.environ,
        "TORCHSHIP_HOME": str(tmp_path / "home"),
        "PATH": f"{venv}/bin:{os.environ['PATH']}",
    }
    project = tmp_path / "quickstart"  # a copy: the run writes its checkpoints beside job.toml
    shutil.copytree(QUICKSTART, project, ignore=shutil.ignore_patterns("checkpoints"))
    run = subprocess.run(
        ["torchship", "run", str(project)],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "succeeded on local://" in run.stdout and "preflight: 0 error(s)" in run.stdout
    code = "import filelock, numpy; print(filelock.__version__, numpy.__version__)"
    seen = subprocess.run(
        ["torchship", "exec", "--local", str(project), "--", "python", "-c", code],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )  # fmt: skip
    assert seen.stdout.split() == [locked["filelock"], locked["numpy"]]
    outer = subprocess.run(
        [str(venv / "bin/python"), "-c", code], capture_output=True, text=True, check=True
    )
    assert outer.stdout.split() != seen.stdout.split()  # the outer venv did drift


def test_a_dry_run_before_the_first_sync_builds_nothing_and_would_run(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = cli("run", str(QUICKSTART), "--dry-run", cache=cache, TORCHSHIP_HOME=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"environment cpu ({cache}/envs/cpu-{CPU.short_key})" in out.stdout
    assert "would run" in out.stdout and "torch-missing" not in out.stdout
    assert not (cache / "envs").exists()


def test_relock_keeps_pins_and_says_what_moved(tmp_path: Path) -> None:
    """Adding a package pulls in only what it needs; `--upgrade PKG` moves only that one."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "torchship.lock").write_text((QUICKSTART / "torchship.lock").read_text())
    spec = (QUICKSTART / "torchship.toml").read_text()
    (proj / "torchship.toml").write_text(spec.replace('"numpy>=2",', '"numpy>=2", "tqdm",'))
    out = cli("lock", str(proj))
    assert out.returncode == 0, out.stderr
    changes = out.stdout.split("changes since the previous lock: ", 1)[1].splitlines()
    assert changes[0] == "1" and changes[1].startswith("  + tqdm ")
    assert changes[1].endswith("(cu130, cpu)") and changes[2].startswith("wrote ")
    new = read_lock(proj / "torchship.lock")
    for env in LOCK.all_environments():
        now = {p.name: p.version for p in new.environment(env.name).packages}  # type: ignore[union-attr]
        assert {p.name: p.version for p in env.packages}.items() <= now.items()
    up = cli("lock", str(proj), "--upgrade", "filelock")
    assert up.returncode == 0, up.stderr
    moved = up.stdout.split("changes since the previous lock: ", 1)[1].splitlines()[1:-1]
    assert all(line.startswith("  filelock ") for line in moved), moved
