"""collect_env reports of several torch versions -> Facts; bad input -> exit 2; fuzzed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchship.compat import Matrix, load_matrix
from torchship.doctor.collect_env import parse_collect_env
from torchship.errors import UsageError

DATA = Path(__file__).resolve().parents[1] / "data/collect_env"


def parse(name: str, matrix: Matrix):  # type: ignore[no-untyped-def]
    return parse_collect_env((DATA / name).read_text(), matrix, name)


def test_this_machine_cpu_build_next_to_host_nvcc(matrix: Matrix) -> None:
    """The real report of this machine: collect_env says 'CUDA runtime version: 13.0.88'."""
    f = parse("torch-2.13.0-cpu-debian12-host-nvcc.txt", matrix)
    assert f.torch == "2.13.0+cpu" and f.torch_cuda is None  # never CUDA 13.0 for torch
    assert f.host_nvcc == "13.0.88" and f.torch_cudnn is None
    assert f.glibc == "2.36" and f.python == "3.11.7" and f.cuda_available is False
    assert f.gpus == () and f.driver is None
    assert f.packages["torch"] == "2.13.0+cpu" and "could" not in f.packages


def test_torch_1x_format(matrix: Matrix) -> None:
    f = parse("torch-1.7.1-cu102-rtx2070.txt", matrix)
    assert (f.torch, f.torch_cuda, f.driver) == ("1.7.1", "10.2", "450.102.04")
    assert [g.name for g in f.gpus] == ["GeForce RTX 2070"]
    assert f.system_cudnn == ("/usr/lib/x86_64-linux-gnu/libcudnn.so.7.6.5",)
    assert f.torch_arch is None  # 1.7.1 is outside the matrix: nothing inferred
    assert f.packages["torchvision"] == "0.8.2" and f.packages["pytorch"] == "1.7.1"


def test_multi_gpu_and_system_cudnn_list(matrix: Matrix) -> None:
    f = parse("torch-2.1.0-cu121-8xa100.txt", matrix)
    assert len(f.gpus) == 8 and f.gpus[7].index == 7 and f.gpus[0].name == "NVIDIA A100-SXM4-80GB"
    assert len(f.system_cudnn) == 3 and f.host_nvcc == "11.8.89"
    # Torch's own cuDNN is not in the report; it is inferred, and marked so.
    assert f.torch_cudnn == "8.9.2.26" and f.sources["torch_cudnn"].startswith("inferred")
    assert f.torch_arch is not None and "sm_90" in f.torch_arch
    assert f.env == {"CUDA_MODULE_LOADING": "LAZY"}


def test_arch_list_inferred_for_a_new_gpu_report(matrix: Matrix) -> None:
    f = parse("torch-2.6.0-cu124-rtx5090.txt", matrix)
    assert f.torch_arch == ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")
    assert f.sources["torch_arch"] == "inferred from the matrix for 2.6.0+cu124"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("   \n\n", "is empty"),
        ("hello world\nthis is not it\n", "does not look like a collect_env report"),
        ("\x00\x01\x02PyTorch version: 2.1.0", "is binary"),
    ],
)
def test_bad_reports(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as e:
        parse_collect_env(text, load_matrix(), "r.txt")
    assert e.value.exit_code == 2 and "collect_env" in e.value.hint


def test_a_cut_short_report_is_read_for_what_it_has(matrix: Matrix) -> None:
    """Partial input is normal: no 'truncated' refusal, and an unlabelled version is not called
    a CPU build when the report does not say which platform it is from."""
    f = parse_collect_env("PyTorch version: 2.1.0\nIs debug build: False\n", matrix, "r")
    assert f.torch == "2.1.0" and f.build is None and f.torch_cuda is None
    linux = parse_collect_env(
        "PyTorch version: 2.1.0\nOS: Ubuntu 22.04.3 LTS (x86_64)\n", matrix, "r"
    )
    assert linux.build == "cuda" and linux.torch_cuda == "12.1"
    assert linux.sources["torch_cuda"].startswith("inferred: PyPI's default build")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_text(text: str) -> None:
    try:
        parse_collect_env(text, load_matrix(), "fuzz")
    except UsageError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(p.name for p in DATA.glob("*.txt"))),
    st.integers(0, 4000),
    st.text(max_size=30),
)
def test_fuzz_truncated_and_spliced_reports(name: str, cut: int, junk: str) -> None:
    text = (DATA / name).read_text()
    try:
        parse_collect_env(text[:cut] + junk + text[cut + len(junk) :], load_matrix(), "fuzz")
    except UsageError as e:
        assert e.hint
