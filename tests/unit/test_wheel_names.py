"""Wheel file names read without packaging.tags (which loads logging and platform) read as
packaging's parse_wheel_filename reads them: torchship.lock.wheels.wheel_name, which finds a
torch wheel in a find-links folder (a lock starts uv ~20 ms sooner), on every wheel name in the
repository's real data (the doctor's corpus, the compat data, and
tests/data/wheels/pypi_wheel_filenames.txt: one name of each shape per project from PyPI's JSON
API, sources in its header) and the format's edge cases; and valid_wheel_filename, which checks
a lock's wheel names as packaging 26.3 and later does (~18 ms of every `run`, `sync` and `exec`
reading a lock made from a find-links folder), on the same names and structured mutations of
them (1.5 million names and random strings agreed when this was written; the test runs a
slice). Where the installed packaging is older than 26.3, whose rules were looser, the
mutations are not compared and the rules are checked one by one against 26.3's statement."""

from __future__ import annotations

import random
import re
from pathlib import Path

import packaging
import pytest
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from torchship.lock.validate import wheel_file
from torchship.lock.wheels import _same_version, canonical_name, valid_wheel_filename, wheel_name

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
            if f.parent.name == "wheels":  # the PyPI corpus: read in one test below
                continue
            if f.is_file() and f.stat().st_size < 5_000_000:
                found |= set(WHEEL.findall(f.read_text("utf-8", errors="replace")))
    return sorted(found)


def _reference(name: str) -> tuple[str, str, list[tuple[str, str, str]]] | None:
    try:
        n, v, _, tags = parse_wheel_filename(name)
    except Exception:
        return None
    return canonicalize_name(n), str(v), sorted((t.interpreter, t.abi, t.platform) for t in tags)


def _reads_as_packaging(name: str) -> bool:
    mine = wheel_name(name)
    ref = _reference(name)
    if ref is None:  # packaging refuses it; ours may be laxer only about the version's form
        return mine is None or not re.fullmatch(r"\d+(\.\d+)*", mine[1])
    if mine is None:
        return False
    tags = sorted((t.interpreter.lower(), t.abi.lower(), t.platform.lower()) for t in mine[2])
    return (canonical_name(mine[0]), tags) == (ref[0], ref[2]) and _same_version(mine[1], ref[1])


@pytest.mark.parametrize("name", [*EDGES, *_real_names()])
def test_a_wheel_name_reads_as_packaging_reads_it(name: str) -> None:
    assert _reads_as_packaging(name), name


def test_every_published_wheel_name_reads_as_packaging_reads_it() -> None:
    assert [n for n in NAMES if not _reads_as_packaging(n)] == []


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


CORPUS = REPO / "tests" / "data" / "wheels" / "pypi_wheel_filenames.txt"
NAMES = [n for n in CORPUS.read_text("utf-8").splitlines() if n and not n.startswith("#")]
STRICT = Version(packaging.__version__) >= Version("26.3")


def packaging_takes(name: str) -> bool:
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename:
        return False
    return True


def test_the_corpus_is_real_and_varied() -> None:
    assert len(NAMES) > 3000 and len(set(NAMES)) == len(NAMES)
    assert sum(n[:-4].count("-") == 5 for n in NAMES) >= 20  # with a build tag
    assert any("abi3" in n for n in NAMES) and any(".macosx_" in n for n in NAMES)


def test_every_published_name_is_taken_as_packaging_takes_it() -> None:
    ours = [n for n in NAMES if not valid_wheel_filename(n)]
    theirs = [n for n in NAMES if not packaging_takes(n)]
    assert ours == theirs == []


# Replacements that each rule turns on: separators, the escape, empties, case, digits, an
# identifier's first character, Unicode letters and digits, whitespace and the version's marks
PIECES = ["-", ".", "_", "__", "", "A", "z", "0", "9", "1", "+", "!", " ", "é", "٣", "ß", "py",
          "cp311", "abi3", "none", "any", "..", "-.", ".-", "3x", "x3", "v", "dev"]  # fmt: skip


def _mutations(name: str, rng: random.Random) -> list[str]:
    out = [name[:-4], name + ".whl", name.upper(), name.replace(".whl", ".WHL")]
    stem = name[:-4]
    for _ in range(12):
        i = rng.randrange(len(stem) + 1)
        j = min(len(stem), i + rng.randrange(3))
        out.append(stem[:i] + rng.choice(PIECES) + stem[j:] + ".whl")
    parts = stem.split("-")
    for k in range(len(parts)):  # one part at a time: emptied, doubled, dropped, prefixed
        before, part, after = parts[:k], parts[k], parts[k + 1 :]
        for changed in ([*before, "", *after], [*before, part, part, *after], [*before, *after],
                        [*before, rng.choice(PIECES) + part, *after]):  # fmt: skip
            out.append("-".join(changed) + ".whl")
    return out


def _mutated(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [m for n in rng.sample(NAMES, count) for m in _mutations(n, rng)]


@pytest.mark.skipif(not STRICT, reason=f"packaging {packaging.__version__} predates 26.3's rules")
def test_mutations_of_published_names_get_packagings_answer() -> None:
    names = _mutated(20261201, 1500)
    differ = [n for n in names if valid_wheel_filename(n) != packaging_takes(n)]
    assert differ == [], differ[:10]
    taken = sum(map(valid_wheel_filename, names))
    assert 0.1 * len(names) < taken < 0.9 * len(names)  # the mutations reach both answers


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", True),
        ("Pillow-8.3.1-1-cp38-cp38-win_amd64.whl", True),  # a build tag
        ("foo-1.0-1abc-py3-none-any.whl", True),  # a build tag: digits, then anything
        ("foo-1.0-abc-py3-none-any.whl", False),  # ... that must start with one
        ("foo__bar-1.0-py3-none-any.whl", False),  # "__": not an escaped name
        ("foo-1.x-py3-none-any.whl", False),  # not a PEP 440 version
        ("foo-1.0-py3..py2-none-any.whl", False),  # an empty tag member (26.3)
        ("foo-1.0-3py-none-any.whl", False),  # an interpreter that is not an identifier
        ("foo-1.0-py3-none.whl", False),  # a missing tag set
        ("foo-1.0-py3-none-any.zip", False),
        ("fóo-1.0-py3-none-any.whl", True),  # \\w is Unicode's, as packaging reads it
    ],
)
def test_the_rules_one_by_one(name: str, ok: bool) -> None:
    assert valid_wheel_filename(name) is ok
    if STRICT:
        assert packaging_takes(name) is ok


def test_a_lock_refuses_a_bad_wheel_name_with_the_value_named() -> None:
    assert wheel_file("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    with pytest.raises(ValueError, match="is not a wheel's file name"):
        wheel_file("torch-2.13.0-py3..py2-none-any.whl")
    with pytest.raises(ValueError, match="is a path"):
        wheel_file("../torch-2.13.0-py3-none-any.whl")
