"""tools/gen_matrix.py: reading wheel members by byte ranges, and refreshing from real PyPI."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("gen_matrix", REPO / "tools/gen_matrix.py")
assert spec and spec.loader
gen = importlib.util.module_from_spec(spec)
sys.modules["gen_matrix"] = gen
spec.loader.exec_module(gen)

METADATA = """Metadata-Version: 2.1
Name: torch
Version: 2.9.1
Requires-Dist: filelock
Requires-Dist: nvidia-cudnn-cu12 ==9.10.2.21 ; platform_system == "Linux" and extra == "x"
Requires-Dist: nvidia-nccl-cu12==2.27.5; platform_system == "Linux"
Requires-Dist: triton==3.5.1; platform_system == "Linux"
Requires-Dist: cuda-toolkit[cublas,cudart]==13.0.2; platform_system == "Linux"
"""


def file_fetch(path: Path, calls: list[int]):  # type: ignore[no-untyped-def]
    """A range fetcher over a local file: HTTP Range semantics, recording bytes returned."""
    data = path.read_bytes()

    def fetch(url: str, start: int | None, end: int | None) -> bytes:
        if start is None:
            out = data[-end:] if end else data
        else:
            out = data[start : None if end is None else end + 1]
        calls.append(len(out))
        return out

    return fetch


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_reads_members_by_range(tmp_path: Path, compression: int) -> None:
    whl = tmp_path / "torch-2.9.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl, "w", compression) as z:
        z.writestr("torch/lib/libtorch.so", os.urandom(300_000))  # bulk the reader must skip
        z.writestr("torch/version.py", "__version__ = '2.9.1+cu128'\ncuda = '12.8'\n")
        z.writestr("torch-2.9.1.dist-info/METADATA", METADATA)
    calls: list[int] = []
    got = gen.read_members(
        "file", lambda n: n.endswith("METADATA") or n == "torch/version.py", file_fetch(whl, calls)
    )
    assert gen.parse_version_py(got["torch/version.py"]) == "2.9.1+cu128"
    assert gen.parse_requires(got["torch-2.9.1.dist-info/METADATA"]) == {
        "nvidia-cudnn-cu12": "==9.10.2.21",
        "nvidia-nccl-cu12": "==2.27.5",
        "triton": "==3.5.1",
        "cuda-toolkit[cublas,cudart]": "==13.0.2",
    }
    assert whl.stat().st_size > 300_000
    assert sum(calls) < 70_000  # the tail, the directory and two members: not the wheel


def test_python_tags_and_glibc() -> None:
    files = [
        {"filename": f"torch-2.9.1-{t}-{a}-manylinux_2_28_x86_64.whl", "url": "u"}
        for t, a in (("cp310", "cp310"), ("cp313", "cp313t"), ("cp313", "cp313"))
    ]
    files.append({"filename": "torch-2.9.1-cp312-cp312-manylinux_2_28_aarch64.whl", "url": "u"})
    wheels = gen.x86_wheels(files, "2.9.1")
    assert gen.python_tags(wheels) == ["3.10", "3.13", "3.13t"]
    assert gen.glibc_of(wheels) == ("2.28", "manylinux_2_28")


@pytest.mark.network
def test_refresh_from_pypi_agrees_with_the_packaged_matrix() -> None:
    """The packaged facts for torch 2.13.0 are what PyPI says today."""
    assert gen.main(["--releases", "2.13.0,2.7.1", "--check"]) == 0


def test_a_companions_torch_requirement_and_python_are_read() -> None:
    meta = (
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.29.2\n"
        "Requires-Python: >=3.10, !=3.14.1\nRequires-Dist: numpy\n"
        'Requires-Dist: torch>=2.14.0\nRequires-Dist: gdown>=4.7.3; extra == "gdown"\n'
    )
    assert gen.parse_torch_requirement(meta) == (">=2.14.0", ">=3.10,!=3.14.1")
    assert gen.parse_torch_requirement("Requires-Dist: torch (==2.0.0)\n") == ("==2.0.0", "")
    assert gen.parse_torch_requirement("Name: torchaudio\n") == ("", "")  # 2.11.0 declares none
    rows = [{"version": "0.2.2", "torch": ""}, {"version": "0.15.1", "torch": "==2.0.0"},
            {"version": "0.29.2", "torch": ">=2.14.0"}]  # fmt: skip
    assert [r["version"] for r in gen.relevant(rows, ["2.0.0", "2.15.0"])] == ["0.15.1", "0.29.2"]


@pytest.mark.network
def test_the_companions_are_what_pypi_lists_today(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision and torchaudio: the torch, Requires-Python and Python tags packaged for the
    releases that carry the facts the resolver relies on (no cp313 in 0.20.1 and 2.5.1, the
    `!=3.14.1` exclusion, `>=` requirements, a declared-nothing release) are what their PyPI
    wheels say today (`--domain` without --companions checks them all, in about a minute)."""
    spot = "0.20.1,0.26.0,0.29.2,2.5.1,2.11.0,2.11.1"
    assert gen.main(["--releases", "2.13.0", "--domain", "--companions", spot, "--check"]) == 0
    # the check can fail: a packaged matrix that says 0.20.1 has a cp313 wheel disagrees
    data = json.loads(gen.MATRIX.read_text())
    row = next(c for c in data["companions"]["torchvision"] if c["version"] == "0.20.1")
    row["python"].append("3.13")
    wrong = tmp_path / "matrix.json"
    wrong.write_text(json.dumps(data))
    monkeypatch.setattr(gen, "MATRIX", wrong)
    assert gen.main(["--releases", "2.13.0", "--domain", "--companions", "0.20.1", "--check"]) == 1
