#!/usr/bin/env bash
# One prepared GPU check: every GPU path torchship has, in one command of at most 8 minutes, on a
# machine with an NVIDIA GPU and no network, with that machine's own torch (benchmarks/gpu_check.py
# says which steps ran and why others did not).
#
#   make gpu-deps            # here, once: torchship's pure-Python dependencies into build/gpu-deps
#   bash benchmarks/gpu_check.sh [OUT]   # there (the device tool: carry build/gpu-deps)
#
# What lands in OUT (OUT defaults to $OUT, else a temporary folder), eight files at most:
#   gpu_figures.json  the figures (gpu_check.py), written after every step
#   facts.json, doctor-deep.json        `facts --runtime` and `doctor --deep --json`
#   nvidia-smi.txt, nvidia-smi-q.txt, collect_env.txt   the machine's own reports, verbatim:
#                     real material for the doctor's paste readers (tests/data/real/)
#   pytest-gpu.log    tests/integration/test_gpu_e2e.py, the GPU-marked tests
# Time caps: captures 60 s, figures 330 s, pytest 75 s: 465 s in all.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${OUT:-$(mktemp -d)}}"
mkdir -p "$out"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$repo/build/gpu-deps" ]; then
    export PYTHONPATH="$PYTHONPATH:$repo/build/gpu-deps"
fi
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
"$python" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])' \
    || echo "gpu_check: this Python has no torch; the GPU steps will say so"
gpu=""
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && gpu=yes
if [ -n "$gpu" ]; then  # the machine's own reports: only where there is a GPU to report on
    timeout 15 nvidia-smi >"$out/nvidia-smi.txt" 2>&1
    timeout 15 nvidia-smi -q >"$out/nvidia-smi-q.txt" 2>&1
    timeout 30 "$python" -m torch.utils.collect_env >"$out/collect_env.txt" 2>&1
fi
timeout 330 "$python" "$repo/benchmarks/gpu_check.py" "$out"
rc=$?
if [ -n "$gpu" ]; then
    (cd "$repo" && timeout 75 "$python" -m pytest -p no:cacheprovider -q -m gpu \
        tests/integration/test_gpu_e2e.py) >"$out/pytest-gpu.log" 2>&1
    echo "gpu_check: pytest GPU tests exit $? (log: $out/pytest-gpu.log)"
else
    echo "gpu_check: no NVIDIA GPU here: no nvidia-smi or collect_env capture, no pytest GPU tests"
fi
exit "$rc"
