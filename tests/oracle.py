"""An independent, deliberately naive statement of the resolver's rules over the raw matrix JSON.

It shares no code with torchship.compat: arch tokens, versions and floors are parsed here by hand
from data/matrix.json, so an error in the resolver's parsing or logic shows up as a mismatch.
Used by tests/unit/test_resolver_exhaustive.py and benchmarks/resolve.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MATRIX_JSON = Path(__file__).resolve().parents[1] / "src/torchship/compat/data/matrix.json"
DRIVERS = (None, "450.80.02", "525.60.13", "550.54.15", "570.124.06", "580.65.06", "595.45.04")


def raw() -> dict[str, Any]:
    return dict(json.loads(MATRIX_JSON.read_text()))


def _nums(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _cc_of(token: str) -> tuple[int, int]:
    digits = token.split("_")[1]
    return int(digits[:-1]), int(digits[-1])


# Jetson capabilities: the CUDA guide gives them no binary compatibility, a cubin must match
TEGRA_CCS = {(3, 2), (5, 3), (6, 2), (7, 2), (8, 7), (10, 1), (11, 0)}


def runs(arch: list[str], cc: tuple[int, int]) -> str | None:
    """'sass', 'ptx' or None."""
    for t in arch:
        if not t.startswith("sm_"):
            continue
        if cc in TEGRA_CCS and _cc_of(t) == cc:
            return "sass"
        if cc not in TEGRA_CCS and _cc_of(t)[0] == cc[0] and _cc_of(t)[1] <= cc[1]:
            return "sass"
    for t in arch:
        if t.startswith("compute_") and _cc_of(t) <= cc:
            return "ptx"
    return None


def compatible(
    data: dict[str, Any], variant: dict[str, Any], cc: tuple[int, int], driver: str | None
) -> bool:
    if variant["cuda"] is None or variant["arch"] is None or variant.get("uncertain"):
        return False
    how = runs(variant["arch"], cc)
    if how is None:
        return False
    if driver is None:
        return True
    cuda = _nums(variant["cuda"])
    if cc not in TEGRA_CCS:  # an old GPU that the driver no longer supports (R580: Volta)
        ceilings = [c["last_branch"] for c in data.get("driver_ceilings", ())
                    if cc < tuple(_nums(c["cc_below"]))]  # fmt: skip
        if ceilings and _nums(driver)[0] > min(ceilings):
            return False
    else:  # a Jetson: its driver number is the board's; JetPack 7 (580 on) has CUDA 13
        return cuda[0] <= (13 if _nums(driver)[0] >= 580 else 12)
    floor = next(
        _nums(f["min_driver"]) for f in data["driver_floors"] if f["cuda_major"] == cuda[0]
    )
    if _nums(driver) < floor:
        return False
    if how == "ptx":
        ga = min(
            (_nums(t["driver"]) for t in data["toolkits"] if _nums(t["cuda"])[:2] == cuda[:2]),
            default=(0,),
        )
        return _nums(driver) >= ga
    return True


def expected(
    data: dict[str, Any], release: dict[str, Any], cc: tuple[int, int], driver: str | None
) -> tuple[list[str], str | None]:
    ok = [v for v in release["variants"] if compatible(data, v, cc, driver)]
    names = [f"{release['torch']}+{v['name']}" for v in ok]
    if not ok:
        return names, None
    default = [v for v in ok if v["name"] == release["pypi_default"]]
    pick = default[0] if default else max(ok, key=lambda v: _nums(v["cuda"]))
    return names, f"{release['torch']}+{pick['name']}"


def cases(data: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any], str | None]]:
    """Every release x GPU model x driver (Linux x86_64)."""
    for release in data["releases"]:
        for gpu in data["gpus"]:
            for driver in DRIVERS:
                yield release, gpu, driver


def gpu_platforms(gpu: dict[str, Any]) -> list[str]:
    """Where an NVIDIA GPU can be: its own list (Grace), Jetson on Arm, else Linux and Windows."""
    if gpu.get("platforms"):
        return list(gpu["platforms"])
    if gpu["segment"] == "jetson":
        return ["linux-aarch64"]
    return ["linux-x86_64", "linux-aarch64", "windows-x86_64"]


def platform_cases(
    data: dict[str, Any],
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], str | None]]:
    """Every platform other than Linux x86_64 x release with wheels there x GPU model that can
    be on it x driver: (platform, the release as on that platform, GPU, driver)."""
    for release in data["releases"]:
        for platform, view in release.get("platforms", {}).items():
            on = {**view, "torch": release["torch"]}
            for gpu in data["gpus"]:
                if platform in gpu_platforms(gpu):
                    for driver in DRIVERS:
                        yield platform, on, gpu, driver
