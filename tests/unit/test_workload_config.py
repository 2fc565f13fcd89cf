"""The workload's settings (pure): flags, [job.workload_args] validation, FLOPs and peaks."""

from __future__ import annotations

import pytest

from torchship.workload.config import ArgError, args_from_table, check_table, parse_args
from torchship.workload.flops import flops_per_token, mfu, peak_tflops


def test_flags_and_table_name_the_same_settings() -> None:
    cfg = parse_args(["--steps", "7", "--d-model", "64", "--heads", "2", "--amp", "bf16"])
    assert (cfg.steps, cfg.d_model, cfg.heads, cfg.amp) == (7, 64, 2, "bf16")
    argv = args_from_table({"steps": 7, "d_model": 64, "heads": 2, "amp": "bf16", "lr": 1})
    assert parse_args(argv) == cfg.__class__(**{**cfg.to_json(), "lr": 1.0})


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"stepz": 3}, "stepz", "did you mean steps?"),
        ({"steps": "ten"}, "steps", "an integer"),
        ({"steps": True}, "steps", "an integer"),
        ({"lr": "fast"}, "lr", "a number"),
        ({"steps": 0}, "steps", "≥ 1"),
        ({"d_model": 100, "heads": 3}, "d_model", "multiple of heads"),
        ({"amp": "fp8"}, "amp", "one of auto, bf16, off"),
        ({"compile": "max"}, "compile", "one of off, inductor, aot_eager"),
    ],
)
def test_bad_workload_args_name_the_key(table: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ArgError) as e:
        check_table(table)
    assert e.value.key == key
    assert words in f"{e.value} {e.value.hint}"


def test_bad_flag_exits_with_usage() -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(["--heads", "3"])
    assert e.value.code == 2


def test_peak_lookup_prefers_the_specific_name() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA L40S") == 362.0
    assert peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("Tesla T4") is None


def test_flops_and_mfu() -> None:
    # PaLM appendix B: 6N + 12·L·d·T per token
    assert flops_per_token(1_000_000, 2, 128, 64) == 6_000_000 + 12 * 2 * 128 * 64
    # 1e12 FLOP/s achieved on a 100 TFLOP/s peak: 1 %
    assert mfu(1e6, 1_000_000, 100.0, 1) == pytest.approx(0.01)
    assert mfu(1e6, 1_000_000, 100.0, 2) == pytest.approx(0.005)
