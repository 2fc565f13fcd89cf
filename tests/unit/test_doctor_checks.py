"""Each check over facts fixtures: it fires where it should, with a fix, and stays quiet on a
healthy machine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from torchship.compat import load_matrix
from torchship.doctor import diagnose
from torchship.doctor.checks import CHECKS
from torchship.doctor.facts import Facts, GPUFact, facts_from_json
from torchship.lock import read_lock

REPO = Path(__file__).resolve().parents[2]

HEALTHY = Facts(
    origin="probe",
    hostname="gpu1",
    os="Ubuntu 24.04.1 LTS",
    glibc="2.39",
    driver="580.95.05",
    driver_cuda="13.0",
    gpus=(GPUFact(0, "NVIDIA H100 80GB HBM3", "GPU-1", "9.0", 81559, "Disabled"),),
    device_nodes=("/dev/nvidia0", "/dev/nvidiactl"),
    python="3.11.7",
    packages={
        "torch": "2.13.0",
        "nvidia-cudnn-cu13": "9.20.0.48",
        "nvidia-nccl-cu13": "2.29.7",
        "numpy": "2.4.1",
    },
    torch="2.13.0+cu130",
    torch_cuda="13.0",
    torch_arch=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
    torch_cudnn="9.20.0",
    torch_nccl="2.29.7",
    cuda_available=True,
    torch_device_count=1,
    tf32_matmul=False,
    tf32_cudnn=False,
    shm_bytes=32 * 2**30,
)


def codes(facts: Facts, log: str = "", lock=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {f.code: f.severity for f in diagnose(facts, lock, log, load_matrix())}


def test_healthy_machine_has_no_findings() -> None:
    assert codes(HEALTHY) == {}


def with_(**kw: object) -> Facts:
    return dataclasses.replace(HEALTHY, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "log", "code", "severity"),
    [
        (
            with_(
                gpus=(GPUFact(0, "NVIDIA GeForce RTX 5090", cc="12.0"),),
                torch="2.6.0+cu124",
                torch_cuda="12.4",
                torch_arch=None,
            ),
            "",
            "gpu-arch-unsupported",
            "error",
        ),
        (
            HEALTHY,
            "RuntimeError: CUDA error: no kernel image is available for execution on the device",
            "gpu-arch-unsupported",
            "error",
        ),
        (with_(driver="550.54.15", cuda_available=False), "", "driver-too-old", "error"),
        # CUDA working on that driver is evidence against (forward compatibility): a warning
        (with_(driver="550.54.15"), "", "driver-too-old", "warning"),
        (
            HEALTHY,
            "The NVIDIA driver on your system is too old (found version 12040)",
            "driver-too-old",
            "error",
        ),
        (with_(torch="2.13.0+cpu", torch_cuda=None, torch_arch=()), "", "cpu-only-build", "error"),
        (with_(env={"CUDA_VISIBLE_DEVICES": ""}), "", "no-gpu-visible", "error"),
        (
            with_(container="docker", env={"NVIDIA_VISIBLE_DEVICES": "void"}),
            "",
            "no-gpu-visible",
            "error",
        ),
        (
            with_(container="docker", env={"NVIDIA_DRIVER_CAPABILITIES": "utility"}),
            "",
            "no-gpu-visible",
            "error",
        ),
        (
            with_(container="docker", driver=None, gpus=(), device_nodes=()),
            "",
            "no-gpu-visible",
            "error",
        ),
        # a small /dev/shm is a risk, not a failure: an error needs the failure line
        (with_(shm_bytes=64 * 2**20, container="docker"), "", "shm-too-small", "warning"),
        (with_(shm_bytes=512 * 2**20), "", "shm-too-small", "warning"),
        (
            HEALTHY,
            "ERROR: Unexpected bus error encountered in worker. This might be caused by "
            "insufficient shared memory (shm).",
            "shm-too-small",
            "error",
        ),
        (
            HEALTHY,
            "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, "
            "unhandled system error (run with NCCL_DEBUG=INFO for details)",
            "nccl-transport-failure",
            "warning",  # the line alone does not say which transport failed
        ),
        (
            HEALTHY,
            "node1:123:456 [0] misc/socket.cc:484 NCCL WARN socketStartConnect: Connect to "
            "10.0.0.2<46417> failed : Software caused connection abort",
            "nccl-transport-failure",
            "error",
        ),
        (
            HEALTHY,
            "ImportError: .../libtorch_cuda.so: undefined symbol: ncclCommRegister",
            "nccl-library-conflict",
            "error",
        ),
        (
            with_(loaded_libs=("/usr/lib/x86_64-linux-gnu/libnccl.so.2",)),
            "",
            "nccl-library-conflict",
            "error",
        ),
        (
            with_(library_path_libs=("/usr/local/cuda/lib64/libcudnn.so.9",)),
            "",
            "library-path-shadowing",
            "warning",
        ),
        (
            HEALTHY,
            "OSError: libcudnn.so.9: cannot open shared object file: No such file or directory",
            "cuda-library-missing",
            "error",
        ),
        (
            with_(
                sources={
                    "torch_import_error": "ImportError: libcudart.so.13: cannot open shared "
                    "object file: No such file or directory"
                }
            ),
            "",
            "cuda-library-missing",
            "error",
        ),
        (
            HEALTHY,
            "CUDA error: forward compatibility was attempted on non supported HW (error 804)",
            "forward-compat-unsupported",
            "error",
        ),
        (
            with_(
                gpus=(GPUFact(0, "NVIDIA GeForce RTX 4090", cc="8.9"),),
                library_path_libs=("/usr/local/cuda/compat/libcuda.so.1",),
            ),
            "",
            "forward-compat-unsupported",
            "error",
        ),
        (
            HEALTHY,
            "cudaGetDeviceCount: system not yet initialized (error 802)",
            "fabric-manager-missing",
            "error",
        ),
        (
            with_(gpus=(GPUFact(0, "NVIDIA A100-SXM4-80GB", cc="8.0", mig_mode="Enabled"),)),
            "",
            "mig-device-visibility",
            "warning",
        ),
        (
            with_(env={"CUDA_VISIBLE_DEVICES": "0"}, torch_device_count=8),
            "",
            "cuda-visible-devices-late",
            "warning",
        ),
        (with_(tf32_matmul=True), "", "tf32-numerics", "info"),
        (with_(env={"NVIDIA_TF32_OVERRIDE": "0"}), "", "tf32-numerics", "warning"),
        (
            with_(packages={**HEALTHY.packages, "torchvision": "0.24.1"}),
            "",
            "domain-library-mismatch",
            "error",
        ),
    ],
)
def test_check_fires(facts: Facts, log: str, code: str, severity: str) -> None:
    found = codes(facts, log)
    assert found.get(code) == severity, found


def test_every_documented_code_is_produced_by_some_check() -> None:
    """Each stable code is documented, and produced by a declared check or a signature."""
    from torchship.doctor.signatures import load_signatures

    required = {
        "extension-abi-mismatch",
        "numpy-abi-mismatch",
        "no-wheel-for-platform",
        "compile-toolchain-missing",
        "driver-library-mismatch",
        "driver-not-loaded",
        "gpu-hardware-fault",
        "cuda-init-in-fork",
        "collective-timeout",
        "gpu-rank-mapping",
        "glibc-too-old",
        "cudnn-version-mismatch",
        "domain-library-mismatch",
        "gpu-arch-unsupported",
        "driver-too-old",
        "cpu-only-build",
        "no-gpu-visible",
        "shm-too-small",
        "nccl-transport-failure",
        "nccl-library-conflict",
        "library-path-shadowing",
        "cuda-library-missing",
        "forward-compat-unsupported",
        "fabric-manager-missing",
        "mig-device-visibility",
        "cuda-visible-devices-late",
        "tf32-numerics",
        "lock-mismatch",
    }
    doc = (REPO / "docs/doctor.md").read_text()
    for code in required:
        assert f"`{code}`" in doc, code
    produced = {code for c in CHECKS for code in c.codes}
    produced |= {s.code for s in load_signatures()}
    assert required <= produced, required - produced
    assert produced <= required | {"lock-environment"}, produced - required


def test_fixes_name_a_concrete_build() -> None:
    f = with_(
        gpus=(GPUFact(0, "NVIDIA GeForce RTX 5090", cc="12.0"),),
        torch="2.6.0+cu124",
        torch_cuda="12.4",
        torch_arch=None,
        driver="570.124.06",
    )
    finding = next(
        x for x in diagnose(f, None, "", load_matrix()) if x.code == "gpu-arch-unsupported"
    )
    assert "install torch 2.11.0+cu128" in finding.fix
    assert "inferred from the matrix" in finding.message


def test_lock_mismatch_lists_each_difference() -> None:
    lock = read_lock(REPO / "examples/quickstart/torchship.lock")
    f = with_(
        torch="2.13.0+cpu",
        torch_cuda=None,
        torch_arch=(),
        python="3.12.1",
        packages={"numpy": "1.0"},
    )
    finding = next(x for x in diagnose(f, lock, "", load_matrix()) if x.code == "lock-mismatch")
    # a CPU build is closest to the lock's cpu environment, and is compared with that one
    assert "(closest: environment cpu)" in finding.message
    assert "Python 3.12.1 (locked 3.11)" in finding.message and "and " in finding.message
    assert "numpy 1.0 (locked 2.4.6)" in finding.message and "torchship sync" in finding.fix
    cuda = with_(torch="2.12.0+cu130", torch_cuda="13.0", packages={})
    finding = next(x for x in diagnose(cuda, lock, "", load_matrix()) if x.code == "lock-mismatch")
    assert "torch 2.12.0+cu130 (locked 2.13.0+cu130)" in finding.message
    ok = with_(packages={p.name: p.version for p in lock.packages})
    assert "lock-mismatch" not in codes(ok, lock=lock)
    matched = next(x for x in diagnose(ok, lock, "", load_matrix()) if x.code == "lock-environment")
    assert "environment cu130" in matched.message and matched.severity == "info"


def test_layers_are_in_order() -> None:
    from torchship.doctor.checks import LAYERS

    layers = [c.layer for c in CHECKS]
    assert layers == sorted(layers, key=LAYERS.index)


def test_findings_json_contract() -> None:
    from torchship.doctor.diagnosis import diagnose_facts

    d = diagnose_facts(with_(driver="550.54.15"), load_matrix())
    data = json.loads(json.dumps(d.to_json()))
    assert set(data) == {"findings", "facts", "report"}
    assert set(data["findings"][0]) >= {"code", "severity", "message", "fix", "evidence"}
    assert facts_from_json(data["facts"], "x") == d.facts


@pytest.mark.parametrize(
    ("torch", "arch", "os_name", "says"),
    [
        # PyPI's aarch64 wheels were CPU builds before 2.11 (pytorch/pytorch#160162)
        ("2.9.1", "aarch64", "Ubuntu 24.04.1 LTS (aarch64)", "aarch64 wheels are CPU builds"),
        ("2.13.0+cpu", "aarch64", "Ubuntu 24.04.1 LTS (aarch64)", ""),  # chosen on purpose
        # every Windows wheel on PyPI is a CPU build (pytorch/pytorch#131731)
        ("2.13.0", "AMD64", "Microsoft Windows 11 Pro", "PyPI's Windows wheels are CPU builds"),
        ("2.9.1", "x86_64", "Ubuntu 22.04.4 LTS (x86_64)", ""),
    ],
)
def test_a_cpu_build_on_a_gpu_machine_names_the_platforms_usual_cause(
    torch: str, arch: str, os_name: str, says: str
) -> None:
    facts = with_(torch=torch, torch_cuda=None, torch_build="cpu", arch=arch, os=os_name)
    found = [f for f in diagnose(facts, None, "", load_matrix()) if f.code == "cpu-only-build"]
    assert found and found[0].severity == "error"
    if says:
        assert says in found[0].message
    else:
        assert "PyPI's" not in found[0].message
