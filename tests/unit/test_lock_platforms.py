"""Locks across platforms (issue 18, item 4): one environment per platform and accelerator,
each compiled by uv for its own platform and pinned to the primary environment's versions.

uv itself is replayed here from real outputs (tests/data/uv/compile-*.txt: uv 0.13.9 against
PyPI, each file's first line says the command), so these tests run without a network; the
real locks are in tests/integration/test_lock_real.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import REPO, run_cli
from torchship.errors import IndexUnreachableError, LockError, LockFileError, NothingFitsError
from torchship.lock import lock_fleet, lock_spec, read_lock, write_lock
from torchship.lock.compile import (
    _failure,
    plan_env_compile,
    wheel_fits,
)
from torchship.lock.model import LockedPackage
from torchship.spec import load_spec
from torchship.spec.model import content_hash

UV = REPO / "tests/data/uv"
FLEET = REPO / "tests/data/locks/fleet"  # linux-x86_64 + linux-aarch64 + macos-arm64

GPU_FLEET = """
name = "fleet"
torch = "2.13.0"
python = "3.11"
packages = ["numpy", "tqdm"]
[targets]
gpus = ["H100", "GB200"]
driver = "580.95.05"
cpu = false
platforms = ["linux-x86_64", "linux-aarch64", "macos-arm64"]
"""
CPU_FLEET = """
name = "cpu-fleet"
torch = "2.13.0"
cuda = "cpu"
python = "3.11"
packages = ["numpy", "tqdm"]
[targets]
platforms = ["linux-x86_64", "windows-x86_64"]
"""


# torch 2.13.0 has no macOS x86_64 wheels (they stop at 2.2.2)
NO_COMMON_TORCH = GPU_FLEET.replace('"macos-arm64"]', '"macos-x86_64"]').replace("GB200", "L4")


def recorded(name: str) -> str:
    return (UV / name).read_text().split("\n", 1)[1]  # the first line says where it came from


class Replay:
    """uv, answered from its recorded outputs by (--python-platform, torch pin); every call
    (argv, stdin, environment) is kept to be looked at. `fail` maps a platform to the
    recorded stderr uv printed there."""

    def __init__(self, fail: Mapping[str, str] | None = None) -> None:
        self.calls: list[tuple[list[str], str, dict[str, str], str]] = []
        self.fail = dict(fail or {})
        self.lock = threading.Lock()

    def __call__(
        self, argv: Sequence[str], stdin: str, env: Mapping[str, str]
    ) -> subprocess.CompletedProcess[str]:
        platform = argv[list(argv).index("--python-platform") + 1]
        constraints = ""
        if "--constraint" in argv:
            constraints = Path(argv[list(argv).index("--constraint") + 1]).read_text()
        with self.lock:
            self.calls.append((list(argv), stdin, dict(env), constraints))
        if platform in self.fail:
            return subprocess.CompletedProcess(list(argv), 1, "", recorded(self.fail[platform]))
        torch = stdin.split(maxsplit=1)[0].removeprefix("torch===")
        return subprocess.CompletedProcess(
            list(argv), 0, recorded(f"compile-{platform}-{torch}.txt"), ""
        )

    def call(self, platform: str) -> tuple[list[str], str, dict[str, str], str]:
        return next(c for c in self.calls if platform in c[0])


def project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "torchship.toml").write_text(text)
    return tmp_path


# --- the lock -----------------------------------------------------------------------------------


def test_a_gpu_fleet_locks_one_environment_per_platform(tmp_path: Path) -> None:
    uv = Replay()
    lock, fleet = lock_fleet(load_spec(project(tmp_path, GPU_FLEET)), runner=uv)
    assert [e.name for e in lock.all_environments()] == [
        "cu130",
        "linux-aarch64-cu130",
        "macos-arm64-cpu",
    ]
    assert lock.schema_version == 3 and fleet.torch == "2.13.0"
    assert lock.platforms() == ("linux-x86_64", "linux-aarch64", "macos-arm64")
    assert [g.name for g in lock.gpus] == ["H100", "GB200"]  # every target, not the primary's
    arm = lock.environment("linux-aarch64-cu130")
    mac = lock.environment("macos-arm64-cpu")
    assert arm is not None and mac is not None
    # the aarch64 build: PyPI's CUDA 13.0 wheels, their own floor and kernels
    assert (arm.target, arm.platform, arm.torch) == ("linux-aarch64", "aarch64-manylinux_2_28",
                                                     "2.13.0")  # fmt: skip
    assert arm.arch_list == ("sm_80", "sm_90", "sm_100", "sm_110", "sm_120")
    assert arm.min_driver == "580.65.06" and arm.base_image == lock.base_image
    assert any(p.name == "nvidia-nccl-cu13" for p in arm.packages)
    # the Mac: CPU (MPS) wheels for macOS 14 and later, no CUDA wheel at all
    assert (mac.platform, mac.macos_min, mac.base_image) == ("aarch64-apple-darwin", "14.0", None)
    assert not any(p.name.startswith(("nvidia-", "cuda-", "triton")) for p in mac.packages)
    # the same version of every package that exists on several platforms
    versions: dict[str, set[str]] = {}
    for e in lock.all_environments():
        for p in e.packages:
            versions.setdefault(p.name, set()).add(p.version)
    assert {n: v for n, v in versions.items() if len(v) > 1} == {}
    # it reads back as written, and writing it again gives the same bytes
    path = tmp_path / "torchship.lock"
    write_lock(lock, path)
    again = read_lock(path)
    assert again == dataclasses.replace(lock, torchship_version=again.torchship_version)
    first = path.read_bytes()
    write_lock(again, path)
    assert path.read_bytes() == first


def test_each_platform_is_compiled_for_itself_with_the_primary_pins(tmp_path: Path) -> None:
    uv = Replay()
    lock, _ = lock_fleet(load_spec(project(tmp_path, GPU_FLEET)), runner=uv)
    assert len(uv.calls) == 3
    x86 = uv.call("x86_64-manylinux_2_28")
    arm = uv.call("aarch64-manylinux_2_28")
    mac = uv.call("aarch64-apple-darwin")
    assert x86[1] == arm[1] == mac[1] == "torch===2.13.0\nnumpy\ntqdm\n"
    # uv assumes macOS 13.0 for aarch64-apple-darwin: the macosx_14_0 torch wheels need 14.0
    assert mac[2] == {"MACOSX_DEPLOYMENT_TARGET": "14.0"} and x86[2] == arm[2] == {}
    shared = {p.pin for p in lock.packages if p.name != "torch"}
    for call in (arm, mac):
        pins = set(call[3].split())
        assert pins and pins <= shared and not any(p.startswith(("nvidia-", "cuda-")) for p in pins)


def test_a_cpu_fleet_takes_windows_from_pypi(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"  # the +cpu torch of linux-x86_64 comes from a folder
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    spec = load_spec(project(tmp_path, CPU_FLEET))
    lock, _ = lock_fleet(spec, [str(wheels)], runner=Replay())
    assert [e.name for e in lock.all_environments()] == ["cpu", "windows-x86_64-cpu"]
    win = lock.environment("windows-x86_64-cpu")
    assert win is not None and win.platform == "x86_64-pc-windows-msvc"
    assert win.torch == "2.13.0" and win.index_url == "https://pypi.org/simple"  # PyPI's is CPU
    assert lock.torch == "2.13.0+cpu" and lock.index_url == "https://download.pytorch.org/whl/cpu"
    # tqdm needs colorama on Windows only: a package of one platform is locked there alone
    assert "colorama" in {p.name for p in win.packages} - {p.name for p in lock.packages}


def test_a_spec_for_linux_x86_64_alone_locks_exactly_as_before(tmp_path: Path) -> None:
    """The quickstart locked again, with uv answering what its committed lock pins: the same
    bytes, schema 2, no `target` anywhere."""
    committed = read_lock(REPO / "examples/quickstart/torchship.lock")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cpu = committed.environment("cpu")
    assert cpu is not None
    for p in cpu.packages:
        if p.file:
            (wheels / p.file).write_bytes(b"")

    def answer(packages: tuple[LockedPackage, ...]) -> str:
        out = []
        for p in packages:
            hashes = " \\\n".join(f"    --hash={h}" for h in p.hashes)
            source = p.source or f"file://{wheels}"
            out.append(f"{p.pin} \\\n{hashes}\n    # from {source}\n")
        return "".join(out)

    def uv(argv: Sequence[str], stdin: str, env: Mapping[str, str]) -> Any:
        pkgs = cpu.packages if "+cpu" in stdin else committed.packages
        return subprocess.CompletedProcess(list(argv), 0, answer(pkgs), "")

    spec = load_spec(REPO / "examples/quickstart")
    lock, res = lock_spec(spec, [str(wheels)], runner=uv)
    assert res.chosen is not None and res.chosen.variant.name == "cu130"
    assert lock.to_toml() == (REPO / "examples/quickstart/torchship.lock").read_text()
    assert "\ntarget = " not in lock.to_toml()


# --- refusals -----------------------------------------------------------------------------------


def test_a_package_without_a_wheel_on_one_platform_names_both(tmp_path: Path) -> None:
    uv = Replay(fail={"x86_64-pc-windows-msvc": "no-wheel-windows.txt"})
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    spec = load_spec(project(tmp_path, CPU_FLEET))
    with pytest.raises(LockError) as e:
        lock_fleet(spec, [str(wheels)], runner=uv)
    assert e.value.message.startswith(
        "windows-x86_64-cpu: no wheel of triton for win_amd64 (Python 3.11); triton 3.9.0 has "
        "wheels for manylinux_2_27_aarch64, manylinux_2_27_x86_64"
    )
    assert "triton; sys_platform != 'win32'" in e.value.hint
    assert "windows-x86_64 from [targets] platforms" in e.value.hint
    assert "\n" not in e.value.message + e.value.hint


def test_uv_without_a_macos_floor_finds_no_torch_and_says_so() -> None:
    """What uv answers for aarch64-apple-darwin when MACOSX_DEPLOYMENT_TARGET is not set: it
    resolves for macOS 13.0, and torch 2.13.0 ships macosx_14_0 wheels only."""
    text = recorded("no-wheel-macos-without-deployment-target.txt")
    assert "`macosx_13_0_arm64`" in text
    spec = load_spec(FLEET)
    mac = read_lock(FLEET / "torchship.lock").environment("macos-arm64-cpu")
    assert mac is not None
    from torchship.compat import load_matrix

    release = load_matrix().release("2.13.0")
    assert release is not None
    view = release.on("macos-arm64")
    assert view is not None
    plan = plan_env_compile(spec, view, view.variants[0], label="macos-arm64-cpu")
    assert plan.environ == {"MACOSX_DEPLOYMENT_TARGET": "14.0"}
    err = _failure(plan, text, plan.expected_torch)
    assert err.message.startswith("macos-arm64-cpu: no wheel of torch for macosx_13_0_arm64")
    assert "macosx_14_0_arm64" in err.message and "torchship resolve" in err.hint


def test_the_macos_floor_is_the_wheel_of_this_python() -> None:
    """torch 2.10.0: macosx_11_0 wheels for 3.11, macosx_14_0 only for 3.14 (the matrix's
    `macos_min_python`)."""
    from torchship.compat import load_matrix

    release = load_matrix().release("2.10.0")
    view = release.on("macos-arm64") if release else None
    assert view is not None
    spec = load_spec(FLEET)
    assert plan_env_compile(spec, view, view.variants[0]).macos_min == "11.0"
    py314 = dataclasses.replace(spec, python="3.14")
    assert plan_env_compile(py314, view, view.variants[0]).macos_min == "14.0"


def test_a_macos_floor_the_matrix_does_not_know_is_taken_from_uv_once() -> None:
    """Where uv finds no torch wheel at the floor it was given, it lists the tags torch has:
    uv runs once more at the lowest macOS above, and the environment records that one."""
    from torchship.compat import load_matrix
    from torchship.lock.compile import compile_env
    from torchship.lock.uv_errors import macos_floor

    text = recorded("no-wheel-macos-2.10-py3.14-at-11.0.txt")
    assert macos_floor(text, "11.0", "arm64") == "14.0"
    assert (
        macos_floor(text, "14.0", "arm64") is None and macos_floor(text, "11.0", "x86_64") is None
    )
    assert macos_floor(recorded("no-wheel-windows.txt"), "11.0", "arm64") is None
    release = load_matrix().release("2.10.0")
    view = release.on("macos-arm64") if release else None
    assert view is not None
    stale = dataclasses.replace(view, macos_min_python=())  # as a matrix without the data
    spec = dataclasses.replace(load_spec(FLEET), python="3.14", packages=())
    plan = plan_env_compile(spec, stale, view.variants[0])
    assert plan.macos_min == "11.0"
    seen: list[str] = []

    def uv(argv: Sequence[str], stdin: str, env: Mapping[str, str]) -> Any:
        seen.append(env["MACOSX_DEPLOYMENT_TARGET"])
        if env["MACOSX_DEPLOYMENT_TARGET"] == "11.0":
            return subprocess.CompletedProcess(list(argv), 1, "", text)
        answer = recorded("compile-aarch64-apple-darwin-2.10.0-py3.14.txt")
        return subprocess.CompletedProcess(list(argv), 0, answer, "")

    done, packages = compile_env(plan, uv)
    assert seen == ["11.0", "14.0"] and done.macos_min == "14.0"
    assert any(p.pin == "torch==2.10.0" for p in packages)


def test_an_older_torch_resolves_for_macos_11() -> None:
    from torchship.compat import load_matrix

    spec = load_spec(FLEET)
    release = load_matrix().release("2.11.0")
    assert release is not None
    view = release.on("macos-arm64")
    assert view is not None
    plan = plan_env_compile(spec, view, view.variants[0])
    assert plan.environ == {"MACOSX_DEPLOYMENT_TARGET": "11.0"}
    assert plan.platform == "aarch64-apple-darwin"


def test_no_common_torch_is_refused_before_uv_runs(tmp_path: Path) -> None:
    uv = Replay()
    text = NO_COMMON_TORCH
    with pytest.raises(NothingFitsError) as e:
        lock_fleet(load_spec(project(tmp_path, text)), runner=uv)
    assert "no torch release runs on every platform" in e.value.message
    assert "macos-x86_64: none" in e.value.message and "drop a platform" in e.value.hint
    assert uv.calls == []


def test_the_cli_refuses_in_two_lines_and_writes_nothing(tmp_path: Path) -> None:
    out = run_cli("lock", str(project(tmp_path, NO_COMMON_TORCH)))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 2, out.stderr
    assert lines[0].startswith("error: ") and "macos-x86_64: none" in lines[0]
    assert lines[1].startswith("hint: ")
    assert not (tmp_path / "torchship.lock").exists()


def test_an_unreachable_index_names_the_environment_and_the_wheel_to_fetch() -> None:
    spec = load_spec(FLEET)
    from torchship.compat import load_matrix

    release = load_matrix().release("2.13.0")
    assert release is not None
    view = release.on("linux-aarch64")
    cpu = view.variant("cpu") if view else None
    assert view is not None and cpu is not None
    plan = plan_env_compile(spec, view, cpu, label="linux-aarch64-cpu")
    assert plan.extra_index_url == "https://download.pytorch.org/whl/cpu"
    text = recorded("unreachable-index.txt").replace(
        "http://127.0.0.1:9/whl/cpu", plan.extra_index_url
    )
    err = _failure(plan, text, plan.expected_torch)
    assert isinstance(err, IndexUnreachableError)
    assert err.message.endswith("(locking linux-aarch64-cpu)")
    assert "--platform manylinux_2_28_aarch64 --python-version 3.11 --only-binary=:all:" in err.hint


def test_a_find_links_wheel_of_another_platform_or_python_does_not_stand_in(tmp_path: Path) -> None:
    """/opt/wheels holds the x86_64 cp311 CPU torch: it serves neither aarch64 nor cp312."""
    from torchship.compat.platforms import INFO

    x86 = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert wheel_fits(x86, INFO["linux-x86_64"], "3.11")
    assert not wheel_fits(x86, INFO["linux-aarch64"], "3.11")
    assert not wheel_fits(x86, INFO["linux-x86_64"], "3.12")
    assert wheel_fits("torch-2.13.0-cp311-none-macosx_14_0_arm64.whl", INFO["macos-arm64"])
    assert wheel_fits("torch-2.13.0-cp311-cp311-win_amd64.whl", INFO["windows-x86_64"], "3.11")
    assert wheel_fits("six-1.17.0-py2.py3-none-any.whl", INFO["windows-x86_64"], "3.12")
    assert wheel_fits("x-1.0-cp39-abi3-manylinux_2_28_aarch64.whl", INFO["linux-aarch64"], "3.12")


# --- what a lock may say ------------------------------------------------------------------------


def forge(data: dict[str, Any], path: Path) -> Path:
    """`data` written as a lock whose content_hash matches it, as someone editing on purpose
    would (tests/unit/test_lock_hostile.py explains why the hash never stops them)."""
    body = {k: v for k, v in data.items() if k not in ("content_hash", "torchship_version")}
    path.write_text(tomli_w.dumps({**data, "content_hash": content_hash(body)}), "utf-8")
    return path


def fleet_data() -> dict[str, Any]:
    return tomllib.loads((FLEET / "torchship.lock").read_text())


ARM = "environments.linux-aarch64-cu130"
MAC = "environments.macos-arm64-cpu"


def _set(data: dict[str, Any], path: str, value: object) -> None:
    *parents, last = path.replace("environments.", "environments\0").replace(".", "\0").split("\0")
    node = data
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        # a hand-edited platform: the aarch64 environment said to be x86_64's
        (f"{ARM}.platform", "x86_64-manylinux_2_28", "is not a platform of linux-aarch64"),
        (f"{ARM}.target", "linux-x86_64", "'aarch64-manylinux_2_28' is not a platform of linux-x"),
        (f"{ARM}.target", "linux-arm64", "is not a platform: one of"),  # an alias, not a name
        (f"{ARM}.target", None, "is missing (every environment of a schema 3 lock names it)"),
        (f"{MAC}.platform", "x86_64-apple-darwin", "is not a platform of macos-arm64"),
        (f"{MAC}.platform", "aarch64-apple-darwin --pre", "is not a platform such as"),
        (f"{MAC}.macos_min", None, "is missing (a macOS environment has one)"),
        (f"{MAC}.macos_min", "14.0; id", "is not a dotted version"),
        (f"{MAC}.base_image", "python:3.11-slim", "macos-arm64 has no container images"),
        (f"{ARM}.macos_min", "14.0", "is set (only a macOS environment has one)"),
        (f"{ARM}.arch_list", ["sm_90; id"], "is not an arch token"),
        (f"{ARM}.min_driver", "580 $(id)", "is not an NVIDIA driver version"),
        ("environment.target", "macos-arm64", "is not a platform of macos-arm64"),
        ("environment.target", None, "is missing"),
        ("environment.macos_min", "14.0", "is set (only a macOS environment has one)"),
    ],
)
def test_every_environment_says_one_platform(
    tmp_path: Path, field: str, value: object, words: str
) -> None:
    data = fleet_data()
    _set(data, field, value)
    with pytest.raises(LockFileError) as e:
        read_lock(forge(data, tmp_path / "torchship.lock"))
    assert words in e.value.message, e.value.message
    assert "\n" not in e.value.message and e.value.exit_code == 2


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        # two environments of one name: the primary's
        ("linux-aarch64-cu130", "cu130", "has the primary environment's name"),
        ("linux-aarch64-cu130", "linux-aarch64-cu128", "is named for build cu128"),
        ("macos-arm64-cpu", "cpu", "is named without its platform, but its target macos-arm64"),
        ("macos-arm64-cpu", "linux-x86_64-cpu", "is named for linux-x86_64, but its target is m"),
        ("macos-arm64-cpu", "macos-arm64-cpu\nRUN id", "is not a build name"),
        ("macos-arm64-cpu", "darwin-cpu", "is not a build name"),
    ],
)
def test_environment_names_are_unique_and_say_their_platform(
    tmp_path: Path, old: str, new: str, words: str
) -> None:
    data = fleet_data()
    data["environments"][new] = data["environments"].pop(old)
    with pytest.raises(LockFileError) as e:
        read_lock(forge(data, tmp_path / "torchship.lock"))
    assert words in e.value.message, e.value.message


def test_an_environment_moved_whole_to_another_platform_still_has_its_name(
    tmp_path: Path,
) -> None:
    """Target and platform edited together, consistently: the name still says aarch64."""
    data = fleet_data()
    arm = data["environments"]["linux-aarch64-cu130"]
    arm |= {"target": "linux-x86_64", "platform": "x86_64-manylinux_2_28"}
    with pytest.raises(
        LockFileError, match="is named for linux-aarch64, but its target is linux-x"
    ):
        read_lock(forge(data, tmp_path / "torchship.lock"))
    data["environments"]["linux-x86_64-cu130"] = data["environments"].pop("linux-aarch64-cu130")
    with pytest.raises(LockFileError, match="names its platform, which is the primary's"):
        read_lock(forge(data, tmp_path / "torchship.lock"))


def test_a_schema_2_lock_holds_no_platform_fields(tmp_path: Path) -> None:
    data = tomllib.loads((REPO / "examples/quickstart/torchship.lock").read_text())
    data["environments"]["cpu"]["target"] = "linux-x86_64"
    with pytest.raises(LockFileError, match=r"environments\.cpu\.target: unknown field"):
        read_lock(forge(data, tmp_path / "torchship.lock"))
    # its cpu environment edited to aarch64's platform: refused where it is read
    data = tomllib.loads((REPO / "examples/quickstart/torchship.lock").read_text())
    data["environments"]["cpu"]["platform"] = "aarch64-manylinux_2_28"
    with pytest.raises(LockFileError) as e:
        read_lock(forge(data, tmp_path / "torchship.lock"))
    assert "environments.cpu.platform: 'aarch64-manylinux_2_28' is not a platform of " in str(
        e.value
    )
    data = tomllib.loads((REPO / "examples/quickstart/torchship.lock").read_text())
    data["environments"]["linux-aarch64-cpu"] = data["environments"].pop("cpu")
    with pytest.raises(LockFileError, match="is not a build name"):
        read_lock(forge(data, tmp_path / "torchship.lock"))


def test_a_fleet_lock_in_memory_is_held_to_the_same_rules() -> None:
    lock = read_lock(FLEET / "torchship.lock")
    arm = lock.environment("linux-aarch64-cu130")
    assert arm is not None
    moved = dataclasses.replace(arm, platform="x86_64-manylinux_2_28")
    bad = dataclasses.replace(lock, environments=(moved, *lock.environments[1:]))
    from torchship.image import RenderOptions, render

    with pytest.raises(LockFileError, match="is not a platform of linux-aarch64"):
        render(bad, RenderOptions(env="linux-aarch64-cu130"))
