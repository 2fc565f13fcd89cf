"""The platforms a lock runs on, their names, and which GPUs can live on which.

A platform is an OS and a CPU architecture, named as the wheels' tags tell them apart:
`linux-x86_64`, `linux-aarch64` (Grace GH200/GB200/GB300, DGX Spark GB10, Jetson, Graviton and
other Arm servers), `windows-x86_64`, `macos-arm64` (CPU and MPS builds) and `macos-x86_64`
(wheels up to torch 2.2.2). Names people write elsewhere (pixi's `linux-64`, `osx-arm64`,
`win-64`; Docker's `linux/arm64`; wheel tags `win_amd64`) are accepted as aliases.

GPUs and platforms (tools/research/platforms.md §8): Grace superchips and Jetson boards live only
on linux-aarch64, and the matrix says so per GPU; every other NVIDIA GPU lives on Linux
(x86_64, and aarch64 in Arm servers) or Windows, usually x86_64, and never on a Mac.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the spec reads platform names without loading the matrix
    from torchship.compat.matrix import GPU

LINUX_X86_64 = "linux-x86_64"
LINUX_AARCH64 = "linux-aarch64"
WINDOWS_X86_64 = "windows-x86_64"
MACOS_ARM64 = "macos-arm64"
MACOS_X86_64 = "macos-x86_64"
PLATFORMS = (LINUX_X86_64, LINUX_AARCH64, WINDOWS_X86_64, MACOS_ARM64, MACOS_X86_64)
DEFAULT = LINUX_X86_64

_ALIASES = {
    "linux-64": LINUX_X86_64,
    "linux-amd64": LINUX_X86_64,
    "linux/amd64": LINUX_X86_64,
    "linux/x86_64": LINUX_X86_64,
    "manylinux_x86_64": LINUX_X86_64,
    "linux-arm64": LINUX_AARCH64,
    "linux/arm64": LINUX_AARCH64,
    "linux/aarch64": LINUX_AARCH64,
    "manylinux_aarch64": LINUX_AARCH64,
    "win-64": WINDOWS_X86_64,
    "win_amd64": WINDOWS_X86_64,
    "win-amd64": WINDOWS_X86_64,
    "windows": WINDOWS_X86_64,
    "windows-amd64": WINDOWS_X86_64,
    "osx-arm64": MACOS_ARM64,
    "macos-aarch64": MACOS_ARM64,
    "darwin-arm64": MACOS_ARM64,
    "osx-64": MACOS_X86_64,
    "darwin-x86_64": MACOS_X86_64,
}


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """A platform torch publishes wheels for: its OS and machine, whether an NVIDIA GPU can be
    there, and how uv names it."""

    name: str
    os: str  # linux | windows | macos
    machine: str  # x86_64 | aarch64 | arm64
    nvidia: bool  # an NVIDIA GPU can be here

    def uv_target(self, glibc: tuple[int, ...] = (2, 28)) -> str:
        """uv's `--python-platform` for this platform: the manylinux floor on Linux."""
        if self.os == "linux":
            minor = min(max(glibc[1] if len(glibc) > 1 else 17, 17), 40)  # uv takes 2_17..2_40
            return f"{self.machine}-manylinux_2_{minor}"
        if self.os == "windows":
            return "x86_64-pc-windows-msvc"
        return "aarch64-apple-darwin" if self.machine == "arm64" else "x86_64-apple-darwin"


INFO = {
    LINUX_X86_64: PlatformInfo(LINUX_X86_64, "linux", "x86_64", True),
    LINUX_AARCH64: PlatformInfo(LINUX_AARCH64, "linux", "aarch64", True),
    WINDOWS_X86_64: PlatformInfo(WINDOWS_X86_64, "windows", "x86_64", True),
    MACOS_ARM64: PlatformInfo(MACOS_ARM64, "macos", "arm64", False),
    MACOS_X86_64: PlatformInfo(MACOS_X86_64, "macos", "x86_64", False),
}


def parse_platform(text: str) -> str:
    """A platform name from what people write; ValueError naming the closest valid one."""
    key = text.strip().lower()
    if key in INFO:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    if key in ("arm64", "aarch64"):
        raise ValueError(f"{text!r} is ambiguous: say linux-aarch64 or macos-arm64")
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, [*PLATFORMS, *_ALIASES], n=1, cutoff=0.5)
    hint = f"; did you mean {_ALIASES.get(close[0], close[0])!r}?" if close else ""
    raise ValueError(f"unknown platform {text!r} (one of {', '.join(PLATFORMS)}){hint}")


def _nvidia(platforms: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for p in platforms if INFO[p].nvidia)


def possible(gpu: GPU | None) -> tuple[str, ...]:
    """Every platform this GPU can be installed in (None: a bare architecture)."""
    if gpu is not None and gpu.platforms:
        return gpu.platforms
    if gpu is not None and gpu.segment == "jetson":
        return (LINUX_AARCH64,)
    return (LINUX_X86_64, LINUX_AARCH64, WINDOWS_X86_64)


def home(gpu: GPU | None) -> tuple[str, ...]:
    """Where this GPU usually is: checked there when the fleet has that platform."""
    if gpu is None:
        return ()
    if gpu.platforms or gpu.segment == "jetson":
        return possible(gpu)
    if gpu.segment == "consumer":
        return (LINUX_X86_64, WINDOWS_X86_64)
    return (LINUX_X86_64,)


def implied(gpus: tuple[GPU | None, ...]) -> tuple[str, ...]:
    """The platforms a GPU list implies when none are named: linux-aarch64 for the GPUs that
    live only there, linux-x86_64 for every other (and for no GPU at all)."""
    out: list[str] = []
    for g in gpus:
        p = LINUX_AARCH64 if possible(g) == (LINUX_AARCH64,) else LINUX_X86_64
        if p not in out:
            out.append(p)
    return tuple(out) or (DEFAULT,)


def checked_on(gpu: GPU | None, platform: str, fleet: tuple[str, ...]) -> bool:
    """Whether a GPU target is checked on `platform` of the fleet: on its usual platforms when
    the fleet has one of them, else on every platform of the fleet it can be on."""
    if platform not in possible(gpu):
        return False
    usual = [p for p in home(gpu) if p in fleet]
    return platform in usual if usual else True


def contradiction(gpu: GPU | None, label: str, fleet: tuple[str, ...]) -> str | None:
    """Why this GPU cannot be on any platform of the fleet, or None."""
    if any(p in possible(gpu) for p in fleet):
        return None
    if not _nvidia(fleet):
        return f"{label} is an NVIDIA GPU; {' and '.join(fleet)} has no NVIDIA GPUs"
    where = " or ".join(possible(gpu))
    return f"{label} is only on {where}, which the platforms ({', '.join(fleet)}) leave out"
