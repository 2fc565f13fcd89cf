"""The example READMEs' claims, run: the commonly quoted `v2.9-cuda12.1` / `v2.6-cuda12.1`
builds do not exist, and `torchship resolve` says so and why (exit 1)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run_cli


@pytest.mark.parametrize("torch", ["2.9", "2.6"])
def test_cuda_12_1_is_refused_with_the_reason(torch: str) -> None:
    r = run_cli("resolve", "--torch", torch, "--cuda", "12.1", "--gpu", "H100")
    assert r.returncode == 1
    assert (
        "has no CUDA 12.1 build" in r.stdout
        and "CUDA 12.1 builds exist for torch 2.1.0–2.5.1" in r.stdout
    )
    readme = (REPO / f"examples/pytorch-cuda-{torch}/README.md").read_text()
    assert r.stdout.strip() in readme  # the README shows exactly what the command prints
