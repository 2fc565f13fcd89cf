"""GPU names, aliases, nvidia-smi names, bare architectures, suggestions; the kernel rule."""

from __future__ import annotations

import pytest

from torchship.compat import Matrix, lookup_gpu
from torchship.compat.archs import kernel_match, parse_arch, parse_cc
from torchship.errors import UnknownGPUError
from torchship.versions import driver_str, parse_version


@pytest.mark.parametrize(
    ("text", "name", "cc"),
    [
        ("H100", "H100", (9, 0)),
        ("h100", "H100", (9, 0)),
        ("NVIDIA H100 80GB HBM3", "H100", (9, 0)),
        ("NVIDIA H100 PCIe", "H100", (9, 0)),
        ("NVIDIA A100-SXM4-80GB", "A100", (8, 0)),
        ("Tesla V100-SXM2-16GB", "V100", (7, 0)),
        ("NVIDIA GeForce RTX 4090", "RTX 4090", (8, 9)),
        ("rtx 5090", "RTX 5090", (12, 0)),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", (8, 9)),
        ("Quadro RTX 6000", "Quadro RTX 6000", (7, 5)),
        ("NVIDIA L40S", "L40S", (8, 9)),
        ("NVIDIA B300", "B300", (10, 3)),
        ("Tesla T4", "T4", (7, 5)),
        ("NVIDIA GeForce GTX 1080 Ti", "GTX 1080 Ti", (6, 1)),
    ],
)
def test_names(matrix: Matrix, text: str, name: str, cc: tuple[int, int]) -> None:
    t = lookup_gpu(matrix, text)
    assert (t.label, t.cc) == (name, cc)


@pytest.mark.parametrize(
    ("text", "cc"),
    [
        ("sm_90", (9, 0)),
        ("9.0", (9, 0)),
        ("sm_120", (12, 0)),
        ("SM_86", (8, 6)),
        ("sm_90a", (9, 0)),
        ("10.3", (10, 3)),
    ],
)
def test_bare_architectures(matrix: Matrix, text: str, cc: tuple[int, int]) -> None:
    t = lookup_gpu(matrix, text)
    assert t.cc == cc and t.gpu is None and t.label == f"sm_{cc[0]}{cc[1]}"


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [("H10", "H100"), ("RTX 4900", "RTX 4090"), ("A1000", "A100"), ("L40x", "L40")],
)
def test_unknown_gpu_suggests_close_matches(matrix: Matrix, text: str, suggestion: str) -> None:
    with pytest.raises(UnknownGPUError) as e:
        lookup_gpu(matrix, text)
    assert suggestion in e.value.suggestions
    assert f"'{suggestion}'" in e.value.hint and e.value.exit_code == 2


def test_no_suggestion_for_nonsense(matrix: Matrix) -> None:
    with pytest.raises(UnknownGPUError) as e:
        lookup_gpu(matrix, "potato")
    assert e.value.suggestions == () and "sm_90" in e.value.hint


def test_aliases_are_unambiguous(matrix: Matrix) -> None:
    from torchship.compat.gpus import normalize

    seen: dict[tuple[str, ...], str] = {}
    for g in matrix.gpus:
        for alias in (g.name, *g.aliases):
            key = normalize(alias)
            assert seen.setdefault(key, g.name) == g.name, (alias, seen[key], g.name)


@pytest.mark.parametrize(
    ("archs", "cc", "expect"),
    [
        (["sm_80", "sm_86"], (8, 9), "sm_86"),  # Ada runs Ampere 8.6 SASS
        (["sm_90"], (10, 0), None),  # never across a major
        (["sm_100"], (10, 3), "sm_100"),
        (["sm_90", "compute_90"], (10, 0), "compute_90"),  # PTX JITs forward
        (["sm_86", "compute_86"], (8, 0), None),  # PTX never backwards
        (["sm_120", "compute_120"], (12, 0), "sm_120"),  # SASS preferred over PTX
        ([], (9, 0), None),
    ],
)
def test_kernel_rule(archs: list[str], cc: tuple[int, int], expect: str | None) -> None:
    m = kernel_match(tuple(parse_arch(a) for a in archs), cc)
    assert (m.token if m else None) == expect


def test_parsers_reject_garbage() -> None:
    for bad in ("sm90", "sm_9", "compute_", "9", "9.10", ""):
        with pytest.raises(ValueError, match="not"):
            parse_cc(bad)
    assert parse_arch("compute_120").ptx and parse_arch("sm_37").cc == (3, 7)
    assert driver_str(parse_version("580.65.06")) == "580.65.06"
    assert driver_str(parse_version("570.26")) == "570.26"
