"""Probing this host. All of the doctor's I/O lives here; every fact records where it came from.

`probe()` gathers every layer into Facts; nothing fails when a layer is missing (no driver, no
torch, no /proc). Sources, in order (the first that answers wins, and is named in the result):
  driver: /sys/module/nvidia/version -> /proc/driver/nvidia/version -> NVML -> nvidia-smi
  GPUs:   NVML -> nvidia-smi --query-gpu=... -> /proc/driver/nvidia/gpus/*/information
  torch:  package metadata and torch/version.py (fast); `import torch` only for runtime facts
          (CUDA available, devices, cuDNN/NCCL as loaded, TF32 flags, mapped libraries), which
          happens where an NVIDIA driver is present, or when asked (`runtime=True`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchship._host import hostname, kernel_and_arch

if TYPE_CHECKING:
    from torchship.doctor.facts import Facts

CommandRunner = Callable[[Sequence[str]], str | None]
"""Runs a command and returns its stdout, or None when it is missing or fails."""

_PROC_DRIVER_RE = re.compile(r"Kernel Module(?: for [\w-]+)?\s+(\d+\.\d+(?:\.\d+)?)")
_VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?$")


@dataclass(frozen=True, slots=True)
class Fact:
    value: str
    source: str


@dataclass(frozen=True, slots=True)
class ProbedGPU:
    name: str
    cc: str | None  # "9.0"; None when the source does not say
    source: str


def run_command(argv: Sequence[str]) -> str | None:
    import shutil  # with bz2 and lzma: only where a command is run (nvidia-smi, a GPU host)

    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text("utf-8", errors="replace")
    except OSError:
        return None


def _nvml_driver() -> str | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError and friends: no driver, no device, no permission
        return None


def _nvml_gpus() -> list[ProbedGPU] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            out = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                out.append(ProbedGPU(name, f"{major}.{minor}", "nvml"))
            return out
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


SMI_FIELDS = (
    "index",
    "name",
    "uuid",
    "compute_cap",
    "memory.total",
    "mig.mode.current",
    "ecc.mode.current",
    "driver_version",
)


def smi_rows(run: CommandRunner = run_command) -> list[dict[str, str]]:
    """nvidia-smi's per-GPU facts, from the one query the probe makes; [] without it."""
    out = run(
        ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    )
    rows = []
    for line in (out or "").strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == len(SMI_FIELDS):
            rows.append(dict(zip(SMI_FIELDS, parts, strict=True)))
    return rows


def once(run: CommandRunner) -> CommandRunner:
    """`run`, remembering each command's answer: the probe asks nvidia-smi one question once."""
    answers: dict[tuple[str, ...], str | None] = {}

    def cached(argv: Sequence[str]) -> str | None:
        key = tuple(argv)
        if key not in answers:
            answers[key] = run(argv)
        return answers[key]

    return cached


def _cuda_driver_version() -> str | None:
    """The newest CUDA the driver supports, from libcuda's cuDriverGetVersion (no process, no
    CUDA context); None without a driver."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def driver_version(
    root: Path = Path("/"),
    run: CommandRunner = run_command,
    nvml: Callable[[], str | None] = _nvml_driver,
) -> Fact | None:
    """The loaded NVIDIA kernel driver's version, or None when there is no driver."""
    text = _read(root / "sys/module/nvidia/version")
    if text and _VERSION_RE.match(text.strip()):
        return Fact(text.strip(), "/sys/module/nvidia/version")
    text = _read(root / "proc/driver/nvidia/version")
    if text and (m := _PROC_DRIVER_RE.search(text)):
        return Fact(m.group(1), "/proc/driver/nvidia/version")
    v = nvml()
    if v and _VERSION_RE.match(v.strip()):
        return Fact(v.strip(), "nvml")
    rows = smi_rows(run)
    if rows and _VERSION_RE.match(rows[0]["driver_version"]):
        return Fact(rows[0]["driver_version"], "nvidia-smi")
    return None


def gpus(
    root: Path = Path("/"),
    run: CommandRunner = run_command,
    nvml: Callable[[], list[ProbedGPU] | None] = _nvml_gpus,
) -> list[ProbedGPU]:
    """The GPUs this host shows, with compute capability where the source tells it."""
    found = nvml()
    if found:
        return found
    rows = smi_rows(run)
    if rows:
        return [
            ProbedGPU(
                r["name"],
                r["compute_cap"] if re.match(r"^\d+\.\d$", r["compute_cap"]) else None,
                "nvidia-smi",
            )
            for r in rows
        ]
    return driver_file_gpus(root)


def driver_file_gpus(root: Path = Path("/")) -> list[ProbedGPU]:
    """The GPUs the driver's files name (/proc/driver/nvidia/gpus/*/information, in PCI
    order as nvidia-smi numbers them): their models, without compute capability."""
    result = []
    for info in sorted((root / "proc/driver/nvidia/gpus").glob("*/information")):
        text = _read(info) or ""
        m = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        if m:
            result.append(ProbedGPU(m.group(1).strip(), None, str(info.relative_to(root))))
    return result


# --- the whole machine ----------------------------------------------------------------------

_ENV_PREFIXES = (
    "CUDA_",
    "NCCL_",
    "NVIDIA_",
    "TORCH_",
    "PYTORCH_",
    "CUDNN_",
    "CUBLAS_",
    "OMP_",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "MASTER_",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "KUBERNETES_SERVICE_HOST",
    "container",
    "HF_",
    "TRANSFORMERS_",
)
_SECRET = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH)", re.IGNORECASE)
_LIB_RE = re.compile(
    r"lib(cuda|cudart|cudnn[a-z_]*|nccl|cublas|cublasLt|nvrtc|cusparse|cufft)\.so[.\d]*$"
)
_NVCC_RE = re.compile(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)")


def relevant_env(environ: dict[str, str]) -> dict[str, str]:
    """Variables that change how CUDA, NCCL or torch behave; secrets are redacted."""
    out = {}
    for k, v in sorted(environ.items()):
        if k.startswith(_ENV_PREFIXES):
            out[k] = "<redacted>" if _SECRET.search(k) else v
    return out


def _os_release(root: Path) -> str | None:
    text = _read(root / "etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text, re.MULTILINE)
    return m.group(1) if m else None


def container_kind(root: Path, environ: dict[str, str]) -> str | None:
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if (root / "run/.containerenv").exists() or environ.get("container") == "podman":
        return "podman"
    if (root / ".dockerenv").exists():
        return "docker"
    cgroup = _read(root / "proc/1/cgroup") or ""
    for kind in ("docker", "kubepods", "containerd", "lxc"):
        if kind in cgroup:
            return "kubernetes" if kind == "kubepods" else kind
    return environ.get("container") or None


def _cgroup_limits(root: Path) -> tuple[int | None, float | None]:
    mem_text = (_read(root / "sys/fs/cgroup/memory.max") or "").strip()
    mem = int(mem_text) if mem_text.isdigit() else None
    cpu_text = (_read(root / "sys/fs/cgroup/cpu.max") or "").split()
    cpus = None
    if len(cpu_text) == 2 and cpu_text[0].isdigit() and cpu_text[1].isdigit():
        cpus = int(cpu_text[0]) / int(cpu_text[1])
    return mem, cpus


def _shm_bytes(root: Path) -> int | None:
    try:
        st = os.statvfs(root / "dev/shm")
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def _ulimits() -> dict[str, str]:
    import resource

    out = {}
    for name in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_MEMLOCK", "RLIMIT_STACK"):
        soft, _ = resource.getrlimit(getattr(resource, name))
        out[name.removeprefix("RLIMIT_").lower()] = (
            "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        )
    return out


def packages() -> dict[str, str]:
    """Installed distributions via importlib.metadata (so uv virtualenvs work too)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.name
        if name:
            out[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    return dict(sorted(out.items()))


def _torch_files() -> tuple[str | None, str | None]:
    """(__version__, cuda) from torch/version.py, read as text: no import."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None, None
    if spec is None or not spec.submodule_search_locations:
        return None, None
    return torch_version_file(Path(next(iter(spec.submodule_search_locations))))


def torch_version_file(package: Path) -> tuple[str | None, str | None]:
    """(__version__, cuda) from `package`/version.py of an installed torch, read as text."""
    text = _read(package / "version.py") or ""
    version = re.search(r"""^__version__\s*=\s*['"]([^'"]+)""", text, re.MULTILINE)
    cuda = re.search(
        r"""^cuda(?:\s*:\s*[^=]+)?\s*=\s*(?:['"]([^'"]+)['"]|None)""", text, re.MULTILINE
    )
    return (version.group(1) if version else None), (
        cuda.group(1) if cuda and cuda.group(1) else None
    )


@dataclass(frozen=True, slots=True)
class TorchRuntime:
    cuda_available: bool
    device_count: int
    arch: tuple[str, ...]
    cudnn: str | None
    nccl: str | None
    backends: tuple[str, ...]
    tf32_matmul: bool
    tf32_cudnn: bool
    devices: tuple[tuple[str, str], ...]  # (name, "major.minor") as torch sees them


def torch_runtime() -> TorchRuntime | str:
    """Import torch and ask it; the import error's text when it cannot be imported."""
    try:
        import torch as torch_module
    except Exception as e:  # ImportError, OSError from a missing libcudart: the doctor reports it
        return f"{type(e).__name__}: {e}"
    torch: Any = torch_module  # torch's own annotations are partial; keep strict mode quiet
    cuda_ok = bool(torch.cuda.is_available())
    count = torch.cuda.device_count() if cuda_ok else 0
    arch = tuple(torch.cuda.get_arch_list()) if torch.version.cuda else ()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    nccl = None
    if torch.version.cuda:
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(str(p) for p in v) if isinstance(v, tuple) else str(v)
        except Exception:
            nccl = None
    dist = torch.distributed
    backends = (
        tuple(
            b
            for b, ok in (
                ("gloo", dist.is_gloo_available()),
                ("nccl", dist.is_nccl_available()),
                ("mpi", dist.is_mpi_available()),
            )
            if ok
        )
        if dist.is_available()
        else ()
    )
    devices = tuple(
        (torch.cuda.get_device_name(i), "{}.{}".format(*torch.cuda.get_device_capability(i)))
        for i in range(count)
    )
    return TorchRuntime(
        cuda_available=cuda_ok,
        device_count=count,
        arch=arch,
        cudnn=_cudnn_str(cudnn),
        nccl=nccl,
        backends=backends,
        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
        tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
        devices=devices,
    )


def _cudnn_str(v: int | None) -> str | None:
    """torch reports cuDNN 9.10.2 as 91002 (>= 9) or 8.9.2 as 8902."""
    if v is None:
        return None
    if v >= 90000:
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"
    return f"{v // 1000}.{v % 1000 // 100}.{v % 100}"


def mapped_libraries(maps_text: str) -> tuple[str, ...]:
    libs = {
        line.split()[-1]
        for line in maps_text.splitlines()
        if line.strip() and _LIB_RE.search(line.split()[-1])
    }
    return tuple(sorted(libs))


def library_path_libraries(environ: dict[str, str]) -> tuple[str, ...]:
    found = []
    for folder in environ.get("LD_LIBRARY_PATH", "").split(":"):
        if not folder:
            continue
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        found += [str(Path(folder) / n) for n in names if _LIB_RE.search(n)]
    return tuple(found)


def host_nvcc(run: CommandRunner = run_command) -> str | None:
    out = run(["nvcc", "--version"]) or ""
    m = _NVCC_RE.search(out)
    return m.group(2) if m else None


def _num(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


@dataclass(frozen=True, slots=True)
class _GPULayer:
    driver: Fact | None
    driver_cuda: str | None
    gpus: tuple[Any, ...]  # GPUFact
    source: str | None


def _gpu_layer(
    root: Path, run: CommandRunner, cuda_driver: Callable[[], str | None], details: bool = True
) -> _GPULayer:
    """Driver and GPUs: files first, then NVML, then one nvidia-smi query. Without `details`
    (uuid, memory, MIG, ECC, the CUDA the driver supports) the GPUs the driver's files name
    are taken as they are: NVML and nvidia-smi initialise every GPU, which takes seconds on a
    multi-GPU host without persistence mode (Azure/aks-gpu#105: 30 s against 2 s)."""
    from torchship.doctor.facts import GPUFact

    drv = driver_version(root, run)
    if drv is None:
        return _GPULayer(None, None, (), None)
    named = [] if details else driver_file_gpus(root)
    if named:
        by_files = tuple(GPUFact(index=i, name=g.name) for i, g in enumerate(named))
        return _GPULayer(drv, None, by_files, named[0].source)
    details_by = {d["index"]: d for d in smi_rows(run)}
    found = gpus(root, run)
    out = []
    for i, g in enumerate(found):
        d = details_by.get(str(i), {})
        out.append(
            GPUFact(
                index=i,
                name=g.name,
                uuid=d.get("uuid"),
                cc=g.cc or d.get("compute_cap"),
                memory_mib=_num(d.get("memory.total")),
                mig_mode=d.get("mig.mode.current"),
                ecc=d.get("ecc.mode.current"),
            )
        )
    return _GPULayer(drv, cuda_driver(), tuple(out), found[0].source if found else None)


@dataclass(frozen=True, slots=True)
class _PythonLayer:
    packages: dict[str, str]
    torch: str | None
    build_cuda: str | None
    runtime: TorchRuntime | None
    import_error: str | None
    nvcc: str | None


def _python_layer(python: bool, use_runtime: bool, run: CommandRunner) -> _PythonLayer:
    """This interpreter's packages and torch (imported only for runtime facts)."""
    if not python:
        return _PythonLayer({}, None, None, None, None, None)
    version, build_cuda = _torch_files()
    answer = torch_runtime() if (use_runtime and version) else None
    return _PythonLayer(
        packages(),
        version,
        build_cuda,
        answer if isinstance(answer, TorchRuntime) else None,
        answer[:500] if isinstance(answer, str) else None,
        host_nvcc(run),
    )


def _library_sources(py: _PythonLayer) -> tuple[str | None, str | None, dict[str, str]]:
    """(torch's cuDNN, NCCL, where each came from): as loaded, else from the wheels."""
    rt, pkgs = py.runtime, py.packages
    cudnn = rt.cudnn if rt else _pkg_version(pkgs, "nvidia-cudnn-cu")
    nccl = rt.nccl if rt else _pkg_version(pkgs, "nvidia-nccl-cu")
    sources = {}
    if cudnn:
        sources["torch_cudnn"] = (
            "torch.backends.cudnn.version()" if rt else "package metadata (nvidia-cudnn-*)"
        )
    if nccl:
        sources["torch_nccl"] = (
            "torch.cuda.nccl.version()" if rt else "package metadata (nvidia-nccl-*)"
        )
    if rt:
        sources["torch_arch"] = "torch.cuda.get_arch_list()"
        sources["cuda_available"] = "torch.cuda.is_available()"
    if not (py.build_cuda or rt):
        cudnn = nccl = None
    return cudnn, nccl, sources


def probe(
    runtime: bool | None = None,
    root: Path = Path("/"),
    run: CommandRunner = run_command,
    environ: dict[str, str] | None = None,
    python: bool = True,
    cuda_driver: Callable[[], str | None] | None = None,
    gpu_details: bool = True,
) -> Facts:
    """Everything the doctor checks, from this machine. runtime=None: import torch only where
    an NVIDIA driver is present; True: always; False: never (files and metadata only).
    python=False leaves out this interpreter's packages and torch, and the host's nvcc (a run
    reads the Python side from the environment it syncs instead): the host alone, without
    reading every package's metadata or starting nvcc (a third of a second). nvidia-smi runs at
    most once. gpu_details=False: the GPUs by the driver's files alone where they name them
    (models, no compute capability or details; see _gpu_layer), for picking an environment."""
    from torchship.doctor.facts import Facts

    env = dict(os.environ if environ is None else environ)
    run = once(run)
    if cuda_driver is None:
        cuda_driver = _cuda_driver_version if root == Path("/") else (lambda: None)
    hw = _gpu_layer(root, run, cuda_driver, gpu_details)
    use_runtime = (hw.driver is not None) if runtime is None else runtime
    py = _python_layer(python, use_runtime, run)
    rt = py.runtime
    cudnn, nccl, sources = _library_sources(py)
    if hw.driver:
        sources["driver"] = hw.driver.source
    if hw.source:
        sources["gpus"] = hw.source
    if py.torch:
        sources["torch"] = "torch/version.py"
    if py.import_error:
        sources["torch_import_error"] = py.import_error
    if py.nvcc:
        sources["host_nvcc"] = "nvcc --version (the host toolkit; torch does not use it)"
    mem, cpus = _cgroup_limits(root)
    maps = _read(Path("/proc/self/maps")) if rt and root == Path("/") else None
    kernel, arch = kernel_and_arch()
    return Facts(
        origin="probe" if rt else "probe-fast",
        hostname=hostname(),
        os=_os_release(root),
        kernel=kernel,
        arch=arch,
        glibc=_glibc(),
        container=container_kind(root, env),
        cgroup_memory_bytes=mem,
        cgroup_cpus=cpus,
        driver=hw.driver.value if hw.driver else None,
        driver_cuda=hw.driver_cuda,
        gpus=hw.gpus,
        device_nodes=tuple(sorted(str(p) for p in (root / "dev").glob("nvidia*"))),
        env=relevant_env(env),
        python=sys.version.split()[0],  # as platform.python_version() says it
        packages=py.packages,
        torch=py.torch,
        torch_cuda=py.build_cuda,
        torch_build=("cuda" if py.build_cuda else "cpu") if py.torch else None,
        torch_arch=rt.arch if rt else None,
        torch_cudnn=cudnn,
        torch_nccl=nccl,
        cuda_available=rt.cuda_available if rt else (False if py.torch and not hw.driver else None),
        torch_device_count=rt.device_count if rt else None,
        distributed_backends=rt.backends if rt else None,
        tf32_matmul=rt.tf32_matmul if rt else None,
        tf32_cudnn=rt.tf32_cudnn if rt else None,
        loaded_libs=mapped_libraries(maps) if maps else (),
        library_path_libs=library_path_libraries(env),
        shm_bytes=_shm_bytes(root),
        ulimits=_ulimits(),
        host_nvcc=py.nvcc,
        sources=sources,
    )


def _pkg_version(pkgs: dict[str, str], prefix: str) -> str | None:
    for name, version in pkgs.items():
        if name.startswith(prefix):
            return version
    return None


def _glibc() -> str | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    return text.split()[-1] if text.startswith("glibc") else None
