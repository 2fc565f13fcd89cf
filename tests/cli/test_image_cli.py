"""`torchship image render|build` as a user runs them (no engine is needed for these)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from torchship.errors import UsageError
from torchship.image.build import BuildError, build, build_argv, detect_engine

GOLDEN = REPO / "tests/golden/dockerfiles"


def test_render_to_stdout_is_the_golden_dockerfile() -> None:
    r = run_cli("image", "render", "tests/data/locks/cu130", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (GOLDEN / "cu130-runtime/Dockerfile").read_text()


def test_render_ejects_the_whole_context(tmp_path: Path) -> None:
    out = tmp_path / "ctx"
    r = run_cli(
        "image",
        "render",
        str(REPO / "tests/data/locks/cpu"),
        "--variant",
        "jupyter",
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    want = GOLDEN / "cpu-jupyter"
    got = sorted(p.name for p in out.iterdir())
    assert got == sorted([*(p.name for p in want.iterdir()), "torchship-agent"])
    assert (out / "torchship-agent/lib/torchship/doctor/__init__.py").is_file()
    assert (out / "torchship-agent/lib/packaging/version.py").is_file()
    for p in want.iterdir():
        assert (out / p.name).read_text() == p.read_text(), p.name
    assert "tag golden-cpu:2.13.0-cpu-py3.11-" in r.stderr


def test_build_dry_run_prints_the_engine_command(tmp_path: Path) -> None:
    argv = ("image", "build", "tests/data/locks/cpu", "--engine", "podman", "--dry-run")
    r = run_cli(*argv, cwd=REPO, env={"SSL_CERT_FILE": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("podman build --tag golden-cpu:2.13.0-cpu-py3.11-")
    assert r.stdout.strip().endswith(
        "--file CONTEXT/Dockerfile --build-arg SOURCE_DATE_EPOCH=0 CONTEXT"
    )
    # the host's CA bundle reaches the build as a secret, never a layer
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    r = run_cli(*argv, "--engine-arg=--network=host", cwd=REPO, env={"SSL_CERT_FILE": str(ca)})
    assert f"--secret id=ca-bundle,src={ca} --network=host CONTEXT" in r.stdout, r.stdout
    r = run_cli(*argv, "--ca-bundle", str(tmp_path / "nope.pem"), cwd=REPO)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_no_engine_is_a_clear_error() -> None:
    with pytest.raises(UsageError) as e:
        detect_engine(which=lambda _: None)
    assert "no container engine found" in e.value.message and "image render -o" in e.value.hint
    assert (
        detect_engine(which=lambda name: "/usr/bin/x" if name == "buildah" else None) == "buildah"
    )
    # a docker client without its daemon is passed over for podman, or named when alone
    everything = lambda name: f"/usr/bin/{name}"  # noqa: E731
    assert detect_engine(everything, works=lambda e: e != "docker") == "podman"
    with pytest.raises(UsageError) as e:
        detect_engine(lambda n: "/x" if n == "docker" else None, works=lambda e: False)
    assert "daemon does not answer" in e.value.message
    with pytest.raises(UsageError):
        build_argv("rkt", Path("c"), "t:1")


def test_jupyter_of_a_lock_without_jupyterlab_is_refused() -> None:
    r = run_cli("image", "render", "examples/quickstart", "--variant", "jupyter", cwd=REPO)
    assert r.returncode == 2 and "no jupyterlab" in r.stderr and "hint:" in r.stderr


def test_build_shows_steps_keeps_the_log_and_fails_with_its_tail(tmp_path: Path) -> None:
    """A stand-in engine (a real process) that prints podman-style steps and fails."""
    script = tmp_path / "engine"
    script.write_text(
        "#!/bin/sh\necho 'STEP 1/2: FROM base'\necho noise\necho 'STEP 2/2: RUN uv pip install'\n"
        "echo 'error: hash mismatch for torch'\nexit 3\n"
    )
    script.chmod(0o755)
    seen: list[str] = []
    with pytest.raises(BuildError) as e:
        build([str(script)], tmp_path / "build.log", progress=seen.append)
    assert seen == ["STEP 1/2: FROM base", "STEP 2/2: RUN uv pip install"]
    assert "exit 3" in e.value.message and "hash mismatch for torch" in e.value.message
    assert "noise" in (tmp_path / "build.log").read_text()
    assert str(tmp_path / "build.log") in e.value.hint


def test_build_cleans_its_context_and_keeps_it_on_failure(tmp_path: Path) -> None:
    """A stand-in `podman` on PATH (a real process): success leaves no context behind (it
    holds copies of the wheels), failure keeps it with the log."""
    bin_dir, tmp = tmp_path / "bin", tmp_path / "tmp"
    bin_dir.mkdir()
    tmp.mkdir()
    engine = bin_dir / "podman"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp), "SSL_CERT_FILE": ""}
    argv = ("image", "build", str(REPO / "tests/data/locks/cpu"), "--engine", "podman")
    engine.write_text("#!/bin/sh\necho 'STEP 1/1: FROM x'\nexit 0\n")
    engine.chmod(0o755)
    r = run_cli(*argv, env=env)
    assert r.returncode == 0 and "built golden-cpu:" in r.stdout, r.stderr
    assert "STEP 1/1: FROM x" in r.stderr and list(tmp.iterdir()) == []
    engine.write_text("#!/bin/sh\necho 'boom'\nexit 1\n")
    r = run_cli(*argv, env=env)
    assert r.returncode == 1 and "boom" in r.stderr
    (kept,) = tmp.iterdir()
    assert (kept / "build.log").read_text().strip() == "boom" and (kept / "Dockerfile").is_file()
