"""tools/gen_matrix.py: reading wheel members by byte ranges, and refreshing from real PyPI."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
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
    assert gen.main(["--releases", "2.13.0,2.7.1", "--platforms", "", "--check"]) == 0


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
    argv = ["--releases", "2.13.0", "--platforms", "", "--domain", "--check"]
    assert gen.main([*argv, "--companions", spot]) == 0
    # the check can fail: a packaged matrix that says 0.20.1 has a cp313 wheel disagrees
    data = json.loads(gen.MATRIX.read_text())
    row = next(c for c in data["companions"]["torchvision"] if c["version"] == "0.20.1")
    row["python"].append("3.13")
    wrong = tmp_path / "matrix.json"
    wrong.write_text(json.dumps(data))
    monkeypatch.setattr(gen, "MATRIX", wrong)
    assert gen.main([*argv, "--companions", "0.20.1"]) == 1


# --- other platforms: linux-aarch64, windows-x86_64, macos-arm64, macos-x86_64 ----------------
# Real material: tests/data/pypi/torch_wheels.json (PyPI's file list of torch 2.0.0, 2.10.0 and
# 2.13.0, four wheels' torch/version.py, 512 bytes of the 2.11.0 aarch64 libtorch_python.so).
PYPI = json.loads((REPO / "tests/data/pypi/torch_wheels.json").read_text())
FILES: list[dict] = PYPI["simple_files"]["files"]  # type: ignore[type-arg]
VERSION_PY = {name: w["text"] for name, w in PYPI["version_py"]["wheels"].items()}
ARCH_SLICE = bytes.fromhex(PYPI["libtorch_python_slice"]["hex"])
FIVE = ["sm_80", "sm_90", "sm_100", "sm_110", "sm_120"]


@pytest.mark.parametrize(
    ("tag", "want"),
    [
        ("manylinux_2_28_aarch64", ("linux-aarch64", (2, 28))),
        ("manylinux2014_aarch64", ("linux-aarch64", (2, 17))),
        ("win_amd64", ("windows-x86_64", None)),
        ("macosx_14_0_arm64", ("macos-arm64", (14, 0))),
        ("macosx_10_9_x86_64", ("macos-x86_64", (10, 9))),
        ("manylinux_2_28_x86_64", None),  # the release's top level, not `platforms`
        ("manylinux1_x86_64", None),
        ("win32", None),
    ],
)
def test_a_platform_tag_names_its_platform_and_floor(tag: str, want: object) -> None:
    assert gen.platform_of(tag) == want


def test_each_platform_has_its_own_pythons_tag_and_floors() -> None:
    """torch 2.10.0 on PyPI: macOS cp310-cp313 for macOS 11 (re-uploaded as build `-2`), the
    free-threaded and 3.14 wheels for macOS 14 only; aarch64 and Windows for every Python."""
    by = gen.platform_wheels(FILES, "2.10.0")
    assert set(by) == {"linux-aarch64", "windows-x86_64", "macos-arm64"}
    seven = ["3.10", "3.11", "3.12", "3.13", "3.13t", "3.14", "3.14t"]
    assert all(gen.python_tags(w) == seven for w in by.values())
    mac = by["macos-arm64"]
    assert gen.floors(mac) == ("11.0", {"3.13t": "14.0", "3.14": "14.0", "3.14t": "14.0"})
    assert gen.pick_wheel(mac)["filename"] == "torch-2.10.0-2-cp311-none-macosx_11_0_arm64.whl"
    assert gen.floors(by["linux-aarch64"]) == ("2.28", {})
    assert gen.floors(by["windows-x86_64"]) == (None, {})
    # torch 2.0.0: macOS x86_64 still exists, aarch64 is manylinux2014 with a `-1` re-upload
    old = gen.platform_wheels(FILES, "2.0.0")
    assert gen.floors(old["macos-x86_64"]) == ("10.9", {})
    assert gen.floors(old["linux-aarch64"]) == ("2.17", {})
    pick = gen.pick_wheel(old["linux-aarch64"])["filename"]
    assert pick == "torch-2.0.0-1-cp311-cp311-manylinux2014_aarch64.whl"


@pytest.mark.parametrize(
    ("wheel", "want"),
    [
        ("torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl", ("cu130", "13.0")),
        ("torch-2.0.0-1-cp311-cp311-manylinux2014_aarch64.whl", ("cpu", None)),  # no suffix
        ("torch-2.10.0-2-cp311-none-macosx_11_0_arm64.whl", ("cpu", None)),
        ("torch-2.15.0-cp311-cp311-win_amd64.whl", ("cpu", None)),  # +cpu, CRLF
    ],
)
def test_the_pypi_build_is_read_from_version_py(wheel: str, want: tuple[str, str | None]) -> None:
    assert gen.pypi_build(VERSION_PY[wheel]) == want


def test_arch_flags_are_the_nul_delimited_token_run() -> None:
    assert gen.parse_arch_flags(ARCH_SLICE) == FIVE  # the real 2.11.0 aarch64 bytes
    # synthetic: PTX tokens kept, a token inside printable text is not the flags string
    assert gen.parse_arch_flags(b"\0needs sm_90 here\0sm_75 sm_120 compute_120\0") == [
        "sm_75",
        "sm_120",
        "compute_120",
    ]
    assert gen.parse_arch_flags(b"\0requires sm_90\0") is None
    assert gen.parse_arch_flags(ARCH_SLICE[:280]) is None  # cut before its NUL: not yet


def _cuda_wheel(path: Path, version_py: str, at: int) -> Path:
    """A synthetic wheel (labelled as such) holding real members: a 3 MB libtorch_python.so of
    random bytes with the real 2.11.0 flag bytes at `at`, and a real torch/version.py."""
    bulk = bytearray(os.urandom(3_000_000))
    bulk[at : at + len(ARCH_SLICE)] = ARCH_SLICE
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("torch/version.py", version_py)
        z.writestr("torch/lib/libtorch_python.so", bytes(bulk))
        z.writestr("torch/lib/libtorch_cuda.so", os.urandom(500_000))
    return path


@pytest.mark.parametrize("at", [10, 65_400, 1_000_000, 2_999_000])  # chunk edges included
def test_the_arch_flags_are_found_by_ranges_and_cached(tmp_path: Path, at: int) -> None:
    whl = _cuda_wheel(tmp_path / "w.whl", VERSION_PY[next(iter(VERSION_PY))], at)
    calls: list[int] = []
    fetch = file_fetch(whl, calls)
    got = gen.scan_member("file", gen._is_torch_python, gen.parse_arch_flags, fetch, 65_536)
    assert got == FIVE
    assert sum(calls) < at + 200_000  # stops at the chunk that holds it
    f = {"filename": "w.whl", "url": "file", "hashes": {"sha256": "ab" * 32}}
    cache = tmp_path / "cache"
    assert gen.cached_arch(cache, fetch, measure=False)(f) is None  # not measured, not cached
    assert gen.cached_arch(cache, fetch)(f) == FIVE
    before = len(calls)
    assert gen.cached_arch(cache, fetch, measure=False)(f) == FIVE  # from the cache, no reads
    assert len(calls) == before
    assert (cache / f"arch-{'ab' * 32}.json").exists()


def _x86_variants(release: str) -> list[dict]:  # type: ignore[type-arg]
    data = json.loads(gen.MATRIX.read_text())
    return next(r["variants"] for r in data["releases"] if r["torch"] == release)


def test_the_declared_download_pytorch_org_builds() -> None:
    """aarch64: PyPI's cu130 (measured) plus the x86_64 variants the build script has an arch
    list for (cu126, cu132; not cu129, whose aarch64 list is unknown) and the cpu index build;
    Windows: every x86_64 CUDA variant, its SASS only (PTX is Linux only), confidence at most
    medium."""
    x86 = _x86_variants("2.13.0")  # cu126, cu130 (PyPI), cu132 (+PTX, medium-low), cpu
    pypi = gen.pypi_variant("linux-aarch64", "2.13.0", "cu130", "13.0", FIVE)
    assert pypi["arch_source"].endswith("no PTX")
    arm = gen.declared_variants("linux-aarch64", pypi, x86)
    assert [(v["name"], v["index"]) for v in arm] == [
        ("cu126", "pytorch"), ("cu132", "pytorch"), ("cpu", "pytorch")]  # fmt: skip
    assert arm[0]["arch"] == ["sm_80", "sm_90"]
    assert arm[1]["arch"][-1] == "compute_120"
    assert {v["arch_confidence"] for v in arm[:2]} == {"medium"}
    x86_211 = _x86_variants("2.11.0")  # has cu129 (arch unknown)
    arm_211 = gen.declared_variants("linux-aarch64", pypi, x86_211)
    assert "cu129" not in [v["name"] for v in arm_211]
    cpu = gen.pypi_variant("windows-x86_64", "2.13.0", "cpu", None, [])
    win = gen.declared_variants("windows-x86_64", cpu, x86)
    assert [v["name"] for v in win] == ["cu126", "cu130", "cu132"]
    cu132 = next(v for v in x86 if v["name"] == "cu132")
    assert win[2]["arch"] == [a for a in cu132["arch"] if not a.startswith("compute_")]
    assert win[2]["arch_confidence"] == "medium-low"  # the Linux one, lower than medium
    assert win[0]["arch_confidence"] == "medium"
    unknown = gen.declared_variants("windows-x86_64", cpu, _x86_variants("2.7.1"))
    assert unknown[0]["name"] == "cu118"
    assert (unknown[0]["arch"], unknown[0]["arch_confidence"]) == (None, "unknown")
    mac = gen.pypi_variant("macos-arm64", "2.13.0", "cpu", None, [])
    assert mac["arch_source"] == "cpu (MPS)"
    assert gen.declared_variants("macos-arm64", mac, x86) == []


def _fake_pypi(tmp_path: Path) -> gen.Fetch:
    """Serves synthetic wheels (labelled) for the real 2.13.0 file list: the aarch64 wheels hold
    the real 2.13.0 aarch64 version.py and flag bytes; Windows and macOS a real +cpu version.py
    (of 2.15.0 Windows and 2.10.0 macOS)."""
    aarch64 = _cuda_wheel(
        tmp_path / "a.whl", VERSION_PY["torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl"], 5
    )
    cpu = {}
    for key, wheel in (("win", "torch-2.15.0-cp311-cp311-win_amd64.whl"),
                       ("mac", "torch-2.10.0-2-cp311-none-macosx_11_0_arm64.whl")):  # fmt: skip
        cpu[key] = tmp_path / f"{key}.whl"
        with zipfile.ZipFile(cpu[key], "w") as z:
            z.writestr("torch/version.py", VERSION_PY[wheel])
    served = {f["url"]: aarch64 if "aarch64" in f["filename"] else
              cpu["win"] if "win" in f["filename"] else cpu["mac"] for f in FILES}  # fmt: skip
    fetchers = {path: file_fetch(path, []) for path in {aarch64, cpu["win"], cpu["mac"]}}
    return lambda url, start, end: fetchers[served[url]](url, start, end)


def test_the_platform_entries_of_a_release(tmp_path: Path) -> None:
    release = {"torch": "2.13.0", "variants": _x86_variants("2.13.0")}
    with ThreadPoolExecutor(2) as pool:
        (got,) = gen.measure_platforms(
            [release], FILES, gen.PLATFORMS, gen.cached_arch(None), pool, _fake_pypi(tmp_path)
        )
    assert list(got) == ["linux-aarch64", "windows-x86_64", "macos-arm64"]  # no macOS x86_64
    arm = got["linux-aarch64"]
    assert (arm["tag"], arm["glibc_min"], arm["pypi_default"]) == (
        "manylinux_2_28_aarch64", "2.28", "cu130")  # fmt: skip
    assert arm["python"] == ["3.10", "3.11", "3.12", "3.13", "3.14", "3.14t"]
    assert arm["variants"][0] == {
        "name": "cu130", "cuda": "13.0", "arch": FIVE, "arch_source": "arch_measured_platforms "
        "(CUDA_ARCH_FLAGS of the PyPI 2.13.0 linux-aarch64 wheel), no PTX",
        "arch_confidence": "high", "index": "pypi"}  # fmt: skip
    mac = got["macos-arm64"]
    assert (mac["tag"], mac["macos_min"], mac["pypi_default"]) == (
        "macosx_14_0_arm64",
        "14.0",
        "cpu",
    )
    assert "macos_min_python" not in mac
    assert got["windows-x86_64"]["pypi_default"] == "cpu"
    assert "glibc_min" not in got["windows-x86_64"]
    # what the check prints: one line a differing fact, nothing when equal
    packaged = {"torch": "2.13.0", "platforms": json.loads(json.dumps(got))}
    assert gen.apply_platforms(packaged, got, gen.PLATFORMS) == []
    packaged["platforms"] = json.loads(json.dumps(got))
    packaged["platforms"]["linux-aarch64"]["variants"][0]["arch"] = FIVE[:-1]
    del packaged["platforms"]["macos-arm64"]
    assert gen.apply_platforms(packaged, got, gen.PLATFORMS) == [
        f"2.13.0 linux-aarch64 cu130 arch: {FIVE[:-1]!r} -> {FIVE!r}",
        "2.13.0 macos-arm64: added (macosx_14_0_arm64, default cpu)",
    ]
    assert packaged["platforms"] == got


def test_a_partial_refresh_keeps_what_it_did_not_measure() -> None:
    """--platforms keeps the other platforms; --no-arch (arch None) keeps the packaged list."""
    arm = {"tag": "t", "pypi_default": "cu130",
           "variants": [{"name": "cu130", "arch": FIVE, "arch_source": "m",
                         "arch_confidence": "high", "index": "pypi"}]}  # fmt: skip
    mac = {"tag": "m", "pypi_default": "cpu", "variants": []}
    release = {"torch": "2.13.0", "platforms": {"linux-aarch64": arm, "macos-arm64": mac}}
    unmeasured = json.loads(json.dumps(arm))
    unmeasured["variants"][0] |= {"arch": None, "arch_source": "x", "arch_confidence": "unknown"}
    assert gen.apply_platforms(release, {"linux-aarch64": unmeasured}, ("linux-aarch64",)) == []
    assert release["platforms"] == {"linux-aarch64": arm, "macos-arm64": mac}


def test_the_packaged_platforms_cite_known_sources_and_lead_with_pypis_build() -> None:
    data = json.loads(gen.MATRIX.read_text())
    for rel in data["releases"]:
        for name, p in rel["platforms"].items():
            where = f"{rel['torch']} {name}"
            assert name in gen.PLATFORMS, where
            assert p["source"].split()[0] in data["sources"], where
            first, *rest = p["variants"]
            assert (first["name"], first["index"]) == (p["pypi_default"], "pypi"), where
            assert all(v["index"] == "pytorch" for v in rest), where
            assert len({v["name"] for v in p["variants"]}) == len(p["variants"]), where
            for v in p["variants"]:
                if v["cuda"] is not None:
                    ids = {w.strip("(;,") for w in v["arch_source"].split()}
                    assert ids & set(data["sources"]), f"{where} {v['name']}"


@pytest.mark.network
def test_the_platforms_are_what_pypi_serves_today(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every platform of 2.10.0 (aarch64 CPU) and 2.13.0 (aarch64 cu130) against PyPI, arch
    lists measured afresh (an empty cache: ~8 MB of ranges), then a wrong packaged fact fails."""
    cache = str(tmp_path / "cache")
    assert gen.main(["--releases", "2.10.0,2.13.0", "--check", "--cache", cache]) == 0
    data = json.loads(gen.MATRIX.read_text())
    rel = next(r for r in data["releases"] if r["torch"] == "2.13.0")
    rel["platforms"]["macos-arm64"]["macos_min"] = "11.0"
    wrong = tmp_path / "matrix.json"
    wrong.write_text(json.dumps(data))
    monkeypatch.setattr(gen, "MATRIX", wrong)
    argv = ["--releases", "2.13.0", "--platforms", "macos-arm64", "--check", "--cache", cache]
    assert gen.main(argv) == 1
