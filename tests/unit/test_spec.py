"""Spec loading: valid forms, every error names file:field and a fix, and fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchship.compat import load_matrix
from torchship.compat.request import request_from_spec
from torchship.errors import SpecError
from torchship.spec import load_spec
from torchship.spec.load import spec_from_table

GOOD = """
name = "demo"
torch = "2.9.1"
cuda = "auto"
python = "3.12"
packages = ["numpy>=2", "torchvision"]

[targets]
driver = "570.124.06"
gpus = ["H100", "RTX 4090", "sm_86"]
glibc = "2.31"

[image]
jupyter = true
system_packages = ["git", "libgl1"]
"""


def write(tmp_path: Path, text: str, name: str = "torchship.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loads_a_full_spec(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.name == "demo" and spec.torch == "2.9.1" and spec.python == "3.12"
    assert spec.targets.gpus == ("H100", "RTX 4090", "sm_86")
    assert spec.targets.driver == "570.124.06" and spec.image.jupyter
    assert spec.packages == ("numpy>=2", "torchvision")


def test_folder_and_pyproject_forms(tmp_path: Path) -> None:
    write(
        tmp_path,
        '[project]\nname = "My_Proj"\n[tool.torchship]\ntorch = "2.9.1"\npython = "3.12"\n',
        "pyproject.toml",
    )
    spec = load_spec(tmp_path)
    assert spec.name == "my_proj" and spec.prefix == "tool.torchship."
    write(tmp_path, GOOD)  # torchship.toml wins over pyproject.toml
    assert load_spec(tmp_path).name == "demo"


def test_spec_hash_ignores_formatting_and_comments(tmp_path: Path) -> None:
    a = load_spec(write(tmp_path, GOOD))
    b = load_spec(write(tmp_path, "# a comment\n" + GOOD.replace("\n\n", "\n\n\n")))
    assert a.spec_hash == b.spec_hash
    c = load_spec(write(tmp_path, GOOD.replace('"2.9.1"', '"2.9.0"')))
    assert c.spec_hash != a.spec_hash


@pytest.mark.parametrize(
    ("text", "where", "hint_part"),
    [
        ('torch = "2.9.1"', "python", 'python = "3.12"'),
        ('python = "3.12"', "torch", 'torch = "2.9.1"'),
        ('torch = "2.9.1"\npython = 3.10', "python", "quote it"),
        ('torch = "2.9.1"\npython = "3.12"\ncuda = "12.x"', "cuda", "cuda ="),
        ('torch = "two"\npython = "3.12"', "torch", "torch ="),
        ('torch = "2.9.1"\npython = "3.12"\ntorhc = 1', "torhc", "did you mean 'torch'"),
        ('torch = "2.9.1"\npython = "3.12"\npackages = "numpy"', "packages", "packages ="),
        ('torch = "2.9.1"\npython = "3.12"\npackages = ["numpy", 3]', "packages[1]", "packages ="),
        ('torch = "2.9.1"\npython = "3.12"\npackages = ["torch==2.1"]', "packages[0]", "numpy"),
        ('torch = "2.9.1"\npython = "3.12"\npackages = ["num py"]', "packages[0]", "numpy"),
        ('torch = "2.9.1"\npython = "3.12"\n[targets]\ndriver = "new"', "targets.driver", "580"),
        ('torch = "2.9.1"\npython = "3.12"\n[targets]\ngpus = "H100"', "targets.gpus", "gpus ="),
        ('torch = "2.9.1"\npython = "3.12"\n[targets]\ngpu = ["H100"]', "targets.gpu", "'gpus'"),
        ('torch = "2.9.1"\npython = "3.12"\n[targets]\nglibc = "3.1"', "targets.glibc", "2.31"),
        ('torch = "2.9.1"\npython = "3.12"\n[image]\njupyter = "yes"', "image.jupyter", "true"),
        (
            'torch = "2.9.1"\npython = "3.12"\n[image]\nsystem_packages = ["rm -rf"]',
            "image.system_packages[0]",
            "libgl1",
        ),
        ('torch = "2.9.1"\npython = "3.12"\nname = "Bad Name!"', "name", "lower case"),
        ('torch = "2.9.1"\npython = "3.12"\ntargets = 3', "targets", "table"),
        ('torch = "2.9.1"\npython = "3.12"\n[targets\n', "", "syntax"),
    ],
)
def test_errors_name_file_field_and_fix(
    tmp_path: Path, text: str, where: str, hint_part: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert e.value.file == str(path)
    assert e.value.field == where
    assert str(e.value).startswith(f"{path}:{where}: " if where else f"{path}: ")
    assert hint_part in e.value.hint
    assert "\n" not in str(e.value) and "\n" not in e.value.hint


def test_pyproject_errors_carry_the_table_path(tmp_path: Path) -> None:
    write(
        tmp_path,
        '[tool.torchship]\ntorch = "2.9.1"\npython = "3.12"\n[tool.torchship.targets]\n'
        'gpus = ["H10"]\n',
        "pyproject.toml",
    )
    spec = load_spec(tmp_path)
    with pytest.raises(SpecError) as e:
        request_from_spec(spec, load_matrix())
    assert e.value.field == "tool.torchship.targets.gpus[0]"
    assert "did you mean 'H100'" in e.value.hint


def test_unknown_torch_release_is_bad_input(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, 'torch = "3.0"\npython = "3.12"'))
    with pytest.raises(SpecError) as e:
        request_from_spec(spec, load_matrix())
    assert e.value.field == "torch" and "2.0.0 – 2.15.0" in str(e.value)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path)
    assert "torchship init" in e.value.hint
    with pytest.raises(SpecError):
        load_spec(tmp_path / "nope.toml")


def test_non_utf8(tmp_path: Path) -> None:
    p = tmp_path / "torchship.toml"
    p.write_bytes(b'torch = "\xff\xfe"\n')
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(p)


# --- fuzzing: nothing but SpecError may escape the loader -------------------------------------

toml_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.floats(),  # nan and inf are TOML floats
    st.sampled_from([10**30, 10**400, "\x00", "x" * 10_000]),
    st.booleans(),
    st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=3),
)
keys = st.sampled_from(
    [
        "name",
        "torch",
        "cuda",
        "python",
        "packages",
        "targets",
        "image",
        "x",
        "driver",
        "gpus",
        "glibc",
        "jupyter",
        "ssh",
        "allow_forward_compat",
    ]
)
tables = st.recursive(
    st.dictionaries(keys, toml_scalars, max_size=6),
    lambda children: st.dictionaries(keys, st.one_of(toml_scalars, children), max_size=6),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables)
def test_fuzz_tables(table: dict[str, object]) -> None:
    try:
        spec = spec_from_table(table, "fuzz.toml", "fuzz")
    except SpecError as e:
        assert e.hint and str(e).startswith("fuzz.toml")
        assert "\n" not in str(e) + e.hint and len(str(e)) < 300
        return
    try:
        request_from_spec(spec, load_matrix())
    except SpecError as e:
        assert e.hint


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzz_raw_bytes(tmp_path: Path, data: bytes | str) -> None:
    p = tmp_path / "torchship.toml"
    if isinstance(data, str):
        p.write_text(data, encoding="utf-8")
    else:
        p.write_bytes(data)
    try:
        load_spec(p)
    except SpecError as e:
        assert e.hint and "\n" not in str(e) + e.hint


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(GOOD.splitlines()), st.text(max_size=20))
def test_fuzz_mutated_good_spec(tmp_path: Path, line: str, junk: str) -> None:
    p = tmp_path / "torchship.toml"
    p.write_text(GOOD.replace(line, line[: len(line) // 2] + junk, 1), encoding="utf-8")
    try:
        request_from_spec(load_spec(p), load_matrix())
    except SpecError as e:
        assert e.hint
