"""`torchship exec --local` from its memo (torchship.env.memo): the second start with the same
inputs runs the command without loading the lock model, with the same argv and environment as a
full start, and any change it cannot see past (a byte of the project's files, another --env, a
package installed by hand, another driver, a broken memo) is a full start again. The synced
environment here is a stand-in with the lock's distributions (no uv): what `cached()` checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from torchship.env import memo
from torchship.env.places import MARKER
from torchship.lock import read_lock

QUICKSTART = REPO / "examples/quickstart"
LOCK = read_lock(QUICKSTART / "torchship.lock")
# A start, with os.execvpe replaced: what it would run, and whether the lock model was loaded.
CHILD = """
import json, os, sys
def execvpe(file, argv, env):
    keep = ("VIRTUAL_ENV", "PATH", "TORCHSHIP_AGENT_PATH", "PYTHONPATH")
    print(json.dumps({"argv": argv, "env": {k: env.get(k) for k in keep},
                      "model": "torchship.lock.model" in sys.modules}))
    sys.exit(0)
os.execvpe = execvpe
from torchship.cli import main
sys.exit(main(sys.argv[1:]))
"""


def fake_env(cache: Path, name: str = "cpu") -> Path:
    """The environment a sync of the quickstart's `name` would leave, its distributions as
    dist-info folders and its interpreter this one."""
    env = LOCK.environment(name)
    assert env is not None
    venv = cache / "envs" / f"{env.name}-{env.short_key}"
    site = venv / "lib/python3.11/site-packages"
    site.mkdir(parents=True)
    for p in env.packages:
        (site / f"{p.name.replace('-', '_')}-{p.version}.dist-info").mkdir()
    (venv / "bin").mkdir()
    (venv / "bin/python").symlink_to(sys.executable)
    (venv / MARKER).write_text(json.dumps({"env": env.name, "lock": LOCK.name}))
    return venv


def _keeps_memos() -> str:
    """Why this machine keeps no exec memo (macOS, a driver only NVML or nvidia-smi shows), or
    "": there every start is a full one, which the other tests of exec check."""
    try:
        memo.inputs(".", None, [])
    except memo.NoMemo as e:
        return f"this machine keeps no exec memo ({e})"
    return ""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    why = _keeps_memos()
    if why:
        pytest.skip(why)
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("torchship.toml", "torchship.lock"):
        shutil.copy(QUICKSTART / name, proj / name)
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    for env in LOCK.all_environments():  # whichever this machine picks (cu130 on a GPU host)
        fake_env(tmp_path / "cache", env.name)
    return proj


def saved_key(project: Path) -> str:
    """The inputs' digest the child start wrote (its sys.path is not this test's)."""
    return str(json.loads(memo.memo_path(str(project), None).read_text())["inputs"])


def start(project: Path, *extra: str) -> dict[str, object]:
    argv = [sys.executable, "-c", CHILD, "exec", "--local", *extra, str(project)]
    argv += ["--", "python", "-c", "pass"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_the_second_start_comes_from_the_memo_and_runs_the_same(project: Path) -> None:
    first = start(project)
    assert first["model"] is True  # the full start
    second = start(project)
    assert second["model"] is False  # from the memo: no lock model, no matrix, no probe
    assert second["argv"] == first["argv"] and second["env"] == first["env"]
    assert str(second["argv"][0]).endswith("/bin/python")  # type: ignore[index]
    assert start(project)["model"] is False


def test_a_changed_byte_of_the_spec_or_the_lock_is_a_full_start(project: Path) -> None:
    start(project)
    spec = project / "torchship.toml"
    spec.write_text(spec.read_text() + "# a comment\n")
    assert start(project)["model"] is True
    assert start(project)["model"] is False  # remembered again
    lock = project / "torchship.lock"
    lock.write_text(lock.read_text() + "\n")
    assert start(project)["model"] is True


def test_a_spec_moved_past_its_lock_is_caught_after_a_memo(project: Path) -> None:
    start(project)
    spec = project / "torchship.toml"
    spec.write_text(spec.read_text().replace('torch = "2.13.0"', 'torch = "2.12.0"'))
    argv = [sys.executable, "-c", CHILD, "exec", "--local", str(project), "--", "python"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0 and out.stdout == ""  # nothing run
    assert "torchship lock" in out.stderr


def test_a_spec_file_that_appears_beside_the_lock_is_a_full_start(project: Path) -> None:
    start(project)
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert start(project)["model"] is True


def test_another_env_flag_has_its_own_memo(project: Path) -> None:
    start(project)
    assert start(project, "--env", "cpu")["model"] is True
    assert start(project, "--env", "cpu")["model"] is False
    assert start(project)["model"] is False


def test_a_package_installed_by_hand_is_not_taken_from_the_memo(project: Path) -> None:
    start(project)
    key = saved_key(project)
    assert memo.remembered(str(project), None, key) is not None
    venv = Path(json.loads(memo.memo_path(str(project), None).read_text())["venv"])
    (venv / "lib/python3.11/site-packages/requests-2.0.0.dist-info").mkdir()
    assert memo.remembered(str(project), None, key) is None  # the full start rebuilds it


def test_the_memo_holds_the_environment_to_the_locks_distributions(project: Path) -> None:
    # not to what the folder held when the memo was written: a package landing in it during
    # the full start would otherwise be accepted by every later start
    start(project)
    saved = json.loads(memo.memo_path(str(project), None).read_text())
    env = LOCK.environment(saved["env"])
    assert env is not None
    assert saved["packages"] == {p.name: p.version for p in env.packages}


def test_an_environment_or_agent_gone_since_is_not_taken(project: Path) -> None:
    start(project)
    key = saved_key(project)
    saved = json.loads(memo.memo_path(str(project), None).read_text())
    shutil.rmtree(saved["agent"])
    assert memo.remembered(str(project), None, key) is None
    start(project)  # the full start makes the agent again
    (Path(saved["venv"]) / MARKER).unlink()
    assert memo.remembered(str(project), None, key) is None


def test_a_memo_pointing_outside_torchships_folders_is_not_taken(
    project: Path, tmp_path: Path
) -> None:
    start(project)
    key = saved_key(project)
    path = memo.memo_path(str(project), None)
    saved = json.loads(path.read_text())
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(saved["venv"], elsewhere, symlinks=True)
    path.write_text(json.dumps({**saved, "venv": str(elsewhere)}))
    assert memo.remembered(str(project), None, key) is None


def test_a_broken_memo_is_a_full_start(project: Path) -> None:
    start(project)
    key = saved_key(project)
    path = memo.memo_path(str(project), None)
    for text in ("", "{", "[]", '{"inputs": 1}', "\x00" * 10, json.dumps({"inputs": key})):
        path.write_text(text)
        assert memo.remembered(str(project), None, key) is None, text
    assert start(project)["model"] is True  # and it writes a good one
    assert start(project)["model"] is False


def test_the_driver_and_gpu_files_are_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no nvidia-smi, whatever this host has
    proj = tmp_path / "p"
    proj.mkdir()
    host = tmp_path / "host"
    none = memo.inputs(str(proj), None, [], str(host))
    (host / "sys/module/nvidia").mkdir(parents=True)
    (host / "sys/module/nvidia/version").write_text("580.95.05\n")
    with pytest.raises(memo.NoMemo):  # a driver whose GPUs only nvidia-smi names
        memo.inputs(str(proj), None, [], str(host))
    gpu = host / "proc/driver/nvidia/gpus/0000:18:00.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text("Model: \t\t NVIDIA H200\n")
    h200 = memo.inputs(str(proj), None, [], str(host))
    (host / "sys/module/nvidia/version").write_text("590.10.01\n")
    upgraded = memo.inputs(str(proj), None, [], str(host))
    assert len({none, h200, upgraded}) == 3


def test_an_unreadable_project_file_is_never_remembered(tmp_path: Path) -> None:
    if _keeps_memos():
        pytest.skip(_keeps_memos())
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "torchship.lock").mkdir()  # a folder where the lock would be: no digest, no error
    assert memo.inputs(str(proj), None, [])
    if os.geteuid() != 0:  # root reads any file
        (proj / "torchship.toml").write_text("")
        (proj / "torchship.toml").chmod(0)
        with pytest.raises(memo.NoMemo):
            memo.inputs(str(proj), None, [])


def test_a_driver_the_files_do_not_show_is_never_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WSL2 (/dev/dxg), or a container with nvidia-smi and no /sys/module/nvidia: the full
    start asks NVML or nvidia-smi, whose answer the files cannot vouch for next time."""
    proj, host = tmp_path / "p", tmp_path / "host"
    proj.mkdir()
    (host / "dev").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert memo.inputs(str(proj), None, [], str(host))  # no driver anywhere: remembered
    (host / "dev/dxg").write_text("")
    with pytest.raises(memo.NoMemo):
        memo.inputs(str(proj), None, [], str(host))
    (host / "dev/dxg").unlink()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/nvidia-smi").write_text("#!/bin/sh\n")
    (tmp_path / "bin/nvidia-smi").chmod(0o755)
    with pytest.raises(memo.NoMemo):
        memo.inputs(str(proj), None, [], str(host))


def test_what_else_the_full_start_depends_on_is_an_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _keeps_memos():
        pytest.skip(_keeps_memos())
    proj = tmp_path / "proj"
    proj.mkdir()
    link = tmp_path / "current"
    link.symlink_to(proj)
    before = memo.inputs(str(link), None, [])
    other = tmp_path / "release-2"  # the same bytes, another folder: a spec's default name
    shutil.copytree(proj, other)
    link.unlink()
    link.symlink_to(other)
    assert memo.inputs(str(link), None, []) != before
    with pytest.raises(memo.NoMemo):  # the OS follows a link before `..`: never by text
        memo.inputs(str(link / ".."), None, [])
    here = memo.inputs(str(proj), None, [])
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])  # the agent's packages
    assert memo.inputs(str(proj), None, []) != here


def test_torchship_edited_in_place_is_another_torchship(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "torchship"
    (pkg / "env").mkdir(parents=True)
    (pkg / "env/memo.py").write_text("")
    (pkg / "compat/data").mkdir(parents=True)
    (pkg / "compat/data/matrix.json").write_text("{}")
    monkeypatch.setattr(memo, "__file__", str(pkg / "env/memo.py"))
    first = memo._torchship()
    assert first == memo._torchship()
    (pkg / "compat/data/matrix.json").write_text('{"a": 1}')  # same version, a new matrix
    assert memo._torchship() != first


def test_a_project_path_that_is_not_utf8_is_remembered_without_error(project: Path) -> None:
    odd = project.parent / os.fsdecode(b"caf\xe9")
    project.rename(odd)
    assert start(odd)["model"] is True
    assert start(odd)["model"] is False


def test_env_prune_removes_the_memos_of_environments_it_removed(project: Path) -> None:
    from torchship.env.sync import prune

    start(project)
    path = memo.memo_path(str(project), None)
    prune(older_than_s=1e9)  # nothing old enough: the memo stays
    assert path.exists()
    assert prune(all_envs=True)
    assert not path.exists()
