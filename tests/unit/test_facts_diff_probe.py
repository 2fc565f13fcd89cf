"""Facts files (versioned, validated, fuzzed), diff ordering, and the probe's file parsing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_doctor_checks import HEALTHY
from torchship.doctor import probe
from torchship.doctor.diff import diff
from torchship.doctor.facts import facts_from_json, read_facts
from torchship.errors import UsageError


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    p.write_text(json.dumps(HEALTHY.to_json()))
    assert read_facts(p) == HEALTHY


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(schema_version=2), "schema_version 2"),
        (lambda d: d.pop("kind"), "not a torchship facts file"),
        (lambda d: d.update(torch=5), "f.json:torch: must be a string or null, not a number"),
        (lambda d: d.update(gpus=[{"index": 0}]), r"gpus\[0\].name: missing"),
        (lambda d: d.update(env={"A": 1}), "env: must be an object of strings"),
        (lambda d: d.update(cuda_available="yes"), "cuda_available: must be true or false or"),
        # found by the structural fuzzer: each crashed a check after loading
        (lambda d: d["gpus"][0].update(mig_mode=True), r"gpus\[0\].mig_mode: must be a string"),
        (lambda d: d.update(torch_cuda="../etc"), "torch_cuda: '../etc' is not a version"),
        (lambda d: d.update(shm_bytes=True), "shm_bytes: must be a whole number or null"),
        (lambda d: d.update(cgroup_cpus=float("nan")), "cgroup_cpus: is nan"),
        # unknown keys are refused with the closest field, not ignored
        (lambda d: d.update(torch_cudaa="12.8"), "torch_cudaa: unknown field"),
        (lambda d: d["gpus"][0].update(memory=1), r"gpus\[0\].memory: unknown field"),
    ],
)
def test_bad_facts(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    d = json.loads(json.dumps(HEALTHY.to_json()))
    mutate(d)
    with pytest.raises(UsageError, match=match) as e:
        facts_from_json(d, "f.json")
    assert e.value.exit_code == 2


def test_unreadable_facts(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_facts(tmp_path / "bin")
    (tmp_path / "text").write_text("{oops")
    with pytest.raises(UsageError, match="not JSON"):
        read_facts(tmp_path / "text")
    with pytest.raises(UsageError, match="no facts file"):
        read_facts(tmp_path / "absent")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "kind",
                "schema_version",
                "torch",
                "gpus",
                "env",
                "driver",
                "packages",
                "torch_arch",
                "shm_bytes",
                "origin",
            ]
        ),
        json_values,
        max_size=8,
    )
)
def test_fuzz_facts(d: dict[str, object]) -> None:
    d = {"kind": "torchship-facts", "schema_version": 1, "origin": "probe", **d}
    try:
        facts_from_json(d, "fuzz.json")
    except UsageError as e:
        assert "\n" not in str(e) and len(str(e)) < 300 and e.hint


def test_diff_orders_by_consequence() -> None:
    other = dataclasses.replace(
        HEALTHY,
        hostname="gpu2",
        driver="570.124.06",
        torch_cudnn="9.10.2",
        packages={**HEALTHY.packages, "numpy": "1.26.4", "rich": "13"},
        tf32_matmul=True,
    )
    d = diff(HEALTHY, other)
    fields = [x.field for x in d]
    assert fields == ["driver", "torch_cudnn", "tf32_matmul", "numpy", "packages", "hostname"]
    assert d[0].matters and not d[-1].matters
    assert d[4].a == {"rich": None} and d[4].b == {"rich": "13"}
    assert diff(HEALTHY, HEALTHY) == []


def test_diff_names_the_packages_each_difference_is_about() -> None:
    # the CPU build of the same release, on another host with another Python patch release
    other = dataclasses.replace(
        HEALTHY,
        hostname="laptop",
        python="3.11.2",
        torch="2.13.0+cpu",
        packages={**HEALTHY.packages, "numpy": "2.4.0", "rich": "13"},
    )
    by_field = {d.field: d.packages for d in diff(HEALTHY, other)}
    assert by_field == {
        "torch": ("torch",),
        "numpy": ("numpy",),
        "python": (),
        "packages": ("rich",),
        "hostname": (),
    }
    as_json = [d.to_json() for d in diff(HEALTHY, other)]
    assert sorted(p for d in as_json for p in d["packages"]) == ["numpy", "rich", "torch"]
    same_packages = dataclasses.replace(HEALTHY, hostname="laptop", python="3.11.2")
    assert [d.packages for d in diff(HEALTHY, same_packages)] == [(), ()]


def test_a_package_missing_on_one_side_is_a_difference() -> None:
    # numpy and torch have fields of their own, skipped where one side lacks them: the
    # package list still names them, as it names any other package one side lacks
    bare = dataclasses.replace(
        HEALTHY, torch=None, packages={"nvidia-cudnn-cu13": "9.20.0.48"}, torch_cuda=None
    )
    (d,) = [x for x in diff(HEALTHY, bare) if x.packages]
    assert d.field == "packages" and d.packages == ("numpy", "nvidia-nccl-cu13", "torch")
    assert d.a == {"numpy": "2.4.1", "nvidia-nccl-cu13": "2.29.7", "torch": "2.13.0"}
    assert d.b == {"numpy": None, "nvidia-nccl-cu13": None, "torch": None}


def test_diff_skips_what_one_side_did_not_observe() -> None:
    report_like = dataclasses.replace(HEALTHY, tf32_matmul=None, torch_nccl=None)
    assert [x.field for x in diff(HEALTHY, report_like)] == []


def test_probe_reads_a_fake_host(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\n')
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory.max").write_text("17179869184\n")
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("400000 100000\n")
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/cgroup").write_text("0::/kubepods/burstable/pod1234/abcd\n")
    (tmp_path / "dev/shm").mkdir(parents=True)
    (tmp_path / "sys/module/nvidia").mkdir(parents=True)
    (tmp_path / "sys/module/nvidia/version").write_text("580.95.05\n")
    calls = []

    def run(argv):  # type: ignore[no-untyped-def]
        calls.append(argv)
        if argv[0] == "nvidia-smi" and argv[1].startswith("--query-gpu=index,name,uuid,"):
            return "0, NVIDIA H100 80GB HBM3, GPU-abc, 9.0, 81559, Disabled, Enabled, 580.95.05\n"
        return None

    env = {
        "CUDA_VISIBLE_DEVICES": "0",
        "HF_TOKEN": "hf_secret",
        "HOME": "/root",
        "NCCL_DEBUG": "INFO",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    }
    f = probe.probe(runtime=False, root=tmp_path, run=run, environ=env, cuda_driver=lambda: "13.0")
    assert sum(a[0] == "nvidia-smi" for a in calls) == 1  # one question, asked once
    assert f.gpus[0].cc == "9.0" and f.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert f.os == "Ubuntu 24.04.1 LTS" and f.container == "kubernetes"
    assert f.cgroup_memory_bytes == 16 * 2**30 and f.cgroup_cpus == 4.0
    assert f.driver == "580.95.05" and f.driver_cuda == "13.0"
    assert (
        f.gpus[0].uuid == "GPU-abc" and f.gpus[0].memory_mib == 81559 and f.gpus[0].ecc == "Enabled"
    )
    assert (
        f.env["HF_TOKEN"] == "<redacted>" and "HOME" not in f.env and f.env["NCCL_DEBUG"] == "INFO"
    )
    assert f.sources["driver"] == "/sys/module/nvidia/version"


def test_mapped_and_path_libraries(tmp_path: Path) -> None:
    maps = (
        "7f00-7f01 r-xp 0 08:01 1 "
        "/venv/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9\n"
        "7f02-7f03 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7f04-7f05 r-xp 0 08:01 3 /usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05\n"
    )
    assert probe.mapped_libraries(maps) == (
        "/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05",
        "/venv/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9",
    )
    (tmp_path / "libnccl.so.2").write_text("")
    (tmp_path / "libfoo.so").write_text("")
    assert probe.library_path_libraries({"LD_LIBRARY_PATH": f"{tmp_path}::/nonexistent"}) == (
        str(tmp_path / "libnccl.so.2"),
    )


def test_the_host_is_named_as_gethostname_names_it() -> None:
    """The probe, the job store's claims and the local site name the host without socket."""
    import socket

    from torchship._host import hostname

    assert hostname() == socket.gethostname()


def _gpu_host(root: Path, models: list[str]) -> None:
    """A host whose driver's files name its GPUs, as /proc/driver/nvidia/gpus shows them."""
    (root / "sys/module/nvidia").mkdir(parents=True)
    (root / "sys/module/nvidia/version").write_text("580.95.05\n")
    for i, model in enumerate(models):
        gpu = root / f"proc/driver/nvidia/gpus/0000:{0x18 + i:02x}:00.0"
        gpu.mkdir(parents=True)
        (gpu / "information").write_text(
            f"Model: \t\t {model}\nIRQ:   \t\t 95\nGPU UUID: \t GPU-{i}\n"
            f"Bus Type: \t PCIe\nBus Location: \t 0000:{0x18 + i:02x}:00.0\nDevice Minor: \t {i}\n"
        )


def _smi(calls: list[list[str]], model: str, cc: str):  # type: ignore[no-untyped-def]
    def run(argv):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        if argv[0] == "nvidia-smi":
            return f"0, {model}, GPU-0, {cc}, 143771, Disabled, Enabled, 580.95.05\n"
        return None

    return run


def test_picking_an_environment_asks_no_gpu_of_a_host_whose_driver_names_them(
    tmp_path: Path,
) -> None:
    """nvidia-smi and NVML initialise every GPU: seconds on an 8-GPU host without
    persistence mode, on every `exec`, `sync` and `env path`. The driver's files name them."""
    from torchship.compat.matrix import load_matrix
    from torchship.env import host_facts

    _gpu_host(tmp_path, ["NVIDIA H200"] * 8)
    calls: list[list[str]] = []
    f = host_facts(load_matrix(), tmp_path, _smi(calls, "NVIDIA H200", "9.0"))
    assert calls == []
    assert [g.name for g in f.gpus] == ["NVIDIA H200"] * 8 and f.driver == "580.95.05"
    assert [g.index for g in f.gpus] == list(range(8))


def test_a_model_that_does_not_tell_its_compute_capability_is_asked_once(
    tmp_path: Path,
) -> None:
    from torchship.compat.matrix import load_matrix
    from torchship.env import host_facts

    _gpu_host(tmp_path, ["NVIDIA Zorblax 9000"])
    calls: list[list[str]] = []
    f = host_facts(load_matrix(), tmp_path, _smi(calls, "NVIDIA Zorblax 9000", "12.1"))
    assert [c[0] for c in calls] == ["nvidia-smi"]
    assert f.gpus[0].cc == "12.1"


def test_without_the_driver_files_the_gpus_are_asked_as_before(tmp_path: Path) -> None:
    from torchship.compat.matrix import load_matrix
    from torchship.env import host_facts

    (tmp_path / "sys/module/nvidia").mkdir(parents=True)
    (tmp_path / "sys/module/nvidia/version").write_text("580.95.05\n")
    calls: list[list[str]] = []
    f = host_facts(load_matrix(), tmp_path, _smi(calls, "NVIDIA H100 80GB HBM3", "9.0"))
    assert [c[0] for c in calls] == ["nvidia-smi"]  # once: one question, asked once
    assert f.gpus[0].name == "NVIDIA H100 80GB HBM3" and f.gpus[0].cc == "9.0"


def test_the_doctor_still_asks_for_every_detail(tmp_path: Path) -> None:
    _gpu_host(tmp_path, ["NVIDIA H200"])
    calls: list[list[str]] = []
    f = probe.probe(runtime=False, root=tmp_path, run=_smi(calls, "NVIDIA H200", "9.0"))
    assert f.gpus[0].uuid == "GPU-0" and f.gpus[0].memory_mib == 143771
