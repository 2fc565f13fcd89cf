"""Every torch 2.0–2.15 release × CUDA variant × GPU model × driver, against the oracle."""

from __future__ import annotations

from tests import oracle
from torchship.compat import Matrix, Request, lookup_gpu
from torchship.compat.resolve import resolve
from torchship.spec.fields import parse_driver, parse_torch


def test_every_case_agrees_with_the_oracle(matrix: Matrix) -> None:
    data = oracle.raw()
    checked = 0
    mismatches = []
    for release, gpu, driver in oracle.cases(data):
        target = lookup_gpu(matrix, gpu["name"])
        spec, _ = parse_torch(release["torch"])
        req = Request(
            torch=spec,
            torch_text=release["torch"],
            gpus=(target,),
            driver=parse_driver(driver) if driver else None,
        )
        got = resolve(req, matrix)
        names, pick = oracle.expected(data, release, target.cc, driver)
        got_pick = got.chosen.local_version if got.chosen else None
        if list(got.compatible) != names or got_pick != pick:
            mismatches.append((release["torch"], gpu["name"], driver, got.compatible, names))
        # Completeness: every variant is either compatible or rejected with a reason, once.
        seen = list(got.compatible) + [r.variant for r in got.rejected]
        gpu_variants = [f"{release['torch']}+{v['name']}" for v in release["variants"] if v["cuda"]]
        assert sorted(seen) == sorted(gpu_variants), (release["torch"], gpu["name"], driver)
        assert all(r.reason and r.code for r in got.rejected)
        checked += 1
    assert checked == len(data["releases"]) * len(data["gpus"]) * len(oracle.DRIVERS)
    assert mismatches == []


def test_every_platform_case_agrees_with_the_oracle(matrix: Matrix) -> None:
    """The same over linux-aarch64 and windows-x86_64 (macOS has no NVIDIA GPU)."""
    data = oracle.raw()
    checked = 0
    mismatches = []
    for platform, release, gpu, driver in oracle.platform_cases(data):
        target = lookup_gpu(matrix, gpu["name"])
        spec, _ = parse_torch(release["torch"])
        req = Request(
            torch=spec,
            torch_text=release["torch"],
            gpus=(target,),
            driver=parse_driver(driver) if driver else None,
            platform=platform,
            platforms=(platform,),
        )
        got = resolve(req, matrix)
        names, pick = oracle.expected(data, release, target.cc, driver)
        got_pick = got.chosen.local_version if got.chosen else None
        if list(got.compatible) != names or got_pick != pick:
            mismatches.append((platform, release["torch"], gpu["name"], driver, got.compatible))
        checked += 1
    assert checked > 2 * len(data["releases"]) * len(oracle.DRIVERS)
    assert mismatches == []
