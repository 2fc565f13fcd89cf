"""The lock file: round trip, tamper detection, spec drift, export; planning the uv call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from torchship.errors import IndexUnreachableError, LockError, LockFileError, LockOutOfDateError
from torchship.lock import check_lock, export_requirements, read_lock, resolve_spec, write_lock
from torchship.lock.compile import CompilePlan, _failure, build_lock, parse_compiled, plan_compile
from torchship.lock.model import LockedPackage
from torchship.spec import load_spec

UV_OUTPUT = """\
filelock==3.20.0 \\
    --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
nvidia-cudnn-cu12==9.10.2.21 \\
    --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb \\
    --hash=sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
    # via torch
nvidia-nccl-cu12==2.27.5 \\
    --hash=sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd
torch==2.9.1+cu126 \\
    --hash=sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee
"""

SPEC = """
name = "t"
torch = "2.9.1"
cuda = "12.6"
python = "3.12"
packages = ["torchvision", "numpy>=2"]
[targets]
driver = "550.54.15"
gpus = ["V100", "RTX 4090"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "torchship.toml").write_text(SPEC)
    return tmp_path


def make_lock(project: Path):  # type: ignore[no-untyped-def]
    spec = load_spec(project)
    res = resolve_spec(spec)
    assert res.chosen is not None
    plan = plan_compile(spec, res.chosen)
    return spec, build_lock(spec, res, parse_compiled(UV_OUTPUT), plan)


def test_parse_uv_output() -> None:
    pkgs = parse_compiled(UV_OUTPUT)
    assert [p.name for p in pkgs] == ["filelock", "nvidia-cudnn-cu12", "nvidia-nccl-cu12", "torch"]
    assert pkgs[1].hashes == ("sha256:" + "b" * 64, "sha256:" + "c" * 64)
    assert pkgs[3].version == "2.9.1+cu126"


def test_plan_for_a_pytorch_index_build(project: Path) -> None:
    spec = load_spec(project)
    res = resolve_spec(spec)
    assert res.chosen is not None
    plan = plan_compile(spec, res.chosen)
    assert plan.requirements == ("torch===2.9.1+cu126", "torchvision==0.24.1", "numpy>=2")
    argv = plan.argv("uv")
    assert argv[argv.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cu126"
    assert argv[argv.index("--python-platform") + 1] == "x86_64-manylinux_2_28"
    assert argv[argv.index("--python-version") + 1] == "3.12"
    assert "--generate-hashes" in argv and "--no-config" in argv
    # A find-links folder holding the wheel replaces the PyTorch index; one without it does
    # not; a mirror replaces the index's host.
    wheels = project / "wheels"
    wheels.mkdir()
    empty = plan_compile(spec, res.chosen, find_links=[str(wheels)])
    assert empty.extra_index_url == "https://download.pytorch.org/whl/cu126"
    (wheels / "torch-2.9.1+cu126-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    local = plan_compile(spec, res.chosen, find_links=[str(wheels)])
    assert local.extra_index_url is None and local.find_links == (str(wheels),)
    assert local.torch_index == "https://download.pytorch.org/whl/cu126"
    mirror = plan_compile(spec, res.chosen, pytorch_index="https://mirror.example/whl/")
    assert mirror.extra_index_url == "https://mirror.example/whl/cu126"


def test_plan_for_the_pypi_default_and_free_threaded(tmp_path: Path) -> None:
    (tmp_path / "torchship.toml").write_text(
        'torch = "2.13.0"\npython = "3.14t"\n[targets]\nglibc = "2.35"\ngpus = ["H100"]\n'
    )
    spec = load_spec(tmp_path)
    res = resolve_spec(spec)
    assert res.chosen is not None
    plan = plan_compile(spec, res.chosen)
    assert plan.requirements == ("torch===2.13.0",) and plan.extra_index_url is None
    assert plan.python_version == "3.14" and plan.platform == "x86_64-manylinux_2_35"


def test_round_trip_and_hashes(project: Path) -> None:
    _, lock = make_lock(project)
    path = project / "torchship.lock"
    write_lock(lock, path)
    again = read_lock(path)
    assert again.content_hash == lock.content_hash and again.packages == lock.packages
    assert again.cudnn == "9.10.2.21" and again.nccl == "2.27.5"  # from the locked wheels
    assert again.arch_list[0] == "sm_50" and again.min_driver == "525.60.13"
    assert again.base_image == "nvidia/cuda:12.4.1-base-ubuntu22.04"
    assert again.index_url == "https://download.pytorch.org/whl/cu126"
    assert len(lock.short_hash) == 8
    # Writing twice gives the same bytes: no timestamps in a lock.
    first = path.read_bytes()
    write_lock(read_lock(path), path)
    assert path.read_bytes() == first
    assert not [p for p in project.iterdir() if p.name.endswith(".tmp")]


def test_hand_edits_are_detected(project: Path) -> None:
    _, lock = make_lock(project)
    path = project / "torchship.lock"
    write_lock(lock, path)
    path.write_text(path.read_text().replace('"2.27.5"', '"2.27.6"'))
    with pytest.raises(LockFileError, match="content_hash"):
        read_lock(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("schema_version = 99\n", "schema_version 99"),
        ("not toml [", "not valid TOML"),
        ("schema_version = 1\n", "missing"),
        ("schema_version = true\n", "schema_version True"),  # true == 1 in Python
    ],
)
def test_bad_lock_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "torchship.lock"
    path.write_text(text)
    with pytest.raises(LockFileError, match=match) as e:
        read_lock(path)
    assert e.value.exit_code == 2 and "torchship lock" in e.value.hint
    with pytest.raises(LockFileError, match="no lock file"):
        read_lock(tmp_path / "absent.lock")


REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted(p for p in REPO.glob("**/torchship.lock") if ".git" not in p.parts)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_lock_passes_every_check(path: Path) -> None:
    """The checks of read_lock (unknown fields, each value's rule, both hashes) hold for every
    real lock in the repository, schema 1 and 2: no legitimate lock is refused."""
    lock = read_lock(path)
    assert read_lock(path).content_hash == lock.content_hash
    assert export_requirements(lock).count("--hash=sha256:") >= len(lock.packages)


def test_check_lists_what_changed(project: Path) -> None:
    spec, lock = make_lock(project)
    check_lock(spec, lock, project / "torchship.lock")  # unchanged: passes
    changed = dataclasses.replace(
        spec, torch="2.9.0", targets=dataclasses.replace(spec.targets, gpus=("V100",))
    )
    with pytest.raises(LockOutOfDateError) as e:
        check_lock(changed, lock, project / "torchship.lock")
    assert "torch: '2.9.1' → '2.9.0'" in str(e.value)
    assert "targets.gpus" in str(e.value) and e.value.exit_code == 1


def test_export_requirements(project: Path) -> None:
    _, lock = make_lock(project)
    text = export_requirements(lock)
    assert "--extra-index-url https://download.pytorch.org/whl/cu126" in text
    assert "torch==2.9.1+cu126 \\\n    --hash=sha256:" + "e" * 64 in text
    assert text.count("--hash=") == 5


def test_wrong_torch_from_uv_is_refused(project: Path) -> None:
    spec = load_spec(project)
    res = resolve_spec(spec)
    assert res.chosen is not None
    plan = plan_compile(spec, res.chosen)
    wrong = (LockedPackage("torch", "2.9.1", ("sha256:" + "0" * 64,)),)
    with pytest.raises(LockError, match=r"where 2\.9\.1\+cu126 was resolved"):
        build_lock(spec, res, wrong, plan)


# Real stderr captured from uv 0.13.9 on this machine (the PyTorch index is unreachable here).
DNS_FAILURE = """Error: Request failed after 3 retries in 6.4s
  cause: Failed to fetch: https://download.pytorch.org/whl/cu126/torch/
  cause: error sending request for url (https://download.pytorch.org/whl/cu126/torch/)
  cause: client error (Connect)
  cause: dns error
  cause: error resolving DNS
  cause: failed to lookup address information: Name or service not known"""

NO_SOLUTION = """error: No solution found when resolving dependencies
  cause: Because only numpy<=2.5.5 is available and you require numpy>=9, we can conclude \
that your requirements are unsatisfiable."""


def _plan() -> CompilePlan:
    return CompilePlan(
        ("torch==2.9.1+cu126",),
        "3.12",
        "x86_64-manylinux_2_28",
        "https://pypi.org/simple",
        "https://download.pytorch.org/whl/cu126",
        (),
        "2.9.1+cu126",
    )


def test_unreachable_pytorch_index_names_it_and_the_way_around() -> None:
    err = _failure(_plan(), DNS_FAILURE, "2.9.1+cu126")
    assert isinstance(err, IndexUnreachableError)
    assert err.index_url == "https://download.pytorch.org/whl/cu126"
    assert "--find-links DIR" in err.hint and "pip download torch==2.9.1+cu126" in err.hint
    assert "failed to lookup address information" in str(err)


def test_unsatisfiable_packages() -> None:
    err = _failure(_plan(), NO_SOLUTION, "2.9.1+cu126")
    assert not isinstance(err, IndexUnreachableError)
    assert "no set of packages satisfies" in str(err) and "numpy>=9" in str(err)
