"""The docker site's pure parts: the exact engine command, the state mapping, the site's own
preflight against an engine answering like docker does (tests/integration/test_image_e2e.py
runs all of it for real on podman)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli
from tests.unit.test_doctor_checks import HEALTHY
from torchship.backends.docker import (
    DockerBackend,
    DockerOptions,
    Launch,
    container_state,
    engine_elsewhere,
    gpu_flags,
    refuse_remote_engine,
    run_argv,
    shm_size,
)
from torchship.backends.preflight import preflight
from torchship.cli.container import parse_data
from torchship.errors import UsageError
from torchship.lock import read_lock
from torchship.spec.job import JobSpec, job_from_table

LOCK = read_lock(REPO / "tests/data/locks/cpu/torchship.lock")
OPTS = DockerOptions(engine="docker", home=Path("/data/ts"), host="box", uid=1001, gid=1001)


def job(**kw: object) -> JobSpec:
    table = kw if "command" in kw else {"workload": "reference", **kw}
    return job_from_table(table, "/proj/job.toml", "proj")


def test_job_plan_is_the_exact_safe_command() -> None:
    spec = job(processes_per_node=2, memory_gib=8, cpus=4, max_runtime_minutes=5)
    r = DockerBackend(OPTS).plan(spec, LOCK, "j1")
    a = list(r.argv)
    assert a[:4] == ["docker", "run", "--detach", "--name"] and a[4] == "torchship-j1"
    for flag in (
        "--user",
        "1001:1001",  # the host user: files in mounts stay theirs
        "--security-opt=no-new-privileges",
        "--cap-drop=ALL",
        "--read-only",
        "--shm-size=4g",  # half the job's memory, not the engine's 64 MB
        "--memory=8g",
        "--cpus=4",
        "/data/ts/runs/j1:/torchship/run",
        "io.torchship.job-id=j1",
        f"io.torchship.lock-hash={LOCK.content_hash}",
    ):
        assert flag in a, flag
    image = a.index("golden-cpu:2.13.0-cpu-py3.11-fcae8cc6")
    assert a[image + 1 : image + 4] == ["timeout", "--kill-after=20", "300"]
    assert "--summary" in a and a[a.index("--summary") + 1] == "/torchship/run/summary.json"
    assert r.text.startswith("docker run --detach") and r.run_dir == "/data/ts/runs/j1"


def test_root_on_the_host_is_never_root_in_the_container() -> None:
    root = DockerOptions(engine="docker", home=Path("/h"), host="b", uid=0, gid=0)
    a = run_argv(root, Launch(image="i", name="n"))
    assert a[a.index("--user") + 1] == "1000:1000"


def test_data_is_read_only_unless_asked_and_commands_mount_the_project() -> None:
    spec = job(
        command=["python", "train.py"],
        data=[
            {"path": "/srv/corpus", "mount": "/data/corpus", "class": "internal"},
            {"path": "/srv/out", "mount": "/out", "read_only": False},
        ],
    )
    a = list(DockerBackend(OPTS).plan(spec, LOCK, "j2").argv)
    volumes = [a[i + 1] for i, x in enumerate(a) if x == "--volume"]
    assert "/srv/corpus:/data/corpus:ro" in volumes and "/srv/out:/out" in volumes
    assert "/proj:/workspace" in volumes
    assert a[-3:] == ["--no-python", "python", "train.py"]
    assert parse_data(f"{REPO}:/data") == (str(REPO), "/data", True)
    assert parse_data(f"{REPO}:/data:rw")[2] is False
    for bad in ("nocolon", f"{REPO}:relative", "/does/not/exist:/d"):
        with pytest.raises(UsageError):
            parse_data(bad)


def test_gpus_docker_and_podman() -> None:
    assert gpu_flags("docker", 0) == []
    assert gpu_flags("docker", -1) == ["--gpus", "all"]
    assert gpu_flags("docker", 2) == ["--gpus", '"device=0,1"']
    assert gpu_flags("podman", 2) == ["--device=nvidia.com/gpu=0", "--device=nvidia.com/gpu=1"]
    assert gpu_flags("podman", -1) == ["--device=nvidia.com/gpu=all"]
    assert [shm_size(None), shm_size(4), shm_size(1), shm_size(512)] == ["8g", "2g", "1g", "16g"]
    ipc = DockerOptions(engine="docker", home=Path("/h"), host="b", uid=5, gid=5, ipc_host=True)
    a = run_argv(ipc, Launch(image="i", name="n", ports=("127.0.0.1:8888:8888",)))
    assert "--ipc=host" in a and not any(x.startswith("--shm-size") for x in a)
    assert a[a.index("--publish") + 1] == "127.0.0.1:8888:8888"


def test_refusals() -> None:
    with pytest.raises(UsageError, match="runs one node"):
        DockerBackend(OPTS).plan(job(nodes=2), LOCK, "j")
    with pytest.raises(UsageError, match=r"no torchship\.lock"):
        DockerBackend(OPTS).plan(job(), None, "j")


@pytest.mark.parametrize(
    ("state", "want"),
    [
        ({"Status": "created"}, ("pending", None)),
        ({"Status": "running"}, ("running", None)),
        ({"Status": "exited", "ExitCode": 0}, ("succeeded", 0)),
        ({"Status": "exited", "ExitCode": 1}, ("failed", 1)),
        ({"Status": "exited", "ExitCode": 124}, ("failed", 124)),
        ({"Status": "exited", "ExitCode": 143}, ("cancelled", 143)),
        ({"Status": "exited", "ExitCode": 137, "OOMKilled": False}, ("cancelled", 137)),
        ({"Status": "exited", "ExitCode": 137, "OOMKilled": True}, ("failed", 137)),
        ({"Status": "weird"}, ("lost", None)),
    ],
)
def test_container_state(state: dict[str, Any], want: tuple[str, int | None]) -> None:
    st = container_state(state)
    assert (st.state, st.exit_code) == want


class Engine:
    """Answers like `docker image inspect|ps|inspect` for one image and one container."""

    def __init__(self, labels: dict[str, str] | None, state: dict[str, Any] | None) -> None:
        self.labels, self.state, self.calls = labels, state, list[list[str]]()

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        out, rc = "", 0
        if argv[1:3] == ["image", "inspect"]:
            out, rc = (json.dumps(self.labels), 0) if self.labels is not None else ("", 1)
        elif argv[1] == "ps":
            out = "c0ffee\n" if self.state else ""
        elif argv[1] == "inspect":
            out = json.dumps(self.state)
        return subprocess.CompletedProcess(argv, rc, out, "Error: no such image")


def test_site_preflight_image_built_from_this_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    ok = DockerBackend(OPTS, Engine({"io.torchship.lock-hash": LOCK.content_hash}, None))
    assert ok.site_findings(job(), LOCK) == []
    missing = DockerBackend(OPTS, Engine(None, None)).site_findings(job(), LOCK)
    assert [f.code for f in missing] == ["image-missing"] and "image build" in missing[0].fix
    other = DockerBackend(OPTS, Engine({"io.torchship.lock-hash": "sha256:0"}, None))
    assert [f.code for f in other.site_findings(job(), LOCK)] == ["image-not-from-lock"]


def test_status_finds_the_container_by_label() -> None:
    engine = Engine(None, {"Status": "exited", "ExitCode": 0})
    st = DockerBackend(OPTS, engine).status("docker://box/j9")
    assert st.state == "succeeded"
    assert engine.calls[0] == [
        "docker", "ps", "-a", "--filter", "label=io.torchship.job-id=j9", "--format", "{{.ID}}",
    ]  # fmt: skip
    assert DockerBackend(OPTS, Engine(None, None)).status("docker://box/j9").state == "lost"
    with pytest.raises(UsageError, match="not on this machine"):
        DockerBackend(OPTS, engine).status("docker://elsewhere/j9")


def test_cancel_marks_the_run_so_torchruns_exit_1_reads_as_cancelled(tmp_path: Path) -> None:
    o = dataclasses.replace(OPTS, home=tmp_path)
    engine = Engine(None, {"Status": "running"})
    DockerBackend(o, engine).cancel("docker://box/j7")
    assert engine.calls[-1] == ["docker", "stop", "--time", "20", "torchship-j7"]
    engine.state = {"Status": "exited", "ExitCode": 1}
    assert DockerBackend(o, engine).status("docker://box/j7").state == "cancelled"
    assert DockerBackend(o, engine).status("docker://box/j8").state == "failed"  # not asked


def test_preflight_in_a_container_ignores_this_environment() -> None:
    """No torch on the host and a foreign lock: irrelevant when the image runs the job."""
    bare = dataclasses.replace(HEALTHY, torch=None, torch_cuda=None)
    host = {f.code for f in preflight(job(), LOCK, bare)}
    assert "torch-missing" in host
    inside = {f.code for f in preflight(job(), LOCK, bare, containers=True)}
    assert "torch-missing" not in inside and "lock-mismatch" not in inside


# -- the engine is this machine's ------------------------------------------------------------
# A security review sent `DOCKER_HOST=ssh://… torchship run job.toml --site docker` to another
# machine's engine: the job, its bind mounts and its [job.env] secrets. The docker site is
# "this machine"; an engine elsewhere is refused before any engine command runs.

REMOTE = "ssh://ubuntu@gpu-vm.cloud.example"


def _context(config: Path, name: str, host: str) -> None:
    """A docker context as `docker context create` stores it: contexts/meta/<sha256(name)>/."""
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    endpoints = {"docker": {"Host": host, "SkipTLSVerify": False}}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": endpoints}))


@pytest.mark.parametrize(
    ("env", "current", "named"),
    [
        ({"DOCKER_HOST": REMOTE}, None, "DOCKER_HOST"),
        ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, None, "DOCKER_HOST"),
        ({"CONTAINER_HOST": REMOTE}, None, "CONTAINER_HOST"),
        ({"CONTAINER_CONNECTION": "gpu-vm"}, None, "CONTAINER_CONNECTION"),
        ({"DOCKER_CONTEXT": "gpu-vm"}, None, "DOCKER_CONTEXT"),
        ({"DOCKER_CONTEXT": "unknown"}, None, "DOCKER_CONTEXT"),  # a context we cannot read
        ({}, "gpu-vm", "currentContext"),
        ({"DOCKER_HOST": "unix:///d.sock", "CONTAINER_HOST": REMOTE}, None, "CONTAINER_HOST"),
    ],
)  # fmt: skip
def test_an_engine_on_another_machine_is_named(
    tmp_path: Path, env: dict[str, str], current: str | None, named: str
) -> None:
    _context(tmp_path, "gpu-vm", REMOTE)
    if current:
        (tmp_path / "config.json").write_text(json.dumps({"currentContext": current}))
    why = engine_elsewhere({**env, "DOCKER_CONFIG": str(tmp_path)})
    assert why is not None and why.startswith(named) and "\n" not in why


@pytest.mark.parametrize(
    ("env", "current"),
    [
        ({}, None),
        ({"DOCKER_HOST": ""}, None),
        ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, None),
        ({"CONTAINER_HOST": "unix:///run/user/1000/podman/podman.sock"}, None),
        ({}, "default"),
        ({"DOCKER_CONTEXT": "rootless"}, None),  # rootless docker: a context on a local socket
        ({}, "rootless"),
        ({"DOCKER_HOST": "unix:///run/docker.sock"}, "gpu-vm"),  # DOCKER_HOST wins, as in docker
    ],
)  # fmt: skip
def test_this_machines_engine_is_taken(
    tmp_path: Path, env: dict[str, str], current: str | None
) -> None:
    _context(tmp_path, "gpu-vm", REMOTE)
    _context(tmp_path, "rootless", "unix:///run/user/1000/docker.sock")
    if current:
        (tmp_path / "config.json").write_text(json.dumps({"currentContext": current}))
    assert engine_elsewhere({**env, "DOCKER_CONFIG": str(tmp_path)}) is None


def test_engine_args_cannot_point_the_engine_elsewhere(tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path)}
    for args in (["--url=ssh://me@vm"], ["--remote"], ["-H", "ssh://vm"], ["--context", "vm"]):
        with pytest.raises(UsageError, match="TORCHSHIP_ENGINE_ARGS"):
            refuse_remote_engine(env, args)
    refuse_remote_engine(env, ["--runtime=runc", "--pull=never"])  # run's own flags are fine
    (tmp_path / "contexts").mkdir()  # a context whose meta is not JSON of the expected shape
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"odd").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text('{"Endpoints": ["docker"]}')
    assert "cannot read" in (engine_elsewhere({**env, "DOCKER_CONTEXT": "odd"}) or "")


def _project(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A job with a secret and a bind mount, its lock, and a fake `docker` on PATH that records
    every call and answers like an engine holding the project's image."""
    proj, bin_dir, calls = tmp_path / "p", tmp_path / "bin", tmp_path / "calls"
    proj.mkdir()
    bin_dir.mkdir()
    (proj / "torchship.lock").write_text((REPO / "tests/data/locks/cpu/torchship.lock").read_text())
    (proj / "job.toml").write_text(
        '[job]\nname = "patients"\ncommand = ["python", "train.py"]\ngpus_per_node = 0\n'
        '[job.env]\nDB_PASSWORD = "s3cret"\n'
        f'[[job.data]]\npath = "{tmp_path}"\nclass = "sensitive"\n'
    )
    labels = json.dumps({"io.torchship.lock-hash": LOCK.content_hash})
    docker = bin_dir / "docker"
    docker.write_text(
        f'#!/bin/sh\necho "$* [DOCKER_HOST=$DOCKER_HOST]" >> {calls}\n'
        f"case \"$1\" in\n  version) echo 27.0.0;;\n  image) echo '{labels}';;\n"
        "  run) echo cafe;;\nesac\n"
    )
    docker.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TORCHSHIP_HOME": str(tmp_path / "home"),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "TORCHSHIP_ENGINE": "",
    }
    return proj, calls, env


def test_a_remote_docker_host_gets_nothing_of_the_job(tmp_path: Path) -> None:
    proj, calls, env = _project(tmp_path)
    for name in ("DOCKER_HOST", "CONTAINER_HOST", "DOCKER_CONTEXT", "CONTAINER_CONNECTION"):
        env[name] = ""  # this test's engine only, whatever the machine running it has set
    here = run_cli("run", "job.toml", "--site", "docker", "--detach", cwd=proj, env=env)
    assert here.returncode == 0, here.stderr  # the fake engine, on this machine, runs it
    assert "DB_PASSWORD=s3cret" in calls.read_text()
    calls.unlink()
    env["DOCKER_HOST"] = REMOTE
    away = run_cli("run", "job.toml", "--site", "docker", "--detach", "--key", "k2", cwd=proj,
                   env=env)  # fmt: skip
    lines = away.stderr.strip().splitlines()
    assert away.returncode == 2 and len(lines) == 2, away.stderr
    assert lines[0].startswith("error: ") and "DOCKER_HOST" in lines[0] and "gpu-vm" in lines[0]
    assert lines[1].startswith("hint: ") and "Kubernetes" in lines[1]
    assert not calls.exists()  # not even `docker version` reached it
