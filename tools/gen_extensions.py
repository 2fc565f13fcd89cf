"""Write src/torchship/compat/data/extensions.json: which torch (and CUDA) each release of the
CUDA extensions people lock beside torch was built for, so the resolver can say when a pin is
unpaired (a top cause of the doctor's `extension-abi-mismatch`).

    python tools/gen_extensions.py                 # from tools/research/companions.json
    python tools/gen_extensions.py --check         # exit 1 if the packaged file would change

xformers and bitsandbytes come from their PyPI wheels (measured by
tools/research/measure_companions.py: Requires-Dist, and bitsandbytes' bundled
`libbitsandbytes_cudaXYZ` libraries). torchao declares no torch: its maintainers' table is
written here with its source. flash-attn has no wheel on PyPI at all (sdists that build
against the installed torch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESEARCH = REPO / "tools/research/companions.json"
OUT = REPO / "src/torchship/compat/data/extensions.json"

# torchao's own table of the torch its C++ kernels were built against (github.com/pytorch/ao,
# issue 2919); with another torch it installs, skips its kernels and says so at import.
TORCHAO = {
    "0.12.0": "==2.7.1",
    "0.13.0": "==2.8.0",
    "0.14.1": "==2.9.0",
    "0.15.0": "==2.9.1",
    "0.16.0": "==2.10.0",
    "0.17.0": ">=2.11",
    "0.18.0": ">=2.11",
}


def build(research: dict[str, Any]) -> dict[str, Any]:
    xformers = {
        v: {"torch": r["torch"]}
        for v, r in research["xformers"]["releases"].items()
        if r.get("torch") and "dev" not in v and not r.get("yanked")
    }
    bnb = {}
    for v, r in research["bitsandbytes"]["releases"].items():
        libs = (r.get("wheel_contents") or {}).get("cuda_libs")
        if libs and not r.get("yanked"):
            torch = r.get("torch") or ""
            bnb[v] = {"torch": "" if torch == "(any)" else torch, "cuda": sorted(libs)}
    return {
        "measured_at": research["measured_at"],
        "sources": {
            "xformers": "PyPI wheels' Requires-Dist (exact torch until 0.0.34; >=2.10 from 0.0.35)",
            "bitsandbytes": "PyPI wheels: Requires-Dist torch, and the libbitsandbytes_cudaXYZ "
            "libraries each bundles (it loads the one for torch.version.cuda, else the CPU one)",
            "torchao": "the maintainers' compatibility table, github.com/pytorch/ao/issues/2919 "
            "(no torch in its metadata; a mismatched torch skips the C++ kernels)",
            "flash-attn": "PyPI has sdists only; setup.py fetches a GitHub wheel for the "
            "installed torch and CUDA, else compiles",
        },
        "packages": {
            "xformers": {"severity": "error", "releases": xformers},
            "bitsandbytes": {"severity": "error", "releases": bnb},
            "torchao": {
                "severity": "warning",
                "releases": {v: {"torch": t} for v, t in TORCHAO.items()},
            },
            "flash-attn": {"severity": "warning", "releases": {}, "sdist_only": True},
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file would change")
    args = ap.parse_args(argv)
    text = json.dumps(build(json.loads(RESEARCH.read_text())), indent=1) + "\n"
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print("up to date" if same else f"{OUT} would change")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
