"""Every trap of shared/reference/compat/NOTES.md §5, as a table of expected resolutions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import codes, request, res
from torchship.compat import Matrix, Request
from torchship.compat.explain import explain
from torchship.compat.resolve import Resolution, resolve


def advice(r: Resolution) -> list[str]:
    return [s.text for s in explain(r)]


def chosen(r):  # type: ignore[no-untyped-def]
    return None if r.chosen is None else r.chosen.local_version


# §5.1 New GPU on an old build: no torch <= 2.6 has sm_100/sm_120 or any PTX fallback.
@pytest.mark.parametrize(
    ("torch", "gpu", "expect"),
    [
        ("2.6.0", "RTX 5090", None),
        ("2.6.0", "B200", None),
        ("2.5.1", "RTX PRO 6000 Blackwell", None),
        ("2.7.0", "RTX 5090", "2.7.0+cu128"),  # not the PyPI default cu126
        ("2.7.1", "B200", "2.7.1+cu128"),
        ("2.8.0", "RTX 5080", "2.8.0+cu128"),  # PyPI default now covers Blackwell
        ("2.13.0", "B300", "2.13.0+cu130"),  # 10.3 runs sm_100 SASS (same major)
        ("2.13.0", "GB10", "2.13.0+cu130"),  # 12.1 runs sm_120 SASS
    ],
)
def test_new_gpu_on_old_build(torch: str, gpu: str, expect: str | None) -> None:
    r = res(torch, [gpu])
    assert chosen(r) == expect
    if expect is None:
        assert set(codes(r).values()) <= {"arch-unsupported", "arch-unverified"}
        assert any("needs torch ≥ 2.7" in s for s in advice(r)), advice(r)


def test_new_gpu_suggestion_names_the_fix() -> None:
    r = res("2.6.0", ["RTX 5090"])
    assert "RTX 5090 (sm_120) needs torch ≥ 2.7.0 with cu128 or newer" in advice(r)
    assert "2.7.0+cu128 fits every target" in advice(r)


# §5.2 Old GPU on a new build.
@pytest.mark.parametrize(
    ("torch", "gpu", "expect"),
    [
        ("2.8.0", "GTX 1080", "2.8.0+cu126"),  # PyPI cu128 dropped Pascal
        ("2.14.1", "P100", "2.14.1+cu126"),
        ("2.15.0", "GTX 1080", None),  # no CUDA 12 build at all
        ("2.7.0", "V100", "2.7.0+cu126"),  # cu128 of 2.7 lacks sm_70; cu118 unverified
        ("2.9.1", "V100", "2.9.1+cu128"),  # Volta re-added to cu128 in 2.8-2.10
        ("2.11.0", "V100", "2.11.0+cu126"),  # dropped from cu128 again, never in cu13x
        ("2.15.0", "V100", None),
        ("2.0.0", "K80", "2.0.0+cu117"),  # sm_37 only in cu117/cu118
        ("2.5.1", "K80", "2.5.1+cu118"),
        ("2.4.0", "T4", "2.4.0+cu121"),
    ],
)
def test_old_gpu_on_new_build(torch: str, gpu: str, expect: str | None) -> None:
    assert chosen(res(torch, [gpu])) == expect


def test_old_gpu_says_until_when() -> None:
    r = res("2.15.0", ["GTX 1080"])
    assert "GTX 1080 (sm_61) is supported up to torch 2.14.1 (cu126)" in advice(r)
    assert "2.14.1+cu126 fits every target" in advice(r)


def test_kepler_never_in_cu12() -> None:
    r = res("2.4.0", ["K80"])
    assert chosen(r) == "2.4.0+cu118"
    assert codes(r)["2.4.0+cu121"] == "arch-unsupported"
    assert codes(r)["2.4.0+cu124"] == "arch-unsupported"


# §5.3 The PyPI default is not always usable.
def test_pypi_default_without_sm90() -> None:
    r = res("2.0.0", ["H100"])
    assert chosen(r) == "2.0.0+cu118"
    assert codes(r)["2.0.0+cu117"] == "arch-unsupported"
    assert r.index_url == "https://download.pytorch.org/whl/cu118"


def test_pypi_default_needs_newer_driver() -> None:
    r = res("2.11.0", ["A100"], driver="570.124.06")
    assert chosen(r) == "2.11.0+cu128"  # newest compatible when the default does not fit
    assert codes(r)["2.11.0+cu130"] == "forward-compat-only"


def test_pypi_default_preferred_when_compatible() -> None:
    r = res("2.9.1", ["H100"], driver="580.95.05")
    assert chosen(r) == "2.9.1+cu128"  # cu130 is newer, but PyPI's default fits
    assert r.index_url == "https://pypi.org/simple"
    assert "2.9.1+cu130" in r.compatible


# §5.4 Driver floors: only the CUDA major's floor (minor-version compatibility).
@pytest.mark.parametrize(
    ("driver", "variant", "ok"),
    [
        ("525.60.13", "cu128", True),  # exactly the 12.x floor
        ("525.60.12", "cu128", False),
        ("535.104.05", "cu128", True),  # older than the 12.8 toolkit driver, still fine
        ("580.65.06", "cu130", True),
        ("575.57.08", "cu130", False),
        ("450.80.02", "cu118", True),
        ("450.80.01", "cu118", False),
    ],
)
def test_driver_floors(driver: str, variant: str, ok: bool) -> None:
    torch = {"cu128": "2.9.1", "cu130": "2.13.0", "cu118": "2.3.1"}[variant]
    r = res(torch, ["RTX 3090"], driver=driver, cuda=variant)
    assert (chosen(r) == f"{torch}+{variant}") is ok
    if not ok:
        assert codes(r)[f"{torch}+{variant}"] == "driver-too-old"


def test_no_driver_target_is_not_assumed() -> None:
    r = res("2.13.0", ["H100"])
    assert chosen(r) == "2.13.0+cu130"
    assert any("no driver target given" in w for w in r.warnings)


# §5.5 Variants disappear.
@pytest.mark.parametrize(
    ("torch", "cuda", "last"),
    [
        ("2.8.0", "11.8", "2.7.1"),
        ("2.9.1", "12.1", "2.5.1"),
        ("2.7.0", "12.4", "2.6.0"),
        ("2.12.0", "12.8", "2.11.0"),
        ("2.15.0", "12.6", "2.14.1"),
    ],
)
def test_vanished_variants(torch: str, cuda: str, last: str) -> None:
    r = res(torch, ["A100"], cuda=cuda)
    assert not r.ok
    label = f"{torch}+cu{cuda.replace('.', '')}"
    assert codes(r)[label] == "variant-not-built"
    reason = next(x.reason for x in r.rejected if x.variant == label)
    assert f"–{last}" in reason


def test_impossible_quoted_tag_explained() -> None:
    """`v2.9-cuda12.1` is quoted often and cannot exist."""
    r = res("2.9", ["H100"], cuda="12.1")
    assert not r.ok and r.compatible
    assert "set cuda = 'auto'" in advice(r)[0]


# §5.6 Python availability (incl. free-threaded).
@pytest.mark.parametrize(
    ("torch", "python", "ok"),
    [
        ("2.4.1", "3.8", True),
        ("2.5.0", "3.8", False),
        ("2.4.1", "3.13", False),
        ("2.5.0", "3.13", True),
        ("2.8.0", "3.9", True),
        ("2.9.0", "3.9", False),
        ("2.9.0", "3.14", True),
        ("2.7.0", "3.13t", True),
        ("2.12.0", "3.13t", True),
        ("2.12.1", "3.13t", False),
        ("2.9.0", "3.14t", True),
        ("2.15.0", "3.15", True),
        ("2.15.0", "3.10", False),
    ],
)
def test_python_availability(torch: str, python: str, ok: bool) -> None:
    r = res(torch, ["A100"], python=python)
    assert r.ok is ok
    if not ok:
        assert set(codes(r).values()) == {"python-unavailable"}
        assert any(f"Python {python}" in s for s in advice(r))


# §5.4 across a major: forward compatibility, data-center GPUs only, never GeForce.
def test_forward_compat_never_on_geforce() -> None:
    r = res("2.15.0", ["RTX 4090"], driver="550.54.15")
    assert not r.ok
    assert set(codes(r).values()) == {"driver-too-old"}
    assert "not available on GeForce GPUs (RTX 4090)" in r.rejected[0].reason
    assert r.forward_compatible == ()


def test_forward_compat_reported_for_data_center() -> None:
    r = res("2.15.0", ["A100"], driver="535.104.05")  # R535: an LTSB cuda-compat supports
    assert not r.ok
    assert set(codes(r).values()) == {"forward-compat-only"}
    assert r.forward_compatible == ("2.15.0+cu130", "2.15.0+cu132")
    allowed = res("2.15.0", ["A100"], driver="535.104.05", allow_forward_compat=True)
    assert chosen(allowed) == "2.15.0+cu132"
    assert allowed.chosen is not None and allowed.chosen.forward_compat
    assert any("cuda-compat-13-2" in w for w in allowed.warnings)


def test_forward_compat_not_on_a_branch_nvidia_does_not_support_it_on() -> None:
    # R550 is neither in the forward-compatibility table nor a supported branch any more
    r = res("2.15.0", ["A100"], driver="550.54.15", allow_forward_compat=True)
    assert not r.ok and set(codes(r).values()) == {"driver-too-old"}
    assert "does not support driver branch R550" in r.rejected[0].reason
    assert r.forward_compatible == ()


def test_mixed_fleet_blocks_forward_compat() -> None:
    r = res("2.15.0", ["A100", "RTX 4090"], driver="535.104.05", allow_forward_compat=True)
    assert not r.ok
    assert set(codes(r).values()) == {"driver-too-old"}


# §5.8 glibc: torch >= 2.7 wheels are manylinux_2_28.
def test_glibc_floor() -> None:
    r = res("2.7.0", ["A100"], glibc="2.17")
    assert not r.ok and set(codes(r).values()) == {"glibc-too-old"}
    assert res("2.6.0", ["A100"], glibc="2.17").ok
    assert res("2.7.0", ["A100"], glibc="2.28").ok


# §5.7 Container guard: the base image's CUDA must not exceed what the driver reports.
def test_base_image_lowered_to_the_driver_cuda() -> None:
    r = res("2.9.1", ["RTX 4090"], driver="550.54.15")
    assert chosen(r) == "2.9.1+cu128"
    assert r.base_image == "nvidia/cuda:12.4.1-base-ubuntu22.04"
    assert res("2.9.1", ["RTX 4090"], driver="575.57.08").base_image == (
        "nvidia/cuda:12.8.1-base-ubuntu24.04"
    )


def test_ptx_jit_needs_the_toolkit_driver() -> None:
    # A future sm_130 GPU only runs 2.7.0+cu128 through its compute_120 PTX, which needs the
    # CUDA 12.8 toolkit driver (570.26), not just the 12.x floor.
    assert res("2.7.0", ["sm_130"], driver="570.26", cuda="12.8").ok
    r = res("2.7.0", ["sm_130"], driver="560.35.03", cuda="12.8")
    assert codes(r)["2.7.0+cu128"] == "driver-too-old-for-ptx"


def test_domain_library_pairs() -> None:
    """No torchaudio 2.12 exists, but torchaudio 2.11.1 declares torch>=2.11 (its maintainers:
    2.11 works with every later torch), so torch 2.12 has a torchaudio; the lock pins it."""
    from torchship.compat import load_matrix
    from torchship.lock.compile import companion_versions

    assert res("2.12.0", ["A100"], domain=("torchaudio",)).ok
    release = load_matrix().release("2.12.0")
    assert release is not None and companion_versions("torchaudio", release, "3.12")[-1] == "2.11.1"
    assert res("2.11.0", ["A100"], domain=("torchaudio", "torchvision")).ok


def test_cpu_build() -> None:
    r = res("2.13.0", cuda="cpu", python="3.11")
    assert chosen(r) == "2.13.0+cpu"
    assert r.index_url == "https://download.pytorch.org/whl/cpu"
    assert r.base_image == "python:3.11-slim-bookworm"


def test_range_picks_newest_release_that_fits() -> None:
    r = res(">=2.5,<2.16", ["GTX 1080"])
    assert chosen(r) == "2.14.1+cu126"
    r = res(">=2.0,<2.7", ["RTX 5090"])
    assert not r.ok


# --- companion packages (measured from PyPI into the matrix: tools/gen_matrix.py --domain) ---


def _companion_req(torch: str, python: str | None = None, patch: str | None = None,
                   packages: tuple[str, ...] = ("torchvision",)) -> Request:  # fmt: skip
    from torchship.compat.request import domain_libraries, domain_pins

    base = request(torch, python=python, domain=domain_libraries(packages))
    return replace(base, domain_pins=domain_pins(packages), python_patch=patch)


def test_torchvision_0_20_has_no_python_3_13_wheel(matrix: Matrix) -> None:
    """torch 2.5.1 has cp313 wheels, its torchvision 0.20.1 does not (PyPI file list)."""
    res = resolve(_companion_req("2.5.1", "3.13"), matrix)
    assert not res.ok
    reasons = {r.code: r.reason for r in res.rejected}
    assert (
        "torchvision 0.20.1 (for torch 2.5.1) has no wheel for Python 3.13"
        in (reasons["domain-library-unavailable"])
    )
    assert resolve(_companion_req("2.5.1", "3.12"), matrix).ok


def test_requires_python_excludes_a_patch_level(matrix: Matrix) -> None:
    """torchvision 0.26+ declares Requires-Python >=3.10,!=3.14.1 (pytorch/vision#9307)."""
    assert not resolve(_companion_req("2.11.0", "3.14", "3.14.1"), matrix).ok
    assert resolve(_companion_req("2.11.0", "3.14", "3.14.2"), matrix).ok
    assert resolve(_companion_req("2.11.0", "3.14"), matrix).ok  # some 3.14 patch is admitted


def test_a_companion_pin_no_torch_in_range_accepts_is_nothing_fits(matrix: Matrix) -> None:
    res = resolve(_companion_req(">=2.11", packages=("torchaudio==2.10.0",)), matrix)
    assert not res.ok
    why = {r.reason for r in res.rejected if r.code == "domain-library-unavailable"}
    assert any("torchaudio==2.10.0 does not install beside torch 2.11.0" in w
               and "2.10.0 needs torch ==2.10.0" in w for w in why)  # fmt: skip
    assert resolve(_companion_req(">=2.9", packages=("torchaudio==2.10.0",)), matrix).chosen


def test_a_companion_that_accepts_later_torch_pairs_with_it(matrix: Matrix) -> None:
    """torchvision 0.29.2 declares torch>=2.14.0 and torchaudio 2.11.1 torch>=2.11: torch
    2.15 has both, though neither names it."""
    assert resolve(_companion_req("2.15.0", "3.12", packages=("torchvision", "torchaudio")),
                   matrix).ok  # fmt: skip


def test_every_exact_pair_is_a_companion_that_accepts_its_torch(matrix: Matrix) -> None:
    for rel in matrix.releases:
        for lib, pairs in (("torchvision", rel.torchvision), ("torchaudio", rel.torchaudio)):
            rows = {c.version: c for c in matrix.companions_of(lib)}
            for v in pairs:
                assert rows[v].accepts(rel.version), (lib, v, rel.torch)


# --- CUDA extensions locked beside torch (compat/data/extensions.json) ---


def _ext_req(torch: str, *packages: str, **kw: object) -> Request:
    from torchship.compat.extensions import extension_pins

    return replace(request(torch, **kw), extension_pins=extension_pins(packages))  # type: ignore[arg-type]


def test_an_xformers_pin_for_another_torch_is_unpaired(matrix: Matrix) -> None:
    """xformers 0.0.29's wheels require torch==2.5.1 (PyPI Requires-Dist)."""
    res = resolve(_ext_req("2.9.1", "xformers==0.0.29"), matrix)
    assert not res.ok and set(codes(res).values()) == {"extension-unpaired"}
    assert "xformers==0.0.29 was built for torch ==2.5.1, not 2.9.1" in res.rejected[0].reason
    assert resolve(_ext_req("2.9.1", "xformers==0.0.33.post2"), matrix).ok
    assert resolve(_ext_req("2.9.1", "xformers==0.0.1"), matrix).ok  # no facts: not judged


def test_bitsandbytes_without_a_library_for_the_cuda_moves_the_choice(matrix: Matrix) -> None:
    """bitsandbytes 0.49.2 bundles libraries up to cu130; torch 2.15's default is cu132, so
    the resolver picks cu130, and bitsandbytes>=0.50 (cu132 bundled) keeps the default."""
    req = _ext_req("2.15.0", "bitsandbytes==0.49.2", gpus=["H100"], driver="590.44.01")
    res = resolve(req, matrix)
    assert res.chosen is not None and res.chosen.local_version == "2.15.0+cu130"
    assert "no library for cu132" in codes_and_reasons(res)["2.15.0+cu132"]
    req = _ext_req("2.15.0", "bitsandbytes>=0.50", gpus=["H100"], driver="590.44.01")
    assert resolve(req, matrix).chosen.local_version == "2.15.0+cu132"  # type: ignore[union-attr]


def test_torchao_and_flash_attn_are_warnings(matrix: Matrix) -> None:
    res = resolve(_ext_req("2.13.0", "torchao==0.16.0", "flash-attn"), matrix)
    assert res.ok
    assert "torchao==0.16.0 was built for torch ==2.10.0, not 2.13.0" in res.warnings
    assert any(w.startswith("flash-attn has no wheel on PyPI") for w in res.warnings)


def codes_and_reasons(res: Resolution) -> dict[str, str]:
    return {r.variant: r.reason for r in res.rejected}
