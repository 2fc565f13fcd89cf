"""Wheel file names read without packaging.tags (torchship.lock.wheels.wheel_name: a lock
starts uv ~20 ms sooner) read as packaging's parse_wheel_filename reads them: every wheel name
in the repository's real data (the doctor's corpus, the compat data), and the format's edge
cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from torchship.lock.wheels import _same_version, canonical_name, wheel_name

REPO = Path(__file__).parents[2]
WHEEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+!-]*-[0-9][A-Za-z0-9_.+!]*(?:-[0-9]\w*)?"
                   r"-[a-z0-9_.]+-[a-z0-9_.]+-[A-Za-z0-9_.]+\.whl")  # fmt: skip
EDGES = [
    "foo_bar-1.0-1-py2.py3-none-any.whl",  # a build tag, a compressed tag set
    "numpy-2.1.0-cp311-cp311-macosx_14_0_arm64.whl",
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "Pillow-10.0.0-cp39-abi3-win_amd64.whl",
    "bad.whl",
    "x-1.0-py3-none.whl",
    "x-notaversion-py3-none-any.whl",
    "x-1.0-build-py3-none-any.whl",  # a build tag must start with a digit
]


def _real_names() -> list[str]:
    found: set[str] = set()
    for folder in (REPO / "tests" / "data", REPO / "src" / "torchship" / "compat" / "data"):
        for f in folder.rglob("*"):
            if f.is_file() and f.stat().st_size < 5_000_000:
                found |= set(WHEEL.findall(f.read_text("utf-8", errors="replace")))
    return sorted(found)


def _reference(name: str) -> tuple[str, str, list[tuple[str, str, str]]] | None:
    try:
        n, v, _, tags = parse_wheel_filename(name)
    except Exception:
        return None
    return canonicalize_name(n), str(v), sorted((t.interpreter, t.abi, t.platform) for t in tags)


@pytest.mark.parametrize("name", [*EDGES, *_real_names()])
def test_a_wheel_name_reads_as_packaging_reads_it(name: str) -> None:
    mine = wheel_name(name)
    ref = _reference(name)
    if ref is None:  # packaging refuses it; ours may be laxer only about the version's form
        assert mine is None or not re.fullmatch(r"\d+(\.\d+)*", mine[1]), name
        return
    assert mine is not None, name
    tags = sorted((t.interpreter.lower(), t.abi.lower(), t.platform.lower()) for t in mine[2])
    assert (canonical_name(mine[0]), tags) == (ref[0], ref[2]), name
    assert _same_version(mine[1], ref[1]), name  # as wheels_in compares it


def test_a_folder_lists_the_wheels_glob_lists(tmp_path: Path) -> None:
    """wheels_in reads a folder without glob (its pattern compiled before uv started): the
    same files, in the same order, hidden ones and a folder named like a wheel included."""
    from torchship.lock.wheels import _wheel_files

    names = [*EDGES, ".hidden-1.0-py3-none-any.whl", "x-1.0-py3-none-any.WHL", "a.whl.txt"]
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "dir-1.0-py3-none-any.whl").mkdir()
    assert _wheel_files(tmp_path) == sorted(tmp_path.glob("*.whl"))
    assert len(_wheel_files(tmp_path)) == len(EDGES) + 2
