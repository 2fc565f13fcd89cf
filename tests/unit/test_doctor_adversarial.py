"""The doctor against inputs written to break its promises (an independent review's cases).

Every text here is SYNTHETIC, written for this test; the real reports are in the corpus.
"""

from __future__ import annotations

import time

import pytest

from torchship.compat.matrix import Matrix, load_matrix
from torchship.doctor import diagnose_report
from torchship.doctor.reader import read

SMI_4090 = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0  On |                  Off |
|  0%   40C    P8             20W /  450W |     500MiB /  24564MiB |      0%      Default |
|                                         |                        |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""


def codes(text: str, matrix: Matrix) -> dict[str, str]:
    return {f.code: f.severity for f in diagnose_report(text, matrix).findings}


def errors(text: str, matrix: Matrix) -> set[str]:
    return {c for c, s in codes(text, matrix).items() if s == "error"}


@pytest.mark.parametrize(
    "text",
    [
        'I read that "Torch not compiled with CUDA enabled" can happen with pip. My setup works.',
        "Before you ask: no, this is not the usual 'No CUDA GPUs are available' problem.",
        "Note: to avoid 'Cannot re-initialize CUDA in forked subprocess' we already use spawn.",
        "I fixed 'The NVIDIA driver on your system is too old (found version 11040)' by "
        "upgrading to 535. Now:\nKeyError: 'model'",
        "After upgrading I no longer see `A module that was compiled using NumPy 1.x cannot be "
        "run in NumPy 2.0.1`",
        "We set timeout=7200 because of a 'Watchdog caught collective operation timeout' we had "
        "last year",
        "Related: the docs say Xid 79 means the GPU has fallen off the bus, but we have no Xids.",
        "WARNING: The requested image's platform (linux/arm64) does not match; This image was "
        "built for: linux/amd64",
        "I fixed \"Could not run 'torchvision::nms' with arguments from the 'CUDA' backend\" "
        "by reinstalling torchvision; now the loss diverges at step 300.",
        "To avoid 'xFormers wasn't build with CUDA support' we now pin xformers.\n"
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "Unlike #1784 we see no undefined symbol ncclCommRegister; the job just hangs.",
    ],
)
def test_prose_about_an_error_is_not_an_error(text: str, matrix: Matrix) -> None:
    assert errors(text, matrix) == set(), codes(text, matrix)


def test_an_error_introduced_by_the_reporter_is_still_an_error(matrix: Matrix) -> None:
    text = "When I run it I get this error: RuntimeError: No CUDA GPUs are available"
    assert errors(text, matrix) == {"no-gpu-visible"}


def test_the_mig_column_header_is_not_mig(matrix: Matrix) -> None:
    text = SMI_4090 + "RuntimeError: CUDA error: invalid device ordinal\n"
    assert "mig-device-visibility" not in codes(text, matrix)


def test_not_in_a_container_is_not_a_container(matrix: Matrix) -> None:
    text = (
        "I'm not using a docker container, this is bare metal.\n"
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    )
    assert errors(text, matrix) == {"driver-not-loaded"}


def test_a_multi_line_docker_run_is_read_whole(matrix: Matrix) -> None:
    text = (
        "docker run -it \\\n  --gpus all \\\n  --shm-size=16g \\\n  nvcr.io/nvidia/pytorch:24.05-py3\n"
        ">>> torch.cuda.is_available()\nFalse\n"
    )
    facts, _ = read(text, matrix)
    assert facts.shm_bytes == 16 * 2**30 and "container-gpus" in facts.sources
    assert "shm-too-small" not in codes(text, matrix)


def test_a_full_disk_is_not_dev_shm(matrix: Matrix) -> None:
    text = (
        "docker run --gpus all -v /data:/data img\n"
        "OSError: [Errno 28] No space left on device: '/data/checkpoints/epoch_10.pt'\n"
    )
    assert codes(text, matrix).get("shm-too-small", "info") == "info"  # docker's default, a note


@pytest.mark.parametrize("tag", ["cu1", "cu9", "cpu.cxx11.abi", "81ea7a4"])
def test_odd_local_tags_never_crash(tag: str, matrix: Matrix) -> None:
    text = f"PyTorch version: 2.1.0+{tag}\nNvidia driver version: 470.82.01\n"
    facts, _ = read(text, matrix)
    assert facts.build == ("cpu" if tag.startswith("cpu") else None)
    diagnose_report(text, matrix)


def test_a_collect_env_version_beats_one_in_prose(matrix: Matrix) -> None:
    text = (
        "After upgrading from torch 2.0.1+cu117 everything fails.\n"
        "PyTorch version: 2.4.0+cu124\nCUDA used to build PyTorch: 12.4\n"
    )
    facts, _ = read(text, matrix)
    assert facts.torch == "2.4.0+cu124" and facts.torch_cuda == "12.4"


def test_mig_mode_belongs_to_its_gpu_and_gpus_are_not_counted_twice(matrix: Matrix) -> None:
    text = (
        "GPU models and configuration:\nGPU 0: NVIDIA A100-SXM4-80GB\nGPU 1: NVIDIA A100-SXM4-80GB\n"
        "|   0  NVIDIA A100-SXM4-80GB          On  |   00000000:07:00.0 Off |                    0 |\n"
        "|                                         |                        |             Enabled |\n"
        "|   1  NVIDIA A100-SXM4-80GB          On  |   00000000:0F:00.0 Off |                    0 |\n"
        "|                                         |                        |            Disabled |\n"
        "    Product Name                          : NVIDIA A100-SXM4-80GB\n"
        "    Product Name                          : NVIDIA A100-SXM4-80GB\n"
    )
    facts, _ = read(text, matrix)
    assert [(g.index, g.mig_mode) for g in facts.gpus] == [(0, "Enabled"), (1, "Disabled")]


def test_windows_rows_conda_torch_and_no(matrix: Matrix) -> None:
    smi = "|   0  NVIDIA GeForce RTX 4090      WDDM  |   00000000:01:00.0  On |                  Off |\n"
    assert [g.name for g in read(smi, matrix)[0].gpus] == ["NVIDIA GeForce RTX 4090"]
    conda = "# Name    Version    Build    Channel\npytorch   2.1.0   py3.10_cuda11.8_cudnn8.7.0_0   pytorch\n"
    facts, _ = read(conda, matrix)
    assert facts.torch == "2.1.0" and facts.torch_cuda == "11.8"
    assert read("Is CUDA available: No\n", matrix)[0].cuda_available is False


def test_a_mac_is_told_about_mps_not_cuda_wheels(matrix: Matrix) -> None:
    text = (
        'File "/Users/bob/miniforge3/lib/python3.11/site-packages/torch/cuda/__init__.py", line 1\n'
        "AssertionError: Torch not compiled with CUDA enabled\n"
    )
    f = next(x for x in diagnose_report(text, matrix).findings if x.code == "cpu-only-build")
    assert "mps" in f.fix and "cu128" not in f.fix


def test_an_odd_tag_makes_no_false_conflict(matrix: Matrix) -> None:
    text = (
        "PyTorch version: 2.2.0a0+81ea7a4\nAssertionError: Torch not compiled with CUDA enabled\n"
    )
    assert diagnose_report(text, matrix).conflicts == ()


def test_evidence_line_numbers_agree_with_carriage_returns(matrix: Matrix) -> None:
    text = "PyTorch version: 2.1.0+cu121\r\nprogress\r 50%\r100%\nRuntimeError: No CUDA GPUs are available\n"
    f = next(x for x in diagnose_report(text, matrix).findings if x.code == "no-gpu-visible")
    assert f.evidence[0].startswith("line 3:"), f.evidence


def test_working_cuda_makes_an_old_driver_a_warning(matrix: Matrix) -> None:
    text = (
        "PyTorch version: 2.4.0+cu124\nCUDA used to build PyTorch: 12.4\nIs CUDA available: True\n"
        "GPU models and configuration: GPU 0: NVIDIA A100-SXM4-80GB\n"
        "Nvidia driver version: 470.161.03\n"
    )
    assert codes(text, matrix)["driver-too-old"] == "warning"


def test_a_transport_failure_is_not_hidden_by_the_timeout_it_caused(matrix: Matrix) -> None:
    text = (
        "node1:1:2 [0] NCCL WARN NET/Socket : Connect to 10.0.0.5<43211> failed : Connection refused\n"
        "\n[rank0]:[E] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1, "
        "OpType=ALLREDUCE) ran for 1800000 milliseconds before timing out.\n"
    )
    found = codes(text, matrix)
    assert found["nccl-transport-failure"] == "error" and found["collective-timeout"] == "error"


def test_a_repeated_line_does_not_hide_the_real_error(matrix: Matrix) -> None:
    noise = "W Could not load dynamic library 'libnvinfer.so.7'; dlerror: libnvinfer.so.7: cannot open shared object file\n"
    text = noise * 60 + "ImportError: libcudnn.so.8: cannot open shared object file\n"
    assert "cuda-library-missing" in errors(text, matrix)


@pytest.mark.parametrize(
    "text",
    [
        "node1:1:2 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/IPC/read\n" * 50_000,
        "a\n" * 1_000_000,
        "cuDNN version: Probably one of the following:\n"
        + "/usr/lib/x86_64-linux-gnu/libcudnn.so.8.9.2\n" * 40_000,
        ("GPU 0: " + "A " * 1000 + "\n") * 3000,
        ("docker run " + "a " * 900 + "\n") * 3000,
    ],
)
def test_large_pastes_stay_fast(text: str, matrix: Matrix) -> None:
    start = time.perf_counter()
    diagnose_report(text, matrix)
    assert time.perf_counter() - start < 5.0


def test_the_documented_way_to_set_visible_devices_is_not_flagged(matrix: Matrix) -> None:
    text = "```python\nimport os\nos.environ['CUDA_VISIBLE_DEVICES'] = '0'\nimport torch\n```\n"
    assert "cuda-visible-devices-late" not in codes(text, matrix)
    late = "```python\nimport torch\nos.environ['CUDA_VISIBLE_DEVICES'] = '1'\n```\n"
    assert codes(late, matrix).get("cuda-visible-devices-late") == "warning"


def test_wrong_fixes_of_the_review(matrix: Matrix) -> None:
    libcuda = "ImportError: libcuda.so.1: cannot open shared object file: No such file or directory"
    f = next(x for x in diagnose_report(libcuda, matrix).findings)
    assert "driver" in f.message and "reinstall torch" not in f.fix
    proxy = (
        "WARNING: Retrying (Retry(total=4)) after connection broken by 'ProxyError('Cannot "
        "connect to proxy.')'\nERROR: Could not find a version that satisfies the requirement "
        "torch (from versions: none)\n"
    )
    assert "no-wheel-for-platform" not in errors(proxy, matrix)
    hgx = (
        "\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3" for i in range(8))
        + "\nIs CUDA available: False\n"
    )
    assert "fabric-manager-missing" in codes(hgx, matrix)
    intel = "PyTorch version: 2.1.0+cpu\nGPU models and configuration: Intel(R) UHD Graphics 620\n"
    assert "cpu-only-build" not in errors(intel, matrix)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("RuntimeError: CUDA error: no CUDA-capable device is detected", "no-gpu-visible"),
        (
            'docker: Error response from daemon: could not select device driver "" with '
            "capabilities: [[gpu]].",
            "no-gpu-visible",
        ),
        (
            "RuntimeError: CUDA error: system has unsupported display driver / cuda driver "
            "combination",
            "driver-library-mismatch",
        ),
        (
            "CUDA error: the provided PTX was compiled with an unsupported toolchain.",
            "driver-too-old",
        ),
        ("NVIDIA-SMI couldn't find libnvidia-ml.so library in your system.", "driver-not-loaded"),
        (
            "OSError: libnvrtc-builtins.so.12.1: cannot open shared object file",
            "cuda-library-missing",
        ),
        (
            'OSError: [WinError 126] Error loading "C:\\\\x\\\\torch\\\\lib\\\\cudnn_cnn_infer64_8.dll"',
            "cuda-library-missing",
        ),
        ("ImportError: /lib64/libstdc++.so.6: version `GLIBCXX_3.4.29' not found", "glibc-too-old"),
        (
            "RuntimeError: [1] is setting up NCCL communicator and retrieving ncclUniqueId: Some "
            "NCCL operations have failed or timed out.",
            "collective-timeout",
        ),
        ("/usr/bin/ld: cannot find -lcuda", "compile-toolchain-missing"),
        ("RuntimeError: Cannot find a working triton installation.", "compile-toolchain-missing"),
        (
            "OSError: The detected CUDA version (12.1) mismatches the version that was used to "
            "compile PyTorch (11.8). Please make sure to use the same CUDA versions.",
            "extension-abi-mismatch",
        ),
        (
            "ERROR: No matching distribution found for torchvision==0.16.0",
            "no-wheel-for-platform",
        ),
    ],
)
def test_common_wordings_are_named(text: str, code: str, matrix: Matrix) -> None:
    assert code in codes(text, matrix), codes(text, matrix)


def test_markdown_tables_and_urls_give_versions(matrix: Matrix) -> None:
    facts, _ = read("| package | version |\n|---|---|\n| torch | 2.1.0+cu118 |\n", matrix)
    assert facts.torch == "2.1.0+cu118"
    url = "torch @ https://download.pytorch.org/whl/cu118/torch-2.1.0%2Bcu118-cp310-cp310-linux_x86_64.whl\n"
    assert read(url, matrix)[0].packages["torch"] == "2.1.0+cu118"


def test_a_print_call_answers_is_available(matrix: Matrix) -> None:
    facts, _ = read(">>> print(torch.cuda.is_available())\nFalse\n", matrix)
    assert facts.cuda_available is False


def test_load_matrix_is_the_matrix() -> None:  # keeps the fixture honest
    assert load_matrix().releases


@pytest.mark.parametrize(
    ("launch", "severity"),
    [
        ("dist.init_process_group(backend='nccl')", "error"),  # no "torch" on the line
        ("torchrun --nproc_per_node=4 train.py", "error"),
        ("python train.py --device cuda:1", "warning"),  # one process: likely, not certain
    ],
)
def test_an_invalid_ordinal_is_an_error_when_the_text_shows_several_ranks(
    launch: str, severity: str, matrix: Matrix
) -> None:
    text = f"$ {launch}\nRuntimeError: CUDA error: invalid device ordinal\n"
    assert codes(text, matrix) == {"gpu-rank-mapping": severity}
