#!/usr/bin/env bash
# One prepared GPU check: every GPU path torchship has, in one command of at most 8 minutes, on a
# machine with an NVIDIA GPU and no network, with that machine's own torch (benchmarks/gpu_check.py
# says which steps ran and why others did not).
#
#   make gpu-deps            # here, once: torchship's pure-Python dependencies into build/gpu-deps
#   bash benchmarks/gpu_check.sh [OUT]   # there (the device tool: carry build/gpu-deps)
#
# Figures land in OUT/gpu_figures.json (OUT defaults to $OUT, else a temporary folder), with the
# machine's facts and `doctor --deep` output beside them as fixtures.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${OUT:-$(mktemp -d)}}"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$repo/build/gpu-deps" ]; then
    export PYTHONPATH="$PYTHONPATH:$repo/build/gpu-deps"
fi
python="${PYTHON:-python3}"
"$python" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])' \
    || echo "gpu_check: this Python has no torch; the GPU steps will say so"
exec timeout 470 "$python" "$repo/benchmarks/gpu_check.py" "$out"
