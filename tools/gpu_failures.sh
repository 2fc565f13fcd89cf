#!/usr/bin/env bash
# Real failure output from a real GPU machine, for the doctor's tests (tests/data/machines/):
# each case provokes one well-known failure with the machine's own torch and keeps what torch,
# CUDA and NCCL printed, verbatim. Run on a lent GPU machine (the device tool), about 2 minutes:
#   bash tools/gpu_failures.sh OUT
set -u
out="${1:?OUT folder}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
case_run() {  # NAME COMMAND...: the command's output and exit status, cut at 60 s
    local name="$1"; shift
    { echo "\$ $*"; timeout 60 "$@" 2>&1; echo "[exit $?]"; } >"$out/$name.txt"
    echo "$name: $(tail -1 "$out/$name.txt")"
}
tmp="$(mktemp -d)"

# CUDA_VISIBLE_DEVICES names a GPU that does not exist
case_run no-gpu-visible env CUDA_VISIBLE_DEVICES=7 "$py" -c \
    'import torch; print(torch.cuda.is_available(), torch.cuda.device_count()); torch.zeros(1, device="cuda")'

# a device index past the GPUs there are
case_run invalid-ordinal "$py" -c \
    'import torch; print(torch.cuda.device_count()); torch.zeros(1, device="cuda:1")'

# CUDA initialised, then used in a forked child (DataLoader workers with the fork start method)
cat >"$tmp/fork.py" <<'PY'
import torch, torch.multiprocessing as mp
def child(_):
    return torch.ones(1, device="cuda").item()
if __name__ == "__main__":
    torch.zeros(1, device="cuda")
    with mp.get_context("fork").Pool(1) as p:
        print(p.map(child, [0]))
PY
case_run cuda-init-in-fork "$py" "$tmp/fork.py"

# an allocation larger than the GPU: an out-of-memory error (not an environment fault)
case_run out-of-memory "$py" -c \
    'import torch; x = torch.empty(1 << 38, dtype=torch.uint8, device="cuda")'

# two ranks on one GPU: NCCL refuses to build the communicator
cat >"$tmp/dup.py" <<'PY'
import os, torch, torch.distributed as dist
torch.cuda.set_device(0)  # every rank on GPU 0
dist.init_process_group("nccl")
t = torch.ones(1, device="cuda")
dist.all_reduce(t)
torch.cuda.synchronize()
print("rank", os.environ["RANK"], t.item())
dist.destroy_process_group()
PY
case_run nccl-duplicate-gpu "$py" -m torch.distributed.run --standalone --nproc-per-node=2 "$tmp/dup.py"

# NCCL told to use a network interface that does not exist
cat >"$tmp/one.py" <<'PY'
import torch, torch.distributed as dist
torch.cuda.set_device(0)
dist.init_process_group("nccl")
t = torch.ones(1, device="cuda")
dist.all_reduce(t)
torch.cuda.synchronize()
print("ok", t.item())
dist.destroy_process_group()
PY
case_run nccl-bad-ifname env NCCL_SOCKET_IFNAME=nosuchnic0 NCCL_DEBUG=WARN \
    "$py" -m torch.distributed.run --standalone --nproc-per-node=1 "$tmp/one.py"

# DataLoader workers sharing tensors through a /dev/shm of 1 MiB (as Docker's 64 MiB default, worse)
cat >"$tmp/shm.py" <<'PY'
import torch
from torch.utils.data import DataLoader, Dataset
class Big(Dataset):
    def __len__(self): return 64
    def __getitem__(self, i): return torch.zeros(4 << 20)
if __name__ == "__main__":
    for batch in DataLoader(Big(), batch_size=8, num_workers=2):
        pass
    print("done")
PY
if mount -t tmpfs -o size=1m tmpfs /dev/shm 2>"$out/shm-mount.err"; then
    case_run shm-too-small "$py" "$tmp/shm.py"
    umount /dev/shm
else
    echo "shm-too-small: /dev/shm could not be remounted small: $(cat "$out/shm-mount.err")"
fi
rm -f "$out/shm-mount.err"
rm -rf "$tmp"
