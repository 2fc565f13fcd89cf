"""uv started early (issue 20): `torchship lock` starts the primary environment's uv call before
it loads the lock model, and a failure of its own while uv runs stops uv and writes nothing.

uv is a stand-in script here that logs its call and answers with a real uv output
(tests/data/uv/compile-x86_64-manylinux_2_28-2.13.0+cpu.txt, uv 0.13.9 against PyPI); the
real uv runs in tests/integration/test_lock_real.py.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import tomli_w

import torchship.lock
import torchship.lock.model
import torchship.lock.uv
from tests.conftest import REPO
from torchship.cli import main
from torchship.errors import LockError
from torchship.lock import lock_fleet, write_lock
from torchship.lock.plan import CompilePlan
from torchship.lock.uv import UvCall
from torchship.spec import load_spec

ANSWER = REPO / "tests/data/uv/compile-x86_64-manylinux_2_28-2.13.0+cpu.txt"
SPEC = 'torch = "2.13.0"\ncuda = "cpu"\npython = "3.11"\npackages = ["numpy", "tqdm"]\n'
WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"

# Logs its argv and stdin, waits FAKE_UV_SLEEP seconds, then answers as uv does: on stdout, or
# in the --output-file when one is named (uv keeps the pins there).
FAKE_UV = """#!{python}
import json, os, sys, time
argv = sys.argv[1:]
stdin = sys.stdin.read()
given = open(argv[argv.index("--output-file") + 1]).read() if "--output-file" in argv else None
with open(os.environ["FAKE_UV_LOG"], "a") as f:
    f.write(json.dumps({{"argv": argv, "stdin": stdin, "pins": given}}) + "\\n")
time.sleep(float(os.environ.get("FAKE_UV_SLEEP", "0")))
answer = open(os.environ["FAKE_UV_ANSWER"]).read().split("\\n", 1)[1]
if "--output-file" in argv:
    open(argv[argv.index("--output-file") + 1], "w").write(answer)
else:
    sys.stdout.write(answer)
"""


@pytest.fixture
def fake_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    uv = tmp_path / "fake-uv"
    uv.write_text(FAKE_UV.format(python=sys.executable))
    uv.chmod(0o755)
    monkeypatch.setenv("FAKE_UV_LOG", str(tmp_path / "uv.log"))
    monkeypatch.setenv("FAKE_UV_ANSWER", str(ANSWER))
    monkeypatch.setenv("PIP_FIND_LINKS", "")  # the folder below alone holds torch's wheel
    monkeypatch.setattr(torchship.lock.uv, "find_uv", lambda: str(uv))
    return uv


def _project(tmp_path: Path) -> tuple[Path, Path]:
    project, wheels = tmp_path / "proj", tmp_path / "wheels"
    project.mkdir()
    wheels.mkdir()
    (project / "torchship.toml").write_text(SPEC)
    (wheels / WHEEL).write_bytes(b"")
    return project, wheels


@pytest.fixture
def uv_started(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[str]]:
    """Every uv process torchship starts, as it started it."""
    started: list[subprocess.Popen[str]] = []
    popen = torchship.lock.uv._popen

    def watched(argv: Sequence[str], extra: Mapping[str, str]) -> subprocess.Popen[str]:
        started.append(popen(argv, extra))
        return started[-1]

    monkeypatch.setattr(torchship.lock.uv, "_popen", watched)
    return started


def _as_replayed(tmp_path: Path, project: Path, wheels: Path, previous: Any = None) -> None:
    """The project's lock is byte for byte what the same uv answer makes through the runner
    seam."""
    lock, _ = lock_fleet(load_spec(project), [str(wheels)], runner=_replay, previous=previous)
    write_lock(lock, tmp_path / "replayed.lock")
    assert (project / "torchship.lock").read_bytes() == (tmp_path / "replayed.lock").read_bytes()


def _calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "uv.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _replay(
    argv: Sequence[str], stdin: str, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(list(argv), 0, ANSWER.read_text().split("\n", 1)[1], "")


def test_uv_starts_before_the_lock_model_loads_and_the_lock_is_the_same(
    tmp_path: Path, fake_uv: Path
) -> None:
    project, wheels = _project(tmp_path)
    child = f"""
import subprocess, sys
import torchship.lock.uv
torchship.lock.uv.find_uv = lambda: {str(fake_uv)!r}
loaded = []
class Watched(subprocess.Popen):
    def __init__(self, *a, **k):
        loaded.append([m in sys.modules for m in ("torchship.lock.model",
                                                  "packaging.requirements")])
        super().__init__(*a, **k)
subprocess.Popen = Watched
from torchship.cli import main
code = main(["lock", {str(project)!r}, "--find-links", {str(wheels)!r}])
print("model, PEP 508 parser loaded at uv's start:", loaded)
sys.exit(code)
"""
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    # the spec's packages are plain requirements: read without packaging's parser (~30 ms)
    assert "model, PEP 508 parser loaded at uv's start: [[False, False]]" in out.stdout
    [call] = _calls(tmp_path)
    assert call["stdin"] == "torch===2.13.0+cpu\nnumpy\ntqdm\n"
    _as_replayed(tmp_path, project, wheels)


def test_a_failure_while_uv_runs_stops_uv_and_writes_nothing(
    tmp_path: Path,
    fake_uv: Path,
    uv_started: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project, wheels = _project(tmp_path)
    monkeypatch.setenv("FAKE_UV_SLEEP", "60")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))

    def fails(*args: object) -> None:
        raise LockError("torch 2.13.0 has no CPU build to lock a cpu environment from", "a hint")

    monkeypatch.setattr(torchship.lock, "_secondary_envs", fails)
    begun = time.monotonic()
    code = main(["lock", str(project), "--find-links", str(wheels)])
    assert code == 1 and time.monotonic() - begun < 30  # not the 60 s uv would take
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: torch 2.13.0 has no CPU build to lock a cpu environment from",
                   "hint: a hint"]  # fmt: skip
    [proc] = uv_started
    assert proc.returncode == -9  # killed, and reaped
    assert not (project / "torchship.lock").exists()
    assert not list((tmp_path / "tmp").iterdir())  # the call's files are gone too
    assert gc.isenabled() and gc.get_freeze_count() == 0  # this process's collector as it was


def _plan(**extra: tuple[str, ...]) -> CompilePlan:
    """The CPU environment's uv call, with `extra` (constraints, previous pins)."""
    return CompilePlan(
        requirements=("torch===2.13.0+cpu", "numpy"),
        python_version="3.11",
        platform="x86_64-manylinux_2_28",
        index_url="https://pypi.org/simple",
        extra_index_url=None,
        find_links=(),
        expected_torch="2.13.0+cpu",
        **extra,
    )


def test_uvs_answer_in_the_output_file_when_previous_pins_are_kept(
    tmp_path: Path, fake_uv: Path
) -> None:
    plan = _plan(preferences=("numpy==2.3.5",))
    code, text, _ = UvCall(plan).result()
    assert code == 0 and text == ANSWER.read_text().split("\n", 1)[1]
    [call] = _calls(tmp_path)
    assert call["stdin"] == plan.stdin and "--output-file" in call["argv"]
    previous = call["argv"][call["argv"].index("--output-file") + 1]
    assert not Path(previous).exists()  # removed once answered


def test_uvs_files_are_in_a_private_folder_of_tmpdir_removed_when_answered_or_killed(
    tmp_path: Path, fake_uv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    plan = _plan(constraints=("tqdm==4.67.1",), preferences=("numpy==2.3.5",))
    monkeypatch.setenv("FAKE_UV_SLEEP", "60")
    call = UvCall(plan)
    [folder] = scratch.iterdir()
    assert folder.name.startswith("torchship-lock-") and folder.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["constraints.txt", "previous.txt"]
    assert (folder / "constraints.txt").read_text() == "tqdm==4.67.1\n"
    call.kill()
    assert not list(scratch.iterdir())
    monkeypatch.setenv("FAKE_UV_SLEEP", "0")
    code, text, _ = UvCall(plan).result()
    assert code == 0 and text and not list(scratch.iterdir())


def test_a_missing_tmpdir_falls_back_as_tempfile_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchship._atomic import remove_scratch, scratch_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path / "gone"))
    monkeypatch.setenv("TEMP", str(tmp_path))
    folder = scratch_dir("torchship-lock-")
    assert folder.parent == tmp_path and folder.is_dir()
    (folder / "a").write_text("x")
    (folder / "b").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").write_text("kept")
    remove_scratch(folder)
    assert not folder.exists() and (tmp_path / "outside").read_text() == "kept"
    monkeypatch.delenv("TEMP")
    monkeypatch.delenv("TMP", raising=False)
    folder = scratch_dir("torchship-lock-")  # none of the variables names a folder: /tmp
    assert folder.parent == Path("/tmp") and folder.stat().st_mode & 0o777 == 0o700
    remove_scratch(folder)
    assert not folder.exists()


def test_uvs_folder_swapped_for_a_link_is_left_and_its_target_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a shared $TMPDIR another user may rename the folder and plant a link in its place
    before it is removed: the link's target keeps its files (as shutil.rmtree refuses a link)."""
    from torchship._atomic import remove_scratch, scratch_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("kept")
    folder = scratch_dir("torchship-lock-")
    (folder / "previous.txt").write_text("numpy==2.3.5\n")
    folder.rename(tmp_path / "moved")
    folder.symlink_to(victim)
    remove_scratch(folder)
    assert (victim / "data.txt").read_text() == "kept" and folder.is_symlink()
    remove_scratch(tmp_path / "moved")  # its own folder, where it now is: emptied and removed
    assert not (tmp_path / "moved").exists()


def test_a_lock_over_its_previous_one_starts_uv_without_tempfile_or_shutil(
    tmp_path: Path, fake_uv: Path
) -> None:
    """Locking again keeps the previous pins in uv's files: made without tempfile, its
    `random` and shutil (~6 ms before uv could start, issue 20)."""
    project, wheels = _project(tmp_path)
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    child = f"""
import subprocess, sys
import torchship.lock.uv
torchship.lock.uv.find_uv = lambda: {str(fake_uv)!r}
loaded = []
class Watched(subprocess.Popen):
    def __init__(self, *a, **k):
        loaded.append(sorted(m for m in ("tempfile", "shutil", "random") if m in sys.modules))
        super().__init__(*a, **k)
subprocess.Popen = Watched
from torchship.cli import main
code = main(["lock", {str(project)!r}, "--find-links", {str(wheels)!r}])
print("loaded at uv's start:", loaded[0])
sys.exit(code)
"""
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "loaded at uv's start: []" in out.stdout
    assert _calls(tmp_path)[-1]["pins"]  # it was given the previous pins


def test_the_lock_package_loads_without_its_model() -> None:
    code = "import sys, torchship.lock.plan, torchship.lock.uv; print(sorted(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "'torchship.lock.model'" not in out.stdout
    assert "'torchship.lock.validate'" not in out.stdout


def test_uvs_side_by_side_run_the_installed_uv_not_one_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several environments are locked at once through Group.run, which used to start "uv" as
    found on PATH: a venv's torchship run without activating the venv failed with
    FileNotFoundError. It runs the uv torchship finds (the uv package's binary)."""
    monkeypatch.setenv("PATH", "/nonexistent")
    answer = torchship.lock.uv.Group().run(["uv", "--version"], "", {})
    assert answer.returncode == 0 and answer.stdout.startswith("uv "), answer
    assert answer.args[0] == torchship.lock.uv.find_uv() != "uv"


def test_find_uv_answers_as_the_uv_package_does_without_importing_it() -> None:
    """In a virtual environment the uv beside this Python is found without importing the uv
    package and sysconfig (~5 ms before `torchship lock` starts uv): the same binary."""
    child = (
        "import sys; from torchship.lock.uv import find_uv; found = find_uv(); "
        "print('uv' in sys.modules, 'sysconfig' in sys.modules); "
        "from uv import find_uv_bin; print(found == str(find_uv_bin()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=True
    )
    if sys.prefix == sys.base_prefix:
        pytest.skip("not in a virtual environment: find_uv asks the uv package")
    assert out.stdout.split() == ["False", "False", "True"], out.stdout


def test_a_folder_named_by_flag_and_pip_find_links_is_passed_to_uv_once(
    tmp_path: Path, fake_uv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, wheels = _project(tmp_path)
    monkeypatch.setenv("PIP_FIND_LINKS", f"{wheels} {wheels}")
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    [call] = _calls(tmp_path)
    assert call["argv"].count("--find-links") == 1, call["argv"]


_RELOCK_CHILD = """
import subprocess, sys
import torchship.lock.uv
torchship.lock.uv.find_uv = lambda: {uv!r}
loaded = []
class Watched(subprocess.Popen):
    def __init__(self, *a, **k):
        loaded.append("torchship.lock.model" in sys.modules)
        super().__init__(*a, **k)
subprocess.Popen = Watched
from torchship.cli import main
code = main(["lock", {project!r}, "--find-links", {wheels!r}])
print("model loaded at uv's starts:", loaded)
sys.exit(code)
"""


def _relock(tmp_path: Path, fake_uv: Path, project: Path, wheels: Path) -> Any:
    child = _RELOCK_CHILD.format(uv=str(fake_uv), project=str(project), wheels=str(wheels))
    return subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_relock_starts_uv_with_the_previous_pins_before_the_lock_is_checked(
    tmp_path: Path, fake_uv: Path
) -> None:
    """Locking over a lock keeps its pins; they are read from its TOML, unchecked, so that uv
    starts before the lock model loads (~60 ms, issue 20), and the lock checked meanwhile
    keeps the same pins: one uv call, and the lock the checked previous lock makes."""
    project, wheels = _project(tmp_path)
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    first = (project / "torchship.lock").read_bytes()
    out = _relock(tmp_path, fake_uv, project, wheels)
    assert out.returncode == 0, out.stderr
    assert "model loaded at uv's starts: [False]" in out.stdout
    assert "changes since the previous lock: none" in out.stdout and "note:" not in out.stderr
    fresh, again = _calls(tmp_path)
    assert "--output-file" not in fresh["argv"] and "--output-file" in again["argv"]
    previous = torchship.lock.read_lock(project / "torchship.lock")
    assert (project / "torchship.lock").read_bytes() == first
    _as_replayed(tmp_path, project, wheels, previous)


def test_a_previous_lock_that_fails_its_check_is_dropped_and_uv_starts_again(
    tmp_path: Path,
    fake_uv: Path,
    uv_started: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its pins read well, but the lock was edited (its content hash no longer matches): uv,
    started with those pins, is stopped and started again without them, as if no lock were
    there, and the note says why."""
    project, wheels = _project(tmp_path)
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    uv_started.clear()  # the lock to lock over made, what follows is watched
    fresh = (project / "torchship.lock").read_bytes()
    lock_file = project / "torchship.lock"
    text = lock_file.read_text()
    at = text.index("[[package]]")
    lock_file.write_text(text[:at] + text[at:].replace('\nversion = "', '\nversion = "0', 1))
    monkeypatch.setenv("FAKE_UV_SLEEP", "0.5")  # still resolving when the check fails
    capsys.readouterr()
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    out = capsys.readouterr()
    assert "note: the previous lock is not used (" in out.err and "content_hash" in out.err
    assert "changes since the previous lock" not in out.out
    guessed, again = uv_started
    assert "--output-file" in guessed.args and "--output-file" not in again.args  # type: ignore[operator]
    assert guessed.returncode == -9  # stopped, and reaped
    assert lock_file.read_bytes() == fresh  # what locking afresh makes


@pytest.mark.parametrize("damage", ["not toml [", "schema_version = 2\n"])
def test_a_previous_lock_that_cannot_be_read_keeps_no_pins(
    tmp_path: Path, fake_uv: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project, wheels = _project(tmp_path)
    (project / "torchship.lock").write_text(damage)
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    assert "note: the previous lock is not used (" in capsys.readouterr().err
    [call] = _calls(tmp_path)
    assert "--output-file" not in call["argv"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "numpy\n--index-url https://evil.example/simple"),
     ("version", "2.3.5 --extra-index-url https://evil.example/simple"),
     ("version", "2.3.5; python_version > '0'"), ("name", "numpy @ https://evil.example/x.whl")],
)  # fmt: skip
def test_a_hostile_previous_pin_never_reaches_uv_unchecked(
    tmp_path: Path,
    fake_uv: Path,
    field: str,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The pins uv starts with are read before the lock is checked, so each is held to a name
    and a version there: a lock edited to smuggle an option or a URL into uv's files keeps no
    pins at all, and the check then drops the lock."""
    project, wheels = _project(tmp_path)
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    lock_file = project / "torchship.lock"
    data = tomllib.loads(lock_file.read_text())
    data["package"][0][field] = value
    lock_file.write_text(tomli_w.dumps(data))
    given: list[str] = []  # every uv started: its command line and the files it is given
    popen = torchship.lock.uv._popen

    def watched(argv: Sequence[str], extra: Mapping[str, str]) -> subprocess.Popen[str]:
        files = [Path(argv[i + 1]).read_text() for i, a in enumerate(argv) if a.endswith("-file")]
        given.append(" ".join([*argv, *files]))
        return popen(argv, extra)

    monkeypatch.setattr(torchship.lock.uv, "_popen", watched)
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    assert "note: the previous lock is not used (" in capsys.readouterr().err
    assert len(given) == 1 and "--output-file" not in given[0]
    assert "evil" not in given[0]


REPO_LOCKS = sorted(
    [*REPO.glob("tests/data/locks/*/torchship.lock"), *REPO.glob("examples/*/torchship.lock")]
)


@pytest.mark.parametrize("path", REPO_LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_the_pins_read_unchecked_are_those_of_the_checked_lock(path: Path) -> None:
    """Every lock of this repository (schemas 2 and 3, one to four environments, other
    platforms): the pins read from its TOML alone, environment by environment and in the same
    order, are the checked lock's, so a valid previous lock never restarts uv."""
    previous = torchship.lock.PreviousLock(path)
    lock = previous.lock()
    assert lock is not None and previous.problem is None
    checked = {e.name: tuple(p.pin for p in e.packages if p.name != "torch")
               for e in lock.all_environments()}  # fmt: skip
    assert previous.pins is not None
    assert list(previous.pins.items()) == list(checked.items())


def test_an_interrupt_while_the_previous_lock_is_checked_says_only_that(
    tmp_path: Path,
    fake_uv: Path,
    uv_started: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """^C while the previous lock is checked (uv running): uv is stopped, nothing is written,
    and no note blames a lock that was never found wanting."""
    project, wheels = _project(tmp_path)
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 0
    uv_started.clear()  # the lock to lock over made, what follows is watched
    before = (project / "torchship.lock").read_bytes()
    monkeypatch.setenv("FAKE_UV_SLEEP", "30")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(torchship.lock.model, "lock_from_toml", interrupted)
    capsys.readouterr()
    assert main(["lock", str(project), "--find-links", str(wheels)]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    [proc] = uv_started
    assert proc.returncode == -9
    assert (project / "torchship.lock").read_bytes() == before


def test_a_venvs_uv_that_cannot_run_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "uv").write_text("")  # not executable
    # nor through the uv package's find_uv_bin, which takes any file named uv: where sysconfig
    # is first asked after this prefix is set (this file run alone), it names this one
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert torchship.lock.uv.find_uv() != str(tmp_path / "bin" / "uv")
