"""Build src/torchship/compat/data/matrix.json from the researched reference facts.

    python tools/import_reference.py ../shared/reference/compat
    python tools/import_reference.py --platform-facts   # only the facts of PLATFORM_SOURCES

The reference folder holds facts gathered by hand from public sources (each with its source and
confidence); this script maps them into torchship's matrix schema once. Afterwards
`tools/gen_matrix.py` refreshes what PyPI itself can tell (Python tags, the default variant and
its pins) straight from wheel metadata. GPU rows are expanded from the reference's combined rows
("GeForce RTX 4090 / 4080 / ...") into one entry per model, with the aliases nvidia-smi prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "src/torchship/compat/data/matrix.json"
SCHEMA_VERSION = 1

# (canonical name, aliases, reference row name). Aliases are matched after normalisation
# (lower case, "nvidia"/"geforce"/"tesla" dropped, punctuation to spaces), longest token prefix.
GPU_MODELS: list[tuple[str, list[str], str]] = [
    ("K80", ["tesla k80"], "Tesla K80"),
    ("M60", ["tesla m60"], "Tesla M60 / M40"),
    ("M40", ["tesla m40"], "Tesla M60 / M40"),
    ("GTX 750 Ti", ["geforce gtx 750 ti"], "GeForce GTX 750 Ti"),
    ("GTX 980 Ti", [], "GeForce GTX 980 Ti / 970"),
    ("GTX 980", [], "GeForce GTX 980 Ti / 970"),
    ("GTX 970", [], "GeForce GTX 980 Ti / 970"),
    ("P100", ["tesla p100"], "Tesla P100"),
    ("P40", ["tesla p40"], "Tesla P40 / P4"),
    ("P4", ["tesla p4"], "Tesla P40 / P4"),
    ("GTX 1080 Ti", [], "GeForce GTX 1080 Ti / 1080 / 1070 / 1060"),
    ("GTX 1080", [], "GeForce GTX 1080 Ti / 1080 / 1070 / 1060"),
    ("GTX 1070", [], "GeForce GTX 1080 Ti / 1080 / 1070 / 1060"),
    ("GTX 1060", [], "GeForce GTX 1080 Ti / 1080 / 1070 / 1060"),
    ("V100", ["tesla v100", "v100s"], "NVIDIA V100"),
    ("TITAN V", [], "NVIDIA TITAN V / Quadro GV100"),
    ("Quadro GV100", ["gv100"], "NVIDIA TITAN V / Quadro GV100"),
    ("T4", ["tesla t4"], "NVIDIA T4"),
    ("RTX 2080 Ti", [], "GeForce RTX 2080 Ti / 2080 / 2070 / 2060"),
    ("RTX 2080", ["rtx 2080 super"], "GeForce RTX 2080 Ti / 2080 / 2070 / 2060"),
    ("RTX 2070", ["rtx 2070 super"], "GeForce RTX 2080 Ti / 2080 / 2070 / 2060"),
    ("RTX 2060", ["rtx 2060 super"], "GeForce RTX 2080 Ti / 2080 / 2070 / 2060"),
    ("Quadro RTX 8000", ["rtx 8000"], "Quadro RTX 8000/6000/5000"),
    ("Quadro RTX 6000", ["rtx 6000"], "Quadro RTX 8000/6000/5000"),
    ("Quadro RTX 5000", ["rtx 5000"], "Quadro RTX 8000/6000/5000"),
    ("A100", ["a100 sxm4", "a100 pcie", "a100x"], "NVIDIA A100"),
    ("A30", [], "NVIDIA A30"),
    ("A10", [], "NVIDIA A10"),
    ("A10G", [], "NVIDIA A10G (AWS)"),
    ("A40", [], "NVIDIA A40 / A16 / A2"),
    ("A16", [], "NVIDIA A40 / A16 / A2"),
    ("A2", [], "NVIDIA A40 / A16 / A2"),
    ("RTX A6000", [], "NVIDIA RTX A6000 / A5000 / A4000"),
    ("RTX A5000", [], "NVIDIA RTX A6000 / A5000 / A4000"),
    ("RTX A4000", [], "NVIDIA RTX A6000 / A5000 / A4000"),
    ("RTX 3090", ["rtx 3090 ti"], "GeForce RTX 3090 / 3080 / 3070 / 3060"),
    ("RTX 3080", ["rtx 3080 ti"], "GeForce RTX 3090 / 3080 / 3070 / 3060"),
    ("RTX 3070", ["rtx 3070 ti"], "GeForce RTX 3090 / 3080 / 3070 / 3060"),
    ("RTX 3060", ["rtx 3060 ti"], "GeForce RTX 3090 / 3080 / 3070 / 3060"),
    (
        "Jetson AGX Orin",
        ["orin", "jetson orin nx", "jetson orin nano"],
        "Jetson AGX Orin / Orin NX / Orin Nano",
    ),
    ("L4", [], "NVIDIA L4"),
    ("L40", [], "NVIDIA L40 / L40S"),
    ("L40S", [], "NVIDIA L40 / L40S"),
    (
        "RTX 6000 Ada",
        ["rtx 6000 ada generation"],
        "NVIDIA RTX 6000 Ada / RTX 5000 Ada / RTX 4000 Ada",
    ),
    (
        "RTX 5000 Ada",
        ["rtx 5000 ada generation"],
        "NVIDIA RTX 6000 Ada / RTX 5000 Ada / RTX 4000 Ada",
    ),
    (
        "RTX 4000 Ada",
        ["rtx 4000 ada generation"],
        "NVIDIA RTX 6000 Ada / RTX 5000 Ada / RTX 4000 Ada",
    ),
    ("RTX 4090", ["rtx 4090 d"], "GeForce RTX 4090 / 4080 / 4070 / 4060"),
    ("RTX 4080", ["rtx 4080 super"], "GeForce RTX 4090 / 4080 / 4070 / 4060"),
    ("RTX 4070", ["rtx 4070 ti", "rtx 4070 super"], "GeForce RTX 4090 / 4080 / 4070 / 4060"),
    ("RTX 4060", ["rtx 4060 ti"], "GeForce RTX 4090 / 4080 / 4070 / 4060"),
    ("H100", ["h100 sxm", "h100 pcie", "h100 nvl", "h800"], "NVIDIA H100"),
    ("H200", ["h200 nvl"], "NVIDIA H200"),
    ("GH200", ["gh200 480gb"], "NVIDIA GH200"),
    ("B200", [], "NVIDIA B200"),
    ("GB200", [], "NVIDIA GB200"),
    ("B300", [], "NVIDIA B300 / GB300"),
    ("GB300", [], "NVIDIA B300 / GB300"),
    ("Jetson Thor", ["jetson t5000", "jetson t4000", "thor"], "Jetson T5000 / T4000 (Thor)"),
    (
        "RTX PRO 6000 Blackwell Server",
        ["rtx pro 6000 blackwell server edition"],
        "NVIDIA RTX PRO 6000 Blackwell Server Edition",
    ),
    (
        "RTX PRO 6000 Blackwell",
        [
            "rtx pro 6000 blackwell workstation edition",
            "rtx pro 6000 blackwell max q workstation edition",
            "rtx pro 6000",
        ],
        "NVIDIA RTX PRO 6000 Blackwell Workstation / Max-Q Edition",
    ),
    ("RTX PRO 5000 Blackwell", ["rtx pro 5000"], "NVIDIA RTX PRO 5000/4500/4000/2000 Blackwell"),
    ("RTX PRO 4500 Blackwell", ["rtx pro 4500"], "NVIDIA RTX PRO 5000/4500/4000/2000 Blackwell"),
    ("RTX PRO 4000 Blackwell", ["rtx pro 4000"], "NVIDIA RTX PRO 5000/4500/4000/2000 Blackwell"),
    ("RTX PRO 2000 Blackwell", ["rtx pro 2000"], "NVIDIA RTX PRO 5000/4500/4000/2000 Blackwell"),
    (
        "RTX 5090",
        ["rtx 5090 d"],
        "GeForce RTX 5090 / 5080 / 5070 Ti / 5070 / 5060 Ti / 5060 / 5050",
    ),
    ("RTX 5080", [], "GeForce RTX 5090 / 5080 / 5070 Ti / 5070 / 5060 Ti / 5060 / 5050"),
    ("RTX 5070 Ti", [], "GeForce RTX 5090 / 5080 / 5070 Ti / 5070 / 5060 Ti / 5060 / 5050"),
    ("RTX 5070", [], "GeForce RTX 5090 / 5080 / 5070 Ti / 5070 / 5060 Ti / 5060 / 5050"),
    ("RTX 5060 Ti", [], "GeForce RTX 5090 / 5080 / 5070 Ti / 5070 / 5060 Ti / 5060 / 5050"),
    ("RTX 5060", [], "GeForce RTX 5090 / 5080 / 5070 Ti / 5070 / 5060 Ti / 5060 / 5050"),
    ("RTX 5050", [], "GeForce RTX 5090 / 5080 / 5070 Ti / 5070 / 5060 Ti / 5060 / 5050"),
    ("GB10", ["dgx spark"], "NVIDIA GB10 (DGX Spark)"),
]

# nvidia/cuda tags (images.md §1): CUDA release -> (Ubuntu versions, cuDNN tag part).
# cudnn-devel tags are registry-derived (Cog's list, a lower bound); base/runtime follow the scheme.
CUDA_IMAGES: list[tuple[str, list[str], str]] = [
    ("11.7.1", ["18.04", "20.04", "22.04"], "cudnn8"),
    ("11.8.0", ["18.04", "20.04", "22.04"], "cudnn8"),
    ("12.0.0", ["18.04", "20.04", "22.04"], "cudnn8"),
    ("12.0.1", ["18.04", "20.04", "22.04"], "cudnn8"),
    ("12.1.0", ["20.04", "22.04"], "cudnn8"),
    ("12.1.1", ["20.04", "22.04"], "cudnn8"),
    ("12.2.2", ["20.04", "22.04"], "cudnn8"),
    ("12.3.2", ["20.04", "22.04"], "cudnn9"),
    ("12.4.1", ["20.04", "22.04"], "cudnn"),
    ("12.5.1", ["20.04", "22.04"], "cudnn"),
    *[
        (v, ["20.04", "22.04", "24.04"], "cudnn")
        for v in ("12.6.0", "12.6.1", "12.6.2", "12.6.3", "12.8.0", "12.8.1", "12.9.0", "12.9.1")
    ],
    *[
        (v, ["22.04", "24.04"], "cudnn")
        for v in ("13.0.0", "13.0.1", "13.0.2", "13.0.3", "13.1.1", "13.1.2", "13.2.0", "13.2.1")
    ],
]

EXTRA_SOURCES = {
    "cpu_index": "PyTorch wheel index /whl/cpu publishes a +cpu build of every release "
    "(cog_torch lists the cpu variant for every release <= 2.11; the torch-2.13.0+cpu "
    "wheel was seen on this project's machines)",
    "kernel_rule": "NVIDIA CUDA C++ Programming Guide, binary/PTX compatibility",
    "images_cog": "replicate/cog pkg/config/cuda_compatibility.json @6110c912 (registry-derived "
    "cudnn-devel tags; a lower bound) and the nvidia/cuda tag scheme",
    "unverified": "no source: neither measured nor read from a build script (flagged uncertain)",
    "gpu_driver_blackwell": "third-party only (Phoronix repost, glfs book, a preflight script): "
    "Blackwell GPUs need an R570+ driver",
}


# Facts beyond Linux x86_64, from tools/research/platforms.md (each with its source id).
PLATFORM_SOURCES = {
    "nv_arch_matrix": "https://docs.nvidia.com/datacenter/tesla/drivers/cuda-toolkit-driver-and-"
    "architecture-matrix.html: Maxwell, Pascal and Volta: last toolkit CUDA 12.x, last driver "
    "R580; Kepler: R470",
    "nv_legacy_595": "https://github.com/NixOS/nixos-hardware/issues/1880: driver 595.71.05 "
    "logs that a GTX 1050 'is supported through the NVIDIA 580.xx Legacy drivers' and ignores it",
    "compat_branches": "https://docs.nvidia.com/deploy/cuda-compatibility/forward-compatibility"
    ".html: which cuda-compat package each driver branch supports; 'New Feature Branches are "
    "not supported targets'; branch kinds and end of life from docs.nvidia.com/datacenter/tesla/"
    "drivers/620/supported-drivers-and-cuda-toolkit-versions.html",
    "grace_platform": "Grace superchips and DGX Spark are Arm (aarch64) systems: pytorch/pytorch"
    "#123835 and NVIDIA/apex#1833 (GH200 on aarch64), conda-forge/pytorch-cpu-feedstock#486 "
    "(GB10 sbsa+sm121), learn.arm.com DGX Spark setup (lscpu aarch64)",
    "tegra_rule": "CUDA C Programming Guide, Binary Compatibility: 'supported only for the "
    "desktop. It is not supported for Tegra'",
    "jetson_driver": "anduril/jetpack-nixos#371 (JetPack 6 nvidia-smi: 540.4.0, CUDA N/A); "
    "pollen-robotics/microduck_rl#38 (JetPack 7 Thor: driver 580, CUDA 13.0)",
}
# GPUs that exist only on one platform (Jetson boards are all linux-aarch64 by segment).
GPU_PLATFORMS = {name: ["linux-aarch64"] for name in ("GH200", "GB200", "GB300", "GB10")}
# GPUs of capability below `cc_below` are ignored by drivers after `last_branch`.
DRIVER_CEILINGS = [
    {"cc_below": "5.0", "last_branch": 470, "source": "nv_arch_matrix"},
    {"cc_below": "7.5", "last_branch": 580, "source": "nv_arch_matrix nv_legacy_595"},
]
# The branches NVIDIA supports cuda-compat on (LTSB and production branches; feature branches
# R590/R610 are not supported targets) and the packages each supports.
COMPAT_BRANCHES = [
    {"branch": 535, "kind": "LTSB", "eol": "2026-06",
     "compat": ["12.3", "12.4", "12.5", "12.6", "12.8", "12.9",
                "13.0", "13.1", "13.2", "13.3", "13.4"]},
    {"branch": 570, "kind": "PB", "eol": "2026-02",
     "compat": ["12.9", "13.0", "13.1", "13.2", "13.3", "13.4"]},
    {"branch": 580, "kind": "LTSB", "eol": "2028-06", "compat": ["13.1", "13.2", "13.3", "13.4"]},
    {"branch": 595, "kind": "PB", "eol": "2027-03", "compat": ["13.3", "13.4"]},
    {"branch": 620, "kind": "LTSB", "eol": "2029-09", "compat": []},
]  # fmt: skip


def add_platform_facts(matrix: dict[str, Any]) -> None:
    """The facts above, into a matrix (also run on the packaged one, see main)."""
    matrix["sources"].update(PLATFORM_SOURCES)
    for gpu in matrix["gpus"]:
        if gpu["name"] in GPU_PLATFORMS:
            gpu["platforms"] = GPU_PLATFORMS[gpu["name"]]
            gpu["platforms_source"] = "grace_platform"
    matrix["driver_ceilings"] = DRIVER_CEILINGS
    matrix["forward_compat"]["branches"] = COMPAT_BRANCHES
    matrix["forward_compat"]["branches_source"] = "compat_branches"


def _ver(text: str) -> str:
    """'580 (13.0 GA driver 580.65.06)' -> '580.65.06'; '450.80.02' -> itself."""
    tokens = [t.strip("()") for t in text.split()]
    dotted = [t for t in tokens if t.count(".") >= 1 and t.replace(".", "").isdigit()]
    return dotted[-1] if dotted else tokens[0]


def _source_ids(text: str, known: set[str]) -> list[str]:
    found = [sid for sid in sorted(known) if sid in text]
    return found or ["unverified"]


def _variant(
    name: str, info: dict[str, Any], release: dict[str, Any], known: set[str]
) -> dict[str, Any]:
    default = release["default_pypi_cuda"] == name
    cudnn = info.get("cudnn")
    if cudnn and " " in cudnn:  # "9.17.1.4 per RELEASE.md; PyPI wheel pins ..." -> the wheel pin
        cudnn = release["default_pypi_cudnn"] if default else cudnn.split()[0]
    arch = info.get("arch_list")
    return {
        "name": name,
        "cuda": f"{name[2:-1]}.{name[-1]}",
        "status": info.get("status", ""),
        "arch": arch,
        "arch_source": info.get("arch_source", ""),
        "arch_sources": _source_ids(info.get("arch_source", ""), known),
        "arch_confidence": info.get("arch_confidence", "unknown").split()[0],
        "cudnn": release["default_pypi_cudnn"] if default else cudnn,
        "nccl": release["default_pypi_nccl"] if default else info.get("nccl"),
        "pins_source": "pypi_meta" if default else "release_md",
        "uncertain": arch is None or info.get("status") == "uncertain",
    }


def _release(r: dict[str, Any], known: set[str]) -> dict[str, Any]:
    variants = [_variant(n, i, r, known) for n, i in r["variants"].items()]
    variants += [_variant(n, i, r, known) for n, i in r.get("uncertain_variants", {}).items()]
    variants.append(
        {
            "name": "cpu",
            "cuda": None,
            "status": "cpu",
            "arch": [],
            "arch_source": "cpu_index",
            "arch_sources": ["cpu_index"],
            "arch_confidence": "n/a",
            "cudnn": None,
            "nccl": None,
            "pins_source": "cpu_index",
            "uncertain": False,
        }
    )
    notes = [r[k] for k in ("note", "domain_note", "torchaudio_note", "torchvision_note") if k in r]
    manylinux_2_28 = "2_28" in r["manylinux_tag"]
    return {
        "torch": r["torch"],
        "python": r["python_linux_x86_64_pypi"],
        "python_source": "pypi_files",
        "requires_python": r["requires_python"],
        "manylinux": "manylinux_2_28" if manylinux_2_28 else "manylinux1",
        "glibc_min": "2.28" if manylinux_2_28 else "2.17",
        "glibc_source": "pypi_files (wheel platform tag)",
        "pypi_default": r["default_pypi_cuda"],
        "pypi_default_source": "arch_measured (torch/version.py of the PyPI wheel)",
        "pypi_default_pins": dict(r["default_pypi_requires"]),
        "torchvision": r["torchvision"],
        "torchaudio": r["torchaudio"],
        "domain_source": "pypi_meta (Requires-Dist pins of torchvision/torchaudio)",
        "notes": notes,
        "variants": variants,
    }


def _gpus(ref: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {g["name"]: g for g in ref["gpus"]}
    out = []
    for name, aliases, row_name in GPU_MODELS:
        row = rows[row_name]
        segment = row["segment"].split()[0]
        blackwell = row["architecture"].startswith("Blackwell")
        out.append(
            {
                "name": name,
                "aliases": aliases,
                "cc": row["compute_capability"],
                "architecture": row["architecture"],
                "segment": segment,
                "forward_compat": row["forward_compat_eligible"],
                "min_driver": "570" if blackwell else None,
                "min_driver_source": "gpu_driver_blackwell" if blackwell else None,
                "min_driver_uncertain": blackwell,
                "sources": row["sources"],
            }
        )
    return out


def build(ref_dir: Path) -> dict[str, Any]:
    torch = json.loads((ref_dir / "torch_releases.json").read_text())
    drivers = json.loads((ref_dir / "cuda_drivers.json").read_text())
    gpus = json.loads((ref_dir / "gpus.json").read_text())
    sources = {**torch["sources"], **drivers["sources"], **gpus["sources"], **EXTRA_SOURCES}
    floors = [
        {"cuda_major": int(k.split(".")[0]), "min_driver": _ver(v["min"]), "source": "mvc"}
        for k, v in drivers["minor_version_compat"].items()
    ]
    toolkits = [
        {
            "cuda": t["toolkit_release"],
            "driver": t["toolkit_bundled_driver_linux_x86_64"],
            "source": "table",
        }
        for t in drivers["toolkits"]
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": "2026-11-22",
        "platform": "linux_x86_64",
        "sources": sources,
        "driver_floors": floors,
        "toolkits": toolkits,
        "forward_compat": {
            "segments": ["datacenter", "jetson"],
            "source": "forward_compat",
            "note": "cuda-compat-<major>-<minor> user-mode libraries on top of an older kernel "
            "driver; data-center GPUs, select NGC-ready RTX SKUs and Jetson only, never GeForce",
        },
        "images": {
            "cuda": [
                {"cuda": v, "ubuntu": u, "cudnn_tag": c, "source": "images_cog"}
                for v, u, c in CUDA_IMAGES
            ],
            "cpu": "python:{python}-slim-bookworm",
        },
        "gpus": _gpus(gpus),
        "releases": [_release(r, set(sources)) for r in torch["releases"]],
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    if argv == ["--platform-facts"]:  # add them to the packaged matrix, nothing else
        data = json.loads(OUT.read_text())
        add_platform_facts(data)
        OUT.write_text(json.dumps(data, indent=1) + "\n")
        print(f"added the platform facts to {OUT}")
        return 0
    data = build(Path(argv[0]))
    add_platform_facts(data)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT} ({len(data['releases'])} releases, {len(data['gpus'])} GPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
