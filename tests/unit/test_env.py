"""Lock environments: the schema, which environment a machine gets and why, the uv call, and
uv's errors turned into one line (real uv output under tests/data/uv, captured with its
command). The real syncs are in tests/integration/test_sync.py."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from torchship.compat import load_matrix
from torchship.doctor.facts import Facts, GPUFact
from torchship.env import Host, host_of, pick_environment, platform_problem, prune
from torchship.env.places import MARKER
from torchship.env.sync import install_error, python_error, sync_argv
from torchship.errors import EnvError, LockFileError, UsageError
from torchship.lock import lock_changes, read_lock, write_lock
from torchship.lock.model import Lock, LockedPackage, export_requirements, is_cuda_package

LOCK = read_lock(REPO / "examples/quickstart/torchship.lock")
UV_DATA = REPO / "tests/data/uv"
CPU_BOX = Facts(origin="probe", arch="x86_64", glibc="2.36")
H100 = dataclasses.replace(
    CPU_BOX, driver="580.95.05", gpus=(GPUFact(0, "NVIDIA H100 80GB HBM3", cc="9.0"),)
)


def uv_stderr(name: str) -> str:
    text = (UV_DATA / name).read_text()
    return text.split("\n", 1)[1]  # the first line says where it came from


# --- the lock's environments ------------------------------------------------------------------


def test_quickstart_lock_holds_a_cuda_and_a_cpu_environment() -> None:
    assert LOCK.schema_version == 2
    assert [e.name for e in LOCK.all_environments()] == ["cu130", "cpu"]
    cu, cpu = LOCK.all_environments()
    assert cpu.torch == "2.13.0+cpu" and cpu.index_url == "https://download.pytorch.org/whl/cpu"
    same = {p.name: p.version for p in cu.packages if p.name != "torch"}
    # the same versions of every package, except torch's build and its CUDA wheels
    for p in cpu.packages:
        if p.name != "torch":
            assert same[p.name] == p.version, p.name
    assert {n for n in same if n not in {p.name for p in cpu.packages}} == {
        n for n in same if is_cuda_package(n)
    }
    torch = next(p for p in cpu.packages if p.name == "torch")
    assert torch.file and torch.file.startswith("torch-2.13.0+cpu-cp311") and torch.hashes
    assert all(p.source == "https://pypi.org/simple" for p in cpu.packages if p.name != "torch")
    assert cu.key != cpu.key and len(cu.short_key) == 12


def test_schema_1_locks_are_still_read(tmp_path: Path) -> None:
    old = read_lock(REPO / "tests/data/locks/cu128/torchship.lock")
    assert old.schema_version == 1 and old.environments == ()
    assert [e.name for e in old.all_environments()] == [old.variant]
    write_lock(old, tmp_path / "torchship.lock")  # kept as schema 1: same hash, same text
    again = read_lock(tmp_path / "torchship.lock")
    assert again.content_hash == old.content_hash
    with pytest.raises(UsageError) as e:
        export_requirements(old, env="cpu")
    assert "schema 1" in e.value.message and "torchship lock" in e.value.hint


def test_an_unknown_schema_is_refused_with_the_ones_read(tmp_path: Path) -> None:
    text = (REPO / "examples/quickstart/torchship.lock").read_text()
    (tmp_path / "torchship.lock").write_text(
        text.replace("schema_version = 2", "schema_version = 7")
    )
    with pytest.raises(LockFileError) as e:
        read_lock(tmp_path / "torchship.lock")
    assert "schema_version 7" in e.value.message and "(1, 2, 3)" in e.value.message


def test_a_hand_edited_environment_breaks_the_content_hash(tmp_path: Path) -> None:
    text = (REPO / "examples/quickstart/torchship.lock").read_text()
    edited = text.replace('version = "2.13.0+cpu"', 'version = "2.12.0+cpu"')
    assert edited != text
    (tmp_path / "torchship.lock").write_text(edited)
    with pytest.raises(LockFileError, match="content_hash"):
        read_lock(tmp_path / "torchship.lock")


def test_export_of_each_environment() -> None:
    cpu = export_requirements(LOCK, env="cpu")
    assert "# environment cpu: torch 2.13.0+cpu" in cpu
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "torch==2.13.0+cpu \\\n    --hash=sha256:" in cpu and "nvidia-" not in cpu
    assert "nvidia-nccl-cu13==" in export_requirements(LOCK)


def test_relock_changes_name_each_environment() -> None:
    cpu = LOCK.environment("cpu")
    assert cpu is not None
    tqdm = LockedPackage("tqdm", "4.67.1", ("sha256:" + "1" * 64,))

    def bumped(pkgs: tuple[LockedPackage, ...]) -> tuple[LockedPackage, ...]:
        moved = [dataclasses.replace(p, version="9.9") if p.name == "numpy" else p for p in pkgs]
        return tuple(sorted([*moved, tqdm], key=lambda p: p.name))

    new_cpu = dataclasses.replace(cpu, packages=bumped(cpu.packages))
    new = dataclasses.replace(LOCK, packages=bumped(LOCK.packages), environments=(new_cpu,))
    assert lock_changes(LOCK, new) == [
        "numpy 2.4.6 → 9.9 (cu130, cpu)",
        "+ tqdm 4.67.1 (cu130, cpu)",
    ]
    assert lock_changes(LOCK, LOCK) == [] and lock_changes(None, LOCK) == []
    alone = dataclasses.replace(LOCK, environments=())
    assert lock_changes(alone, LOCK) == ["+ environment cpu (cpu)"]
    assert lock_changes(LOCK, alone) == ["- environment cpu (cpu)"]


# --- which environment this machine gets ------------------------------------------------------


def test_a_machine_without_a_driver_gets_the_cpu_environment() -> None:
    pick = pick_environment(LOCK, CPU_BOX, load_matrix())
    assert pick.env.name == "cpu" and pick.reason.startswith("this machine has no NVIDIA driver")


def test_a_gpu_the_cuda_environment_runs_on_gets_it() -> None:
    pick = pick_environment(LOCK, H100, load_matrix())
    assert pick.env.name == "cu130" and "driver 580.95.05 runs cu130" in pick.reason


@pytest.mark.parametrize(
    ("gpu", "driver", "why"),
    [
        # R550 is below CUDA 13's floor: the CUDA build would not load
        (GPUFact(0, "NVIDIA H100 80GB HBM3", cc="9.0"), "550.54.15", "needs driver ≥ 580.65.06"),
        # Pascal (sm_61): cu130 builds no kernels for it
        (GPUFact(0, "NVIDIA GeForce GTX 1080", cc="6.1"), "580.95.05", "no kernels for GPU 0"),
        # compute capability unknown from the probe: looked up by name in the matrix
        (GPUFact(0, "Tesla P100-PCIE-16GB"), "580.95.05", "(sm_60)"),
    ],
)
def test_a_gpu_the_cuda_environment_cannot_use_falls_back_to_cpu(
    gpu: GPUFact, driver: str, why: str
) -> None:
    facts = dataclasses.replace(CPU_BOX, driver=driver, gpus=(gpu,))
    pick = pick_environment(LOCK, facts, load_matrix())
    assert pick.env.name == "cpu" and why in pick.reason and "the CPU build" in pick.reason


def test_env_by_name_and_its_errors() -> None:
    assert pick_environment(LOCK, CPU_BOX, load_matrix(), "cu130").env.name == "cu130"
    with pytest.raises(UsageError) as e:
        pick_environment(LOCK, CPU_BOX, load_matrix(), "cu128")
    assert "has cu130, cpu" in e.value.message and e.value.exit_code == 2
    arm = dataclasses.replace(CPU_BOX, arch="aarch64")
    with pytest.raises(EnvError) as e2:
        pick_environment(LOCK, arm, load_matrix())
    assert "locked for x86_64-manylinux_2_28; this machine is aarch64" in e2.value.message


def test_a_lock_without_a_cpu_environment_says_what_to_do() -> None:
    no_cpu = dataclasses.replace(LOCK, environments=())
    with pytest.raises(EnvError) as e:
        pick_environment(no_cpu, CPU_BOX, load_matrix())
    assert "no NVIDIA driver" in e.value.message and "cpu = false" in e.value.hint


@pytest.mark.parametrize(
    ("arch", "glibc", "problem"),
    [
        ("x86_64", "2.28", None),
        ("x86_64", "2.39", None),
        ("x86_64", "2.27", "glibc ≥ 2.28"),
        ("aarch64", "2.36", "this machine is aarch64"),
        ("x86_64", None, "no glibc"),
    ],
)
def test_platform_rule(arch: str, glibc: str | None, problem: str | None) -> None:
    found = platform_problem(LOCK.primary, Facts(origin="probe", arch=arch, glibc=glibc))
    assert (found is None) if problem is None else (found is not None and problem in found)


# --- the uv call and its errors ---------------------------------------------------------------


def test_sync_argv_uses_a_find_links_copy_instead_of_the_pytorch_index(tmp_path: Path) -> None:
    cpu = LOCK.environment("cpu")
    assert cpu is not None
    torch = next(p for p in cpu.packages if p.name == "torch")
    argv = sync_argv("uv", cpu, tmp_path / "v", tmp_path / "r.txt", [str(tmp_path)])
    # the folder lacks the locked file: the index serves it, with pip's one-version semantics
    assert argv[argv.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert "--require-hashes" in argv and "--no-config" in argv
    assert argv[argv.index("--index-strategy") + 1] == "unsafe-best-match"
    assert torch.file is not None
    (tmp_path / torch.file).write_bytes(b"")
    argv = sync_argv("uv", cpu, tmp_path / "v", tmp_path / "r.txt", [str(tmp_path), "/nope"])
    assert "--extra-index-url" not in argv and argv.count("--find-links") == 1
    # a lock that names no file (schema 1): torch's wheel of that version in the folder will do
    unnamed = dataclasses.replace(
        cpu,
        packages=tuple(dataclasses.replace(p, file=None) for p in cpu.packages),
    )
    argv = sync_argv("uv", unnamed, tmp_path / "v", tmp_path / "r.txt", [str(tmp_path)])
    assert "--extra-index-url" not in argv
    (tmp_path / torch.file).unlink()
    argv = sync_argv("uv", unnamed, tmp_path / "v", tmp_path / "r.txt", [str(tmp_path)])
    assert "--extra-index-url" in argv
    assert (
        sync_argv("uv", LOCK.primary, tmp_path / "v", tmp_path / "r.txt", []).count(
            "--extra-index-url"
        )
        == 0
    )


def test_uv_hash_mismatch_becomes_one_line() -> None:
    cpu = LOCK.environment("cpu")
    assert cpu is not None
    err = install_error(cpu, uv_stderr("hash-mismatch.txt"))
    assert err.message == (
        "torch 2.13.0+cpu: the file found does not match the lock's hash (computed "
        "sha256:15bfb8cbc10525d609d2f1ec51ef14aae8476ac9f4518f6e05d4f4ff3630400c)"
    )
    assert "re-lock" in err.hint and "\n" not in err.message + err.hint


def test_uv_unreachable_index_names_torch_and_its_wheel() -> None:
    cpu = dataclasses.replace(LOCK.environment("cpu"), index_url="http://127.0.0.1:9/whl/cpu")  # type: ignore[arg-type]
    err = install_error(cpu, uv_stderr("unreachable-index.txt"))
    assert err.message == (
        "torch 2.13.0+cpu: its index http://127.0.0.1:9/whl/cpu cannot be reached "
        "(Connection refused (os error 111))"
    )
    assert "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" in err.hint
    assert "--find-links DIR" in err.hint


def test_uv_not_found_names_the_package() -> None:
    cpu = LOCK.environment("cpu")
    assert cpu is not None
    err = install_error(cpu, uv_stderr("not-found.txt"))
    assert err.message.startswith("torch 2.13.0+cpu: no file of it on the indexes")
    assert "--find-links DIR" in err.hint


def test_uv_without_the_locked_python() -> None:
    err = python_error(LOCK.primary, uv_stderr("no-python.txt"))
    assert err.message.startswith("environment cu130 needs Python 3.11: none on this machine")
    assert "Name or service not known" in err.message and "uv python install 3.11" in err.hint


# --- the cache --------------------------------------------------------------------------------


def _fake_env(root: Path, name: str, age_days: float = 0.0) -> Path:
    path = root / name
    (path / "bin").mkdir(parents=True)
    (path / MARKER).write_text(json.dumps({"env": name, "key": "sha256:x"}))
    then = time.time() - age_days * 86400
    os.utime(path / MARKER, (then, then))
    return path


def test_prune_removes_leftovers_and_unused_environments(tmp_path: Path) -> None:
    fresh = _fake_env(tmp_path, "cpu-aaaaaaaaaaaa")
    old = _fake_env(tmp_path, "cu130-bbbbbbbbbbbb", age_days=40)
    killed = tmp_path / ".tmp-cpu-cccccccccccc-4242"
    (killed / "lib").mkdir(parents=True)
    unfinished = tmp_path / "cpu-dddddddddddd"  # no marker: a build that never finished
    unfinished.mkdir()
    removed = prune(tmp_path)
    assert sorted(p.name for p in removed) == sorted([old.name, killed.name, unfinished.name])
    assert fresh.is_dir() and not old.exists() and not killed.exists()
    assert [p.name for p in prune(tmp_path, all_envs=True)] == [fresh.name]


def test_env_commands_on_a_cache(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    envs = tmp_path / "envs"
    _fake_env(envs, "cpu-aaaaaaaaaaaa")
    _fake_env(envs, "cu130-bbbbbbbbbbbb", age_days=40)
    (envs / ".tmp-cpu-cccccccccccc-4242").mkdir()
    env = {"TORCHSHIP_CACHE_DIR": str(tmp_path)}
    listed = run_cli("env", "list", env=env)
    assert listed.returncode == 0 and "cpu-aaaaaaaaaaaa" in listed.stdout
    assert ".tmp-" not in listed.stdout
    pruned = run_cli("env", "prune", env=env)
    assert pruned.returncode == 0 and pruned.stdout.strip().endswith(f"2 removed from {envs}")
    assert [p.name for p in envs.iterdir() if p.name != ".locks"] == ["cpu-aaaaaaaaaaaa"]
    assert (
        run_cli("env", "prune", "--all", env=env)
        .stdout.strip()
        .endswith("1 removed from " + str(envs))
    )
    bad = run_cli("env", "path", str(tmp_path), env=env)
    assert (
        bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    )


@pytest.mark.parametrize("name", ["../../escape", "cpu/x", "", "CPU", "cu130 "])
def test_an_environment_name_that_is_not_a_build_name_is_refused(tmp_path: Path, name: str) -> None:
    cpu = LOCK.environment("cpu")
    assert cpu is not None
    hostile = dataclasses.replace(LOCK, environments=(dataclasses.replace(cpu, name=name),))
    write_lock(hostile, tmp_path / "torchship.lock")
    with pytest.raises(LockFileError) as e:
        read_lock(tmp_path / "torchship.lock")
    assert "is not a build name" in e.value.message and "\n" not in e.value.message
    variant = dataclasses.replace(LOCK, variant="../x")
    write_lock(variant, tmp_path / "torchship.lock")
    with pytest.raises(LockFileError, match="variant"):
        read_lock(tmp_path / "torchship.lock")


def _site(path: Path, packages: dict[str, str]) -> None:
    site = path / "lib/python3.11/site-packages"
    site.mkdir(parents=True, exist_ok=True)
    for name, version in packages.items():
        (site / f"{name.replace('-', '_')}-{version}.dist-info").mkdir()


def test_a_cache_hit_is_the_locked_environment_and_nothing_else(tmp_path: Path) -> None:
    from torchship.env.sync import cached, env_path

    cpu = LOCK.environment("cpu")
    assert cpu is not None
    path = env_path(cpu, tmp_path)
    (path / "bin").mkdir(parents=True)
    (path / "bin/python").symlink_to(Path(os.__file__))  # any existing file will do here
    (path / MARKER).write_text("{}")
    _site(path, {p.name: p.version for p in cpu.packages})
    hit = cached(cpu, tmp_path)
    assert hit is not None and hit.path == path
    _site(path, {"idna": "3.10"})  # installed by hand into the shared environment since
    assert cached(cpu, tmp_path) is None


def test_the_outer_pythons_settings_do_not_reach_the_environment(tmp_path: Path) -> None:
    from torchship.env import run_env
    from torchship.env.sync import SyncedEnv

    synced = SyncedEnv("cpu", "sha256:x", tmp_path / "env", cached=True)
    outer = {"PATH": "/usr/bin", "PYTHONPATH": "/shadow", "PYTHONHOME": "/h", "HOME": "/root"}
    env = run_env(synced, tmp_path / "agent", outer)
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env and env["HOME"] == "/root"
    assert env["PATH"].startswith(f"{tmp_path / 'env'}/bin") and env["VIRTUAL_ENV"].endswith("env")
    assert env["TORCHSHIP_AGENT_PATH"] == str(tmp_path / "agent")


def test_a_cache_folder_that_cannot_be_made_is_one_clear_error() -> None:
    from torchship.env.sync import sync

    cpu = LOCK.environment("cpu")
    assert cpu is not None
    with pytest.raises(EnvError) as e:
        sync(cpu, Path("/dev/null/cache/envs"))
    assert e.value.message.startswith("cannot use the environment cache /dev/null/cache/envs")
    assert "TORCHSHIP_CACHE_DIR" in e.value.hint


def test_a_gpu_of_unknown_capability_is_said_so() -> None:
    facts = dataclasses.replace(H100, gpus=(GPUFact(0, "NVIDIA Mystery X1"),))
    pick = pick_environment(LOCK, facts, load_matrix())
    assert pick.env.name == "cu130" and "NVIDIA Mystery X1 unknown" in pick.reason


def test_exec_options_after_the_project_are_a_usage_error() -> None:
    from tests.conftest import run_cli

    out = run_cli("exec", "--local", str(REPO / "examples/quickstart"), "--env", "cpu", "--", "x")
    assert out.returncode == 2 and "'--env' after the project" in out.stderr
    assert "-- CMD ARGS" in out.stderr and "Traceback" not in out.stderr


# --- a lock across platforms: this machine's platform first -------------------------------------

FLEET = read_lock(REPO / "tests/data/locks/fleet/torchship.lock")  # x86_64, aarch64, macOS arm64
GB200 = Facts(
    origin="probe",
    arch="aarch64",
    glibc="2.39",
    driver="580.95.05",
    gpus=(GPUFact(0, "NVIDIA GB200", cc="10.0"),),
)


def with_aarch64_cpu(lock: Lock) -> Lock:
    """The fleet lock as it is with `cpu = true` (its aarch64 CPU build needs the PyTorch
    index, which the machine that made the committed lock cannot reach)."""
    arm = lock.environment("linux-aarch64-cu130")
    assert arm is not None
    cpu = dataclasses.replace(
        arm,
        name="linux-aarch64-cpu",
        variant="cpu",
        cuda=None,
        torch="2.13.0+cpu",
        min_driver=None,
        arch_list=(),
        packages=tuple(p for p in arm.packages if not is_cuda_package(p.name)),
    )
    return dataclasses.replace(lock, environments=(*lock.environments, cpu))


@pytest.mark.parametrize(
    ("facts", "host", "env", "why"),
    [
        (H100, None, "cu130", "linux-x86_64: NVIDIA H100 80GB HBM3 with driver 580.95.05 runs"),
        (GB200, None, "linux-aarch64-cu130", "linux-aarch64: NVIDIA GB200 with driver 580.95.05"),
        (
            Facts(origin="probe", arch="arm64"),
            Host("macos", "aarch64", None, "15.1"),
            "macos-arm64-cpu",
            "macos-arm64: the CPU build (with MPS)",
        ),
        # a Mac's facts alone: Apple's `arm64` (Linux says aarch64), no glibc
        (Facts(origin="probe", arch="arm64"), None, "macos-arm64-cpu", "macos-arm64: the CPU"),
    ],
)
def test_each_platform_gets_its_own_environment(
    facts: Facts, host: Host | None, env: str, why: str
) -> None:
    pick = pick_environment(FLEET, facts, load_matrix(), host=host)
    assert pick.env.name == env and pick.reason.startswith(why), pick.reason


def test_an_aarch64_machine_whose_gpu_cannot_run_the_cuda_build_gets_its_cpu_one() -> None:
    lock = with_aarch64_cpu(FLEET)
    old_driver = dataclasses.replace(GB200, driver="570.86.15")
    pick = pick_environment(lock, old_driver, load_matrix())
    assert pick.env.name == "linux-aarch64-cpu"
    assert pick.reason == (
        "linux-aarch64: linux-aarch64-cu130 needs driver ≥ 580.65.06; this machine has "
        "570.86.15: the CPU build"
    )
    # its own arch list, not the x86_64 one: a T4 (sm_75) has no aarch64 kernels (sm_80 on)
    t4 = dataclasses.replace(GB200, gpus=(GPUFact(0, "Tesla T4", cc="7.5"),))
    pick = pick_environment(lock, t4, load_matrix())
    assert pick.env.name == "linux-aarch64-cpu" and "no kernels for GPU 0 Tesla T4" in pick.reason
    assert "no kernels" not in pick_environment(lock, H100, load_matrix()).reason  # sm_75 there


def test_a_machine_of_no_platform_of_the_lock_is_told_which_to_add() -> None:
    with pytest.raises(EnvError) as e:
        pick_environment(FLEET, Facts(origin="probe", arch="AMD64"), load_matrix())
    assert e.value.message == (
        "the lock of golden-fleet has environments for linux-x86_64, linux-aarch64, "
        "macos-arm64, none for this machine (windows-x86_64)"
    )
    assert e.value.hint.startswith('add "windows-x86_64" to [targets] platforms and re-lock')
    intel_mac = Host("macos", "x86_64", None, "13.6")
    with pytest.raises(EnvError, match=r"none for this machine \(macos-x86_64\)"):
        pick_environment(FLEET, Facts(origin="probe", arch="x86_64"), load_matrix(), host=intel_mac)


def test_a_mac_older_than_the_wheels_is_refused_with_its_version() -> None:
    old = Host("macos", "aarch64", None, "13.6.1")
    with pytest.raises(EnvError) as e:
        pick_environment(FLEET, Facts(origin="probe", arch="arm64"), load_matrix(), host=old)
    assert e.value.message == (
        "environment macos-arm64-cpu of golden-fleet cannot be installed here: it is locked "
        "for macos-arm64 (macOS ≥ 14.0); this machine has macOS 13.6.1"
    )


def test_an_environment_of_another_platform_by_name_is_refused_naming_it() -> None:
    with pytest.raises(EnvError) as e:
        pick_environment(FLEET, H100, load_matrix(), "linux-aarch64-cu130")
    assert e.value.message == (
        "environment linux-aarch64-cu130 of golden-fleet cannot be installed here: it is "
        "locked for aarch64-manylinux_2_28; this machine is x86_64"
    )
    assert e.value.hint.startswith("sync it on a linux-aarch64 machine")
    mac = Host("macos", "aarch64", None, "15.1")
    with pytest.raises(EnvError, match=r"locked for linux-x86_64 \(x86_64-manylinux_2_28\); this "
                       r"machine is macos-arm64"):  # fmt: skip
        pick_environment(FLEET, Facts(origin="probe", arch="arm64"), load_matrix(), "cu130", mac)


@pytest.mark.parametrize(
    ("facts", "system", "platform"),
    [
        (Facts(origin="probe", arch="x86_64", glibc="2.36"), None, "linux-x86_64"),
        (Facts(origin="probe", arch="aarch64", glibc="2.39"), None, "linux-aarch64"),
        (Facts(origin="probe", arch="arm64"), None, "macos-arm64"),
        (Facts(origin="probe", arch="x86_64"), "Darwin", "macos-x86_64"),
        (Facts(origin="probe", arch="AMD64"), None, "windows-x86_64"),
        (Facts(origin="probe", arch="AMD64"), "Windows", "windows-x86_64"),
        (Facts(origin="probe", arch="x86_64"), None, None),  # musl Linux or an Intel Mac
    ],
)
def test_the_platform_a_machine_is(facts: Facts, system: str | None, platform: str | None) -> None:
    assert host_of(facts, system).platform == platform


def test_platform_problem_of_every_kind_of_environment() -> None:
    mac = FLEET.environment("macos-arm64-cpu")
    assert mac is not None
    linux = Facts(origin="probe", arch="x86_64", glibc="2.36")
    assert platform_problem(mac, linux) == (
        "it is locked for macos-arm64 (aarch64-apple-darwin); this machine is linux-x86_64"
    )
    m1 = Facts(origin="probe", arch="arm64")
    assert platform_problem(mac, m1, Host("macos", "aarch64", None, "14.0")) is None
    assert platform_problem(mac, m1) is None  # the macOS version not known: not refused
    win = dataclasses.replace(mac, name="windows-x86_64-cpu", target="windows-x86_64",
                              platform="x86_64-pc-windows-msvc", macos_min=None)  # fmt: skip
    assert platform_problem(win, Facts(origin="probe", arch="AMD64")) is None
    assert "this machine is macos-arm64" in (platform_problem(win, m1) or "")
