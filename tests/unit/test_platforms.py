"""Platforms: names, which GPUs live where, and each family of platform facts as a table.

Every fact below cites its source; the full notes with more sources are in
tools/research/platforms.md (section numbers given as §N).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from packaging.specifiers import SpecifierSet

from torchship.compat import Matrix, Request, lookup_gpu
from torchship.compat.archs import kernel_match, parse_arch
from torchship.compat.fleet import resolve_fleet
from torchship.compat.platforms import PLATFORMS, parse_platform
from torchship.compat.request import fleet_platforms
from torchship.compat.resolve import resolve
from torchship.versions import parse_version


def _req(
    m: Matrix, torch: str, *gpus: str, platforms: tuple[str, ...] = (), **kw: object
) -> Request:
    targets = tuple(lookup_gpu(m, g) for g in gpus)
    fleet = fleet_platforms(targets, platforms)
    return replace(
        Request(
            torch=SpecifierSet(f"=={torch}" if torch[0].isdigit() else torch), torch_text=torch
        ),
        gpus=targets,
        platform=fleet[0],
        platforms=fleet,
        platforms_implied=not platforms,
        **kw,  # type: ignore[arg-type]
    )


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("linux-x86_64", "linux-x86_64"),
        ("linux-64", "linux-x86_64"),  # pixi
        ("linux/arm64", "linux-aarch64"),  # docker
        ("Linux-AArch64", "linux-aarch64"),
        ("win_amd64", "windows-x86_64"),  # the wheel tag
        ("win-64", "windows-x86_64"),
        ("osx-arm64", "macos-arm64"),
        ("osx-64", "macos-x86_64"),
    ],
)
def test_platform_names_and_aliases(text: str, name: str) -> None:
    assert parse_platform(text) == name


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("arm64", "ambiguous: say linux-aarch64 or macos-arm64"),
        ("linux-aarch46", "did you mean 'linux-aarch64'?"),
        ("solaris", "one of linux-x86_64, linux-aarch64"),
    ],
)
def test_a_bad_platform_name_says_what_is_valid(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_platform(text)


# --- which GPUs live where (platforms.md §8) ----------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "named", "fleet"),
    [
        ((), (), ("linux-x86_64",)),
        (("H100",), (), ("linux-x86_64",)),  # usually x86_64 (HGX, PCIe)
        (("GB200",), (), ("linux-aarch64",)),  # Grace: aarch64 only
        (("GH200",), (), ("linux-aarch64",)),
        (("GB300",), (), ("linux-aarch64",)),
        (("DGX Spark",), (), ("linux-aarch64",)),
        (("Jetson AGX Orin",), (), ("linux-aarch64",)),
        (("Thor",), (), ("linux-aarch64",)),
        (("GB200", "H100"), (), ("linux-aarch64", "linux-x86_64")),
        (("H100",), ("linux-aarch64",), ("linux-aarch64",)),  # an H100 PCIe in an Arm server
        (("RTX 4090",), ("windows-x86_64",), ("windows-x86_64",)),
    ],
)
def test_gpus_imply_their_platform(
    matrix: Matrix, gpus: tuple[str, ...], named: tuple[str, ...], fleet: tuple[str, ...]
) -> None:
    assert fleet_platforms(tuple(lookup_gpu(matrix, g) for g in gpus), named) == fleet


@pytest.mark.parametrize(
    ("gpu", "named", "says"),
    [
        ("GB200", ("linux-x86_64",), "GB200 is only on linux-aarch64"),
        ("Jetson AGX Orin", ("windows-x86_64",), "only on linux-aarch64"),
        ("RTX 4090", ("macos-arm64",), "macos-arm64 has no NVIDIA GPUs"),
    ],
)
def test_a_gpu_on_a_platform_it_cannot_be_on_is_an_error(
    matrix: Matrix, gpu: str, named: tuple[str, ...], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        fleet_platforms((lookup_gpu(matrix, gpu),), named)


def test_every_platform_the_matrix_names_is_known(matrix: Matrix) -> None:
    for rel in matrix.releases:
        assert {p for p, _ in rel.platforms} <= set(PLATFORMS), rel.torch
    for g in matrix.gpus:
        assert set(g.platforms) <= set(PLATFORMS), g.name


# --- kernels: Tegra and arch-specific targets (CUDA Programming Guide; §4, §5) -----------------


@pytest.mark.parametrize(
    ("archs", "cc", "loads"),
    [
        # desktop: an sm_80 cubin runs on 8.6 (same major, higher minor)
        (("sm_80",), (8, 6), "sm_80"),
        # Tegra: "binary compatibility is supported only for the desktop" -> not on Orin's 8.7
        (("sm_80", "sm_90"), (8, 7), None),
        (("sm_87",), (8, 7), "sm_87"),
        (("sm_80", "compute_80"), (8, 7), "compute_80"),  # PTX still JITs on a Jetson
        (("sm_110",), (11, 0), "sm_110"),  # Thor under CUDA 13
        # `a`: exactly that capability, as cubin and as PTX
        (("sm_90a",), (9, 0), "sm_90a"),
        (("sm_100a",), (10, 3), None),  # not on GB300's 10.3
        (("compute_90a",), (10, 0), None),  # no forward compatibility for `a` PTX
        (("sm_120a",), (12, 1), None),  # not on GB10's 12.1
        # `f`: the family (10.0 -> 10.0, 10.3; 12.0 -> 12.0, 12.1; 11.0 only)
        (("sm_100f",), (10, 3), "sm_100f"),
        (("sm_120f",), (12, 1), "sm_120f"),
        (("sm_100f",), (11, 0), None),  # Thor is not in the 10.x family
        (("sm_103f",), (10, 0), None),
    ],
)
def test_which_code_loads_on_which_gpu(
    archs: tuple[str, ...], cc: tuple[int, int], loads: str | None
) -> None:
    found = kernel_match(tuple(parse_arch(a) for a in archs), cc)
    assert (found.token if found else None) == loads


# --- drivers: too new for old GPUs, Jetson numbers, forward compatibility per branch -----------


@pytest.mark.parametrize(
    ("gpu", "torch", "driver", "code"),
    [
        # nv_arch_matrix: Maxwell, Pascal, Volta end at R580; R590+ ignores them (nv_legacy_595)
        ("V100", "2.7.0", "595.45.04", "driver-too-new"),
        ("GTX 1080", "2.7.0", "590.44.01", "driver-too-new"),
        ("M60", "2.7.0", "580.65.06", None),
        ("V100", "2.7.0", "580.65.06", None),
        ("K80", "2.0.0", "535.104.05", "driver-too-new"),  # Kepler ends at R470
        ("T4", "2.7.0", "595.45.04", None),  # Turing stays supported
    ],
)
def test_a_driver_too_new_for_an_old_gpu(
    matrix: Matrix, gpu: str, torch: str, driver: str, code: str | None
) -> None:
    res = resolve(_req(matrix, torch, gpu, driver=parse_version(driver)), matrix)
    if code is None:
        assert res.ok, res.rejected[:2]
        return
    assert not res.ok
    kernels = {r.code for r in res.rejected} - {"arch-unsupported", "arch-unverified"}
    assert kernels == {code}  # every build with kernels for it fails on the driver alone
    assert "R470" in res.rejected[-1].reason or "R580" in res.rejected[-1].reason


def test_a_jetson_driver_is_not_a_desktop_branch(matrix: Matrix) -> None:
    # JetPack 7 on Thor reports a 580-series driver such as "580.00": below the desktop CUDA 13
    # floor 580.65.06 as a number, but CUDA 13 is what JetPack 7 brings (jetson_driver)
    thor = _req(matrix, "2.13.0", "Thor", driver=parse_version("580.00"))
    res = resolve(thor, matrix)
    assert res.ok and res.chosen is not None and res.chosen.variant.name == "cu130"
    # JetPack 6 (driver 540.4.0) has CUDA 12: no CUDA 13 build runs, whatever the number says
    jp6 = resolve(replace(thor, driver=parse_version("540.4.0")), matrix)
    assert not jp6.ok
    assert any("JetPack" in r.reason for r in jp6.rejected)


def test_jetson_orin_is_not_served_by_pypi_and_says_where_to_go(matrix: Matrix) -> None:
    res = resolve(_req(matrix, "2.13.0", "Jetson AGX Orin"), matrix)
    assert not res.ok
    assert all(r.code == "arch-unsupported" for r in res.rejected)
    assert "pypi.jetson-ai-lab.io" in res.rejected[0].reason


@pytest.mark.parametrize(
    ("driver", "ok", "says"),
    [
        ("535.104.05", True, ""),  # LTSB: cuda-compat-13-0 supported
        ("570.124.06", True, ""),  # production branch
        ("550.54.15", False, "does not support driver branch R550"),  # not a supported branch
        ("560.35.03", False, "does not support driver branch R560"),
    ],
)
def test_forward_compatibility_depends_on_the_driver_branch(
    matrix: Matrix, driver: str, ok: bool, says: str
) -> None:
    req = _req(
        matrix,
        "2.13.0",
        "H100",
        cuda="13.0",
        driver=parse_version(driver),
        allow_forward_compat=True,
    )
    res = resolve(req, matrix)
    assert res.ok is ok, res.rejected
    if not ok:
        assert says in res.rejected[0].reason


def test_forward_compatibility_is_never_for_geforce(matrix: Matrix) -> None:
    req = _req(
        matrix, "2.13.0", "RTX 4090", cuda="13.0", driver=parse_version("570.124.06"),
        allow_forward_compat=True,
    )  # fmt: skip
    res = resolve(req, matrix)
    assert not res.ok and "GeForce" in res.rejected[0].reason


# --- the wheels per platform (measured from PyPI by tools/gen_matrix.py; §1-3) -----------------


def _on(matrix: Matrix, torch: str, platform: str):  # type: ignore[no-untyped-def]
    rel = matrix.release(torch)
    assert rel is not None
    return rel.on(platform)


@pytest.mark.parametrize(
    ("torch", "default"),
    [("2.10.0", "cpu"), ("2.11.0", "cu130"), ("2.13.0", "cu130"), ("2.15.0", "cu132")],
)
def test_pypi_aarch64_wheels_are_cuda_builds_from_2_11(
    matrix: Matrix, torch: str, default: str
) -> None:
    view = _on(matrix, torch, "linux-aarch64")
    assert view.pypi_default == default
    if default != "cpu":
        archs = view.variant(default).arch_tokens()
        assert archs == ("sm_80", "sm_90", "sm_100", "sm_110", "sm_120")  # measured, no PTX


@pytest.mark.parametrize(
    ("gpu", "ok"),
    [
        ("T4", False),  # 7.5: no sm_7x, no PTX
        ("A10", True),  # 8.6 runs sm_80
        ("GH200", True),
        ("GB200", True),
        ("GB300", True),  # 10.3 runs sm_100
        ("DGX Spark", True),  # 12.1 runs sm_120
        ("Thor", True),  # native sm_110
        ("Jetson AGX Orin", False),  # Tegra: sm_80 does not run on 8.7
    ],
)
def test_what_the_pypi_aarch64_build_runs_on(matrix: Matrix, gpu: str, ok: bool) -> None:
    req = _req(matrix, "2.13.0", gpu, platforms=("linux-aarch64",), cuda="13.0")
    res = resolve(req, matrix)
    assert (res.chosen is not None and res.chosen.index_url == "https://pypi.org/simple") is ok


def test_every_windows_wheel_on_pypi_is_a_cpu_build(matrix: Matrix) -> None:
    for rel in matrix.releases:
        view = rel.on("windows-x86_64")
        assert view is not None, rel.torch
        assert view.pypi_default == "cpu", rel.torch


def test_a_windows_cuda_user_is_sent_to_the_pytorch_index(matrix: Matrix) -> None:
    res = resolve(_req(matrix, "2.13.0", "RTX 4090", platforms=("windows-x86_64",)), matrix)
    assert res.chosen is not None and not res.chosen.variant.is_cpu
    assert res.chosen.index_url.startswith("https://download.pytorch.org/whl/cu")
    assert any("PyPI's Windows wheels are CPU builds" in w for w in res.warnings)


@pytest.mark.parametrize(
    ("torch", "x86", "tag"),
    [
        ("2.2.2", True, "macosx_11_0_arm64"),
        ("2.3.0", False, "macosx_11_0_arm64"),
        ("2.11.0", False, "macosx_11_0_arm64"),
        ("2.12.0", False, "macosx_14_0_arm64"),
        ("2.15.0", False, "macosx_14_0_arm64"),
    ],
)
def test_macos_wheels(matrix: Matrix, torch: str, x86: bool, tag: str) -> None:
    assert (_on(matrix, torch, "macos-x86_64") is not None) is x86
    assert _on(matrix, torch, "macos-arm64").platform_tag == tag


def test_a_mac_gets_its_mps_build_whatever_the_cuda_pin(matrix: Matrix) -> None:
    req = _req(matrix, "2.13.0", platforms=("linux-x86_64", "macos-arm64"), cuda="13.0")
    fleet = resolve_fleet(req, matrix)
    assert fleet.ok and fleet.torch == "2.13.0"
    mac = fleet.on("macos-arm64")
    assert mac is not None and mac.chosen is not None and mac.chosen.variant.is_cpu
    assert mac.chosen.index_url == "https://pypi.org/simple"
    assert any("macOS ≥ 14" in w for w in mac.warnings)


def test_a_fleet_agrees_on_one_torch_or_says_why_not(matrix: Matrix) -> None:
    both = resolve_fleet(_req(matrix, ">=2.0", platforms=("linux-x86_64", "macos-x86_64")), matrix)
    assert both.ok and both.torch == "2.2.2"  # Intel Macs stop at 2.2.2
    none = resolve_fleet(_req(matrix, ">=2.3", platforms=("linux-x86_64", "macos-x86_64")), matrix)
    assert not none.ok
    assert "no torch release runs on every platform" in none.problem
    assert "macos-x86_64: none" in none.problem


def test_the_json_contract_keeps_todays_fields_for_one_platform(matrix: Matrix) -> None:
    req = _req(matrix, "2.13.0", "H100", driver=parse_version("580.65.06"))
    single = resolve(req, matrix).to_json()
    fleet = resolve_fleet(req, matrix).to_json()
    assert {k: fleet[k] for k in single} == single
    assert fleet["platform"] == "linux-x86_64" and len(fleet["platforms"]) == 1
    json.dumps(fleet)  # serialisable


def test_a_mac_wheel_for_a_newer_python_can_need_a_newer_macos(matrix: Matrix) -> None:
    # torch 2.10.0: the cp3xx wheels are macosx_11_0, the 3.14 ones macosx_14_0 (measured)
    for python, floor in (("3.12", "11.0"), ("3.14", "14.0")):
        res = resolve(_req(matrix, "2.10.0", platforms=("macos-arm64",), python=python), matrix)
        assert any(f"macOS ≥ {floor}" in w for w in res.warnings), (python, res.warnings)


@pytest.mark.parametrize("cuda", ["auto", "cpu", "12.6", "13.0"])
@pytest.mark.parametrize("gpus", [(), ("sm_90",), ("sm_80", "sm_120")])
def test_every_release_that_does_not_run_says_why_with_a_documented_code(
    matrix: Matrix, cuda: str, gpus: tuple[str, ...]
) -> None:
    """`resolve` with several releases prints one row per release: a release with no build
    that runs names a code of docs/resolver.md and a reason, on every platform (GPU targets
    once met linux-aarch64's CPU-only releases with an empty "no-build:")."""
    from pathlib import Path

    from torchship.compat.fleet import per_release

    doc = (Path(__file__).parents[2] / "docs/resolver.md").read_text()
    for platform in PLATFORMS:
        if gpus and platform.startswith("macos"):
            continue  # an NVIDIA GPU on a Mac is a usage error (tested above)
        req = _req(matrix, ">=2.0", *gpus, platforms=(platform,), cuda=cuda)
        for row in per_release(req, matrix):
            if row.build is None:
                assert f"| `{row.code}` |" in doc, (platform, row)
                assert row.reason, (platform, row)
