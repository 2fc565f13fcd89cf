"""The doctor's checks: small, one concern each, run in layer order over Facts.

hardware -> driver -> CUDA runtime -> cuDNN/NCCL -> torch -> packages -> lock. Each check takes
the Context (facts, matrix, optional lock and error log) and returns Findings with a stable
code (documented in docs/doctor.md; never renamed), a severity and a fix. Pure: no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from torchship.compat.archs import Arch, kernel_match, parse_arch
from torchship.compat.gpus import GPUTarget, lookup_gpu
from torchship.compat.matrix import Matrix
from torchship.compat.request import Request
from torchship.compat.resolve import resolve
from torchship.doctor.facts import Facts, GPUFact
from torchship.errors import UnknownGPUError
from torchship.lock.model import Lock, LockEnvironment
from torchship.versions import driver_str, parse_version

ERROR, WARNING, INFO = "error", "warning", "info"
SHM_DOCKER_DEFAULT = 64 * 2**20  # docker's default /dev/shm (moby daemon default shm size)
SHM_ADVISED = 1 * 2**30  # DataLoader workers pass batches through /dev/shm
# Wheels a CUDA build of torch depends on that a CPU build does not (torch's METADATA
# Requires-Dist for the cu* variants: nvidia-*, cuda-* since cu13, triton).
CUDA_RUNTIME_WHEELS = ("nvidia-", "cuda-", "triton")


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: str
    message: str
    fix: str
    layer: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "layer": self.layer,
        }


@dataclass(frozen=True, slots=True)
class Context:
    facts: Facts
    matrix: Matrix
    lock: Lock | None = None
    error_log: str = ""
    cpu_job: bool = False  # checking for a job that uses no GPU (a run's preflight)

    def log(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.error_log, re.IGNORECASE | re.MULTILINE)


# --- helpers ----------------------------------------------------------------------------------


def _target(m: Matrix, g: GPUFact) -> GPUTarget | None:
    try:
        t = lookup_gpu(m, g.name)
    except UnknownGPUError:
        t = None
    if g.cc:
        try:
            return lookup_gpu(m, g.cc) if t is None else GPUTarget(t.label, t.cc, t.gpu)
        except UnknownGPUError:
            return t
    return t


def targets(ctx: Context) -> list[tuple[GPUFact, GPUTarget]]:
    return [(g, t) for g in ctx.facts.gpus if (t := _target(ctx.matrix, g)) is not None]


def torch_variant(f: Facts) -> str | None:
    """`cu128`, `cpu`, or None when unknown."""
    if f.torch and "+" in f.torch:
        return f.torch.split("+", 1)[1]
    if f.torch:
        return "cpu" if f.torch_cuda is None else "cu" + f.torch_cuda.replace(".", "")
    return None


def torch_archs(ctx: Context) -> tuple[tuple[Arch, ...] | None, str]:
    """(arch list, where from): measured facts, else the matrix's list for this build."""
    f = ctx.facts
    if f.torch_arch is not None and (f.torch_arch or not f.is_cuda_build):
        source = f.sources.get("torch_arch", "torch")
        return tuple(
            parse_arch(a) for a in f.torch_arch if a.startswith(("sm_", "compute_"))
        ), source
    if not f.torch:
        return None, ""
    rel = ctx.matrix.release(f.torch.split("+", 1)[0])
    v = rel.variant(torch_variant(f) or "") if rel else None
    if v is None or v.archs is None:
        return None, ""
    return v.archs, f"inferred from the matrix for {f.torch}"


def _arch_span(archs: tuple[Arch, ...]) -> str:
    sass = [a.token for a in archs if not a.ptx]
    return f"{sass[0]}…{sass[-1]}" if len(sass) > 1 else (sass[0] if sass else "no GPU code")


def _driver(f: Facts) -> tuple[int, ...] | None:
    try:
        return parse_version(f.driver) if f.driver else None
    except ValueError:
        return None


def _env(f: Facts, key: str) -> str | None:
    return f.env.get(key)


def fitting_build(ctx: Context, gpus: tuple[GPUTarget, ...]) -> str | None:
    """The build the resolver picks for these GPUs and this driver, at or after this torch."""
    f = ctx.facts
    base = (f.torch or "").split("+", 1)[0]
    try:
        spec = SpecifierSet(f">={base}") if base else SpecifierSet()
    except InvalidSpecifier:
        spec = SpecifierSet()
    req = Request(torch=spec, torch_text=base, gpus=gpus, driver=_driver(f))
    res = resolve(req, ctx.matrix)
    if res.chosen is not None:
        return res.chosen.local_version
    if res.suggestions and res.suggestions[-1].endswith("fits every target"):
        return res.suggestions[-1].split()[0]
    return None


# --- hardware ---------------------------------------------------------------------------------


def no_gpu_visible(ctx: Context) -> list[Finding]:
    f = ctx.facts
    out = []
    cvd = _env(f, "CUDA_VISIBLE_DEVICES")
    if (
        cvd is not None
        and cvd.strip() in ("", "-1", "none", "NoDevFiles")
        and (f.gpus or f.is_cuda_build)
    ):
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU",
                "unset CUDA_VISIBLE_DEVICES or list the GPUs to use (e.g. 0,1)",
            )
        )
    nvd = _env(f, "NVIDIA_VISIBLE_DEVICES")
    if f.container and nvd is not None and nvd.strip() in ("", "void", "none"):
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"NVIDIA_VISIBLE_DEVICES={nvd!r}: the container "
                "runtime gives this container no GPU",
                "run with --gpus all (docker), a CDI device (podman) or an nvidia.com/gpu limit",
            )
        )
    caps = _env(f, "NVIDIA_DRIVER_CAPABILITIES")
    if caps is not None and not {"compute", "all"} & {c.strip() for c in caps.split(",")}:
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"NVIDIA_DRIVER_CAPABILITIES={caps!r} lacks "
                "'compute': CUDA cannot be used in this container",
                "set NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            )
        )
    if (
        f.container
        and f.origin.startswith("probe")
        and not f.device_nodes
        and not f.driver
        and (f.is_cuda_build or (ctx.lock and ctx.lock.gpus))
    ):
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"this {f.container} container has no NVIDIA "
                "device nodes (/dev/nvidia*) and no driver",
                "start it with GPU access: --gpus all, --device nvidia.com/gpu=all (CDI), "
                "or an nvidia.com/gpu resource limit",
            )
        )
    if f.driver and not f.gpus and f.origin.startswith("probe"):
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"driver {f.driver} is loaded but shows no GPU",
                "check `nvidia-smi`; the GPU may have fallen off the bus (dmesg | grep -i xid)",
            )
        )
    if f.is_cuda_build and f.gpus and f.cuda_available is False and not _too_old(ctx) and not out:
        out.append(
            Finding(
                "no-gpu-visible",
                ERROR,
                f"torch {f.torch} cannot use the "
                f"{len(f.gpus)} GPU(s) here (torch.cuda.is_available() is False)",
                "run `torchship doctor --error-log` with the program's error output",
            )
        )
    if (
        not f.driver
        and not f.container
        and ctx.lock
        and ctx.lock.gpus
        and f.origin.startswith("probe")
    ):
        names = ", ".join(g.name for g in ctx.lock.gpus)
        out.append(
            Finding(
                "no-gpu-visible",
                WARNING,
                f"this machine has no NVIDIA driver; the lock targets {names}",
                "run on a target machine, or lock with cuda = 'cpu' for CPU",
            )
        )
    return out


def mig_device_visibility(ctx: Context) -> list[Finding]:
    f = ctx.facts
    mig = [g for g in f.gpus if (g.mig_mode or "").lower() == "enabled"]
    cvd = _env(f, "CUDA_VISIBLE_DEVICES") or ""
    if not mig or "MIG-" in cvd:
        return []
    names = ", ".join(f"GPU {g.index}" for g in mig)
    return [
        Finding(
            "mig-device-visibility",
            WARNING,
            f"MIG is enabled on {names}: a CUDA process sees at most one MIG instance, "
            "and none unless it is named",
            "set CUDA_VISIBLE_DEVICES to MIG UUIDs from `nvidia-smi -L` (MIG-...), one per process",
        )
    ]


# --- driver -----------------------------------------------------------------------------------


def _too_old(ctx: Context) -> tuple[str, tuple[int, ...]] | None:
    """(what needs it, floor) when the driver is below what torch's CUDA or the lock needs."""
    f, drv = ctx.facts, _driver(ctx.facts)
    if drv is None:
        return None
    if f.torch_cuda:
        floor = ctx.matrix.driver_floor(int(f.torch_cuda.split(".")[0]))
        if floor and drv < floor:
            return f"torch {f.torch} (CUDA {f.torch_cuda})", floor
    if ctx.lock and ctx.lock.min_driver:
        floor = parse_version(ctx.lock.min_driver)
        if drv < floor:
            return f"the lock ({ctx.lock.torch}, {ctx.lock.variant})", floor
    return None


def driver_too_old(ctx: Context) -> list[Finding]:
    f = ctx.facts
    hit = _too_old(ctx)
    logged = ctx.log(r"driver (on your system )?is too old|CUDA driver version is insufficient")
    if not hit and not logged:
        return []
    need = f"needs driver ≥ {driver_str(hit[1])}" if hit else "needs a newer driver"
    what = hit[0] if hit else f"torch {f.torch}"
    gpus = targets(ctx)
    if gpus and all(t.gpu and t.gpu.forward_compat for _, t in gpus):
        fix = (
            "upgrade the driver, or install the cuda-compat package (forward compatibility, "
            "data-center GPUs); or use a build for this driver: `torchship resolve --driver "
            + f"{f.driver} ...`"
        )
    else:
        build = fitting_build(ctx, tuple(t for _, t in gpus))
        fix = "upgrade the driver" + (
            f", or install torch {build}: the newest build that runs on driver {f.driver}"
            if build
            else ""
        )
    return [Finding("driver-too-old", ERROR, f"{what} {need}; this machine has {f.driver}", fix)]


def forward_compat_unsupported(ctx: Context) -> list[Finding]:
    f = ctx.facts
    compat = [
        p for p in (*f.loaded_libs, *f.library_path_libs) if "/compat/" in p and "libcuda.so" in p
    ]
    geforce = [t for _, t in targets(ctx) if t.is_geforce]
    if ctx.log(r"error 804|forward compatibility was attempted on non supported HW") or (
        compat and geforce
    ):
        where = compat[0] if compat else "the CUDA forward-compatibility libraries"
        return [
            Finding(
                "forward-compat-unsupported",
                ERROR,
                f"{where} are in use, but forward compatibility works only on data-center "
                "GPUs (CUDA error 804)",
                "remove the cuda-compat libraries from LD_LIBRARY_PATH (or use a base image "
                "whose CUDA the driver supports) and upgrade the driver instead",
            )
        ]
    return []


def fabric_manager_missing(ctx: Context) -> list[Finding]:
    f = ctx.facts
    sxm = [g for g in f.gpus if "SXM" in g.name.upper()]
    if ctx.log(r"error 802|system not yet initialized"):
        return [
            Finding(
                "fabric-manager-missing",
                ERROR,
                "CUDA reports 'system not yet initialized' "
                "(error 802): on NVSwitch systems the Fabric Manager must be running",
                "install nvidia-fabricmanager matching the driver and start it: "
                "systemctl enable --now nvidia-fabricmanager",
            )
        ]
    if len(sxm) >= 4 and f.cuda_available is False and not _too_old(ctx):
        return [
            Finding(
                "fabric-manager-missing",
                WARNING,
                f"{len(sxm)} SXM GPUs and CUDA is "
                "unavailable: NVSwitch systems need the Fabric Manager",
                "check `systemctl status nvidia-fabricmanager`",
            )
        ]
    return []


# --- CUDA runtime -----------------------------------------------------------------------------


def cpu_only_build(ctx: Context) -> list[Finding]:
    f = ctx.facts
    if not f.torch or f.is_cuda_build:
        return []
    nvcc = f" (the host's nvcc {f.host_nvcc} is not used by torch)" if f.host_nvcc else ""
    if f.gpus:
        return [
            Finding(
                "cpu-only-build",
                ERROR,
                f"torch {f.torch} is a CPU-only build; the "
                f"{len(f.gpus)} GPU(s) here are unused{nvcc}",
                "install the CUDA build `torchship resolve` chooses for this GPU",
            )
        ]
    return [
        Finding(
            "cpu-only-build",
            INFO,
            f"torch {f.torch} is a CPU-only build: it uses no CUDA{nvcc}",
            "nothing to do on a machine without GPUs",
        )
    ]


_MISSING_LIB = (
    r"(lib(?:cudart|cublas\w*|cudnn\w*|nvrtc\w*|cusparse\w*|cufft\w*|nccl|nvJitLink)\.so[.\d]*)"
    r": cannot open shared object file"
)


def cuda_library_missing(ctx: Context) -> list[Finding]:
    text = ctx.error_log + "\n" + ctx.facts.sources.get("torch_import_error", "")
    m = re.search(_MISSING_LIB, text)
    if not m:
        return []
    return [
        Finding(
            "cuda-library-missing",
            ERROR,
            f"{m.group(1)} cannot be loaded",
            "reinstall torch from its index so its nvidia-* wheels come with it, or install "
            "the matching CUDA libraries; do not point LD_LIBRARY_PATH at another CUDA",
        )
    ]


# --- cuDNN / NCCL -----------------------------------------------------------------------------

_FAMILY = re.compile(r"lib(cudnn|nccl|cublas|cudart)")


def library_path_shadowing(ctx: Context) -> list[Finding]:
    f = ctx.facts
    out = []
    wheels = {
        fam
        for fam in ("cudnn", "nccl", "cublas", "cudart")
        if any(
            p.startswith(f"nvidia-{fam}")
            or (fam == "cudart" and p.startswith("nvidia-cuda-runtime"))
            for p in f.packages
        )
    }
    for lib in f.library_path_libs:
        m = _FAMILY.search(lib.rsplit("/", 1)[-1])
        if m and m.group(1) in wheels and "site-packages" not in lib:
            loaded = any(
                lib.rsplit("/", 1)[-1] in x and "site-packages" not in x for x in f.loaded_libs
            )
            out.append(
                Finding(
                    "library-path-shadowing",
                    ERROR if loaded else WARNING,
                    f"LD_LIBRARY_PATH offers {lib}, which can shadow the {m.group(1)} torch's "
                    f"nvidia-* wheel provides" + (" (and it is the one loaded)" if loaded else ""),
                    "remove that folder from LD_LIBRARY_PATH for torch processes",
                )
            )
    return out


def nccl_library_conflict(ctx: Context) -> list[Finding]:
    f = ctx.facts
    sym = ctx.log(r"undefined symbol: (nccl\w+)")
    foreign = [p for p in f.loaded_libs if "libnccl" in p and "site-packages" not in p]
    if not sym and not (foreign and any(p.startswith("nvidia-nccl") for p in f.packages)):
        return []
    what = f"undefined symbol {sym.group(1)}" if sym else f"{foreign[0]} is loaded"
    return [
        Finding(
            "nccl-library-conflict",
            ERROR,
            f"{what}: a different libnccl than the one torch "
            f"was built against{' (' + f.torch_nccl + ')' if f.torch_nccl else ''} is in use",
            "remove other NCCL builds from LD_LIBRARY_PATH/LD_PRELOAD, or reinstall the "
            "nvidia-nccl wheel torch pins",
        )
    ]


def nccl_transport_failure(ctx: Context) -> list[Finding]:
    m = ctx.log(
        r"(NCCL error.*(unhandled system error|remote process exited|internal error))|"
        r"ncclSystemError|ncclRemoteError|NCCL WARN (NET|Socket|Call to ibv)"
    )
    if not m:
        return []
    shm = ctx.facts.shm_bytes
    hint = " and /dev/shm is small" if shm is not None and shm < SHM_ADVISED else ""
    return [
        Finding(
            "nccl-transport-failure",
            ERROR,
            f"NCCL could not move data between ranks ({m.group(0).strip()[:80]}){hint}",
            "rerun with NCCL_DEBUG=INFO; pin the interface (NCCL_SOCKET_IFNAME), give "
            "containers --ipc=host or a large /dev/shm, and check InfiniBand/firewalls",
        )
    ]


# --- torch ------------------------------------------------------------------------------------


def _missing_kernels(ctx: Context, archs: tuple[Arch, ...], source: str) -> list[Finding]:
    out = []
    for g, t in targets(ctx):
        if kernel_match(archs, t.cc) is not None:
            continue
        build = fitting_build(ctx, (t,))
        fix = (
            f"install torch {build}: the newest build with kernels for {t.sm} that this driver runs"
            if build
            else f"no torch build covers {t.sm}; see `torchship resolve --gpu '{t.label}'`"
        )
        inferred = f" ({source})" if "inferred" in source else ""
        message = (
            f"torch {ctx.facts.torch} has no kernels for GPU {g.index} {t.display}: "
            f"built for {_arch_span(archs)}{inferred}"
        )
        out.append(Finding("gpu-arch-unsupported", ERROR, message, fix))
    return out


def gpu_arch_unsupported(ctx: Context) -> list[Finding]:
    archs, source = torch_archs(ctx)
    out = _missing_kernels(ctx, archs, source) if ctx.facts.is_cuda_build and archs else []
    if not out and ctx.log(r"no kernel image is available for execution on the device"):
        covered = (
            f" although torch's arch list ({_arch_span(archs)}) covers the GPUs" if archs else ""
        )
        out.append(
            Finding(
                "gpu-arch-unsupported",
                ERROR,
                "CUDA reports 'no kernel image is "
                f"available'{covered}: some CUDA code was not built for this GPU",
                "rebuild custom CUDA extensions with this GPU in TORCH_CUDA_ARCH_LIST, "
                "or install a torch build that covers it (`torchship resolve --gpu ...`)",
            )
        )
    return out


def cuda_visible_devices_late(ctx: Context) -> list[Finding]:
    f = ctx.facts
    cvd = _env(f, "CUDA_VISIBLE_DEVICES")
    if cvd is None or f.torch_device_count is None or not cvd.strip():
        return []
    wanted = len([d for d in cvd.split(",") if d.strip()])
    if f.torch_device_count <= wanted:
        return []
    return [
        Finding(
            "cuda-visible-devices-late",
            WARNING,
            f"CUDA_VISIBLE_DEVICES lists {wanted} "
            f"device(s) but torch sees {f.torch_device_count}: it was set after CUDA "
            "initialised",
            "set CUDA_VISIBLE_DEVICES before the process starts (or before "
            "the first torch.cuda call), not inside the training script",
        )
    ]


def shm_too_small(ctx: Context) -> list[Finding]:
    f = ctx.facts
    logged = ctx.log(
        r"bus error|unable to write to file </torch_|shm_open|No space left on device.*shm"
    )
    size = f.shm_bytes
    mib = f"{size / 2**20:.0f} MiB" if size is not None else "unknown size"
    if logged or (size is not None and size <= SHM_DOCKER_DEFAULT):
        why = f"'{logged.group(0)}' with /dev/shm of {mib}" if logged else f"/dev/shm is {mib}"
        return [
            Finding(
                "shm-too-small",
                ERROR,
                f"{why}: DataLoader workers and NCCL's shared-memory transport need more",
                "run the container with --shm-size=16g or --ipc=host "
                "(Kubernetes: a memory-backed emptyDir at /dev/shm)",
            )
        ]
    if size is not None and size < SHM_ADVISED:
        return [
            Finding(
                "shm-too-small",
                WARNING,
                f"/dev/shm is {mib}: large batches with several DataLoader workers may not fit",
                "give the container --shm-size=16g",
            )
        ]
    return []


def tf32_numerics(ctx: Context) -> list[Finding]:
    f = ctx.facts
    ampere = [t for _, t in targets(ctx) if t.cc >= (8, 0)]
    overrides = {
        k: v
        for k, v in f.env.items()
        if k in ("NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
    }
    if overrides:
        return [
            Finding(
                "tf32-numerics",
                WARNING,
                "TF32 is forced by the environment ("
                + ", ".join(f"{k}={v}" for k, v in overrides.items())
                + "): float32 results "
                "differ from machines without it",
                "unset it, or set it on every machine",
            )
        ]
    if not ampere or not f.torch:
        return []
    matmul = f.tf32_matmul
    if matmul is None:
        matmul = _torch_before(f.torch, (1, 12))  # TF32 matmul was on by default in 1.7-1.11
    cudnn = f.tf32_cudnn if f.tf32_cudnn is not None else True
    used = [n for n, on in (("matmul", matmul), ("cuDNN convolutions", cudnn)) if on]
    if not used:
        return []
    return [
        Finding(
            "tf32-numerics",
            INFO,
            f"{' and '.join(used)} run in TF32 on "
            f"{ampere[0].display} ({'measured' if f.tf32_matmul is not None else 'torch default'}):"
            " float32 results differ (~1e-3 relative) from pre-Ampere GPUs and CPUs",
            "for bitwise comparisons set torch.backends.cuda.matmul.allow_tf32 = False and "
            "torch.backends.cudnn.allow_tf32 = False on every machine",
        )
    ]


def _torch_before(version: str, floor: tuple[int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("+", maxsplit=1)[0].split(".")[:2])
    except ValueError:
        return False
    return parts < floor


# --- packages ---------------------------------------------------------------------------------


def domain_library_mismatch(ctx: Context) -> list[Finding]:
    f = ctx.facts
    if not f.torch:
        return []
    rel = ctx.matrix.release(f.torch.split("+", 1)[0])
    out = []
    for lib in ("torchvision", "torchaudio"):
        have = f.packages.get(lib)
        paired = getattr(rel, lib, ()) if rel else ()
        if have and paired and have.split("+")[0] not in paired:
            out.append(
                Finding(
                    "domain-library-mismatch",
                    ERROR,
                    f"{lib} {have} is not the release "
                    f"paired with torch {f.torch} ({', '.join(paired)})",
                    f"install {lib}=={paired[-1]} (or re-lock with `torchship lock`)",
                )
            )
    return out


# --- lock -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EnvDiff:
    env: LockEnvironment
    diffs: tuple[str, ...]
    pins: tuple[str, ...]
    core: bool  # torch or Python differ: pinning packages will not do


def _env_diff(f: Facts, env: LockEnvironment, cpu_job: bool) -> _EnvDiff:
    diffs, pins = [], []
    variant = torch_variant(f)
    locked_base = env.torch.split("+", 1)[0]
    # A CPU job computes the same on any build of the locked torch version: the CUDA variant
    # and the CUDA runtime wheels it pulls in do not matter to it.
    other_variant = variant and variant != env.variant and not cpu_job
    torch_differs = (f.torch or "").split("+", 1)[0] != locked_base or bool(other_variant)
    if torch_differs:
        diffs.append(f"torch {f.torch or 'missing'} (locked {locked_base}+{env.variant})")
    python_differs = f.python is not None and not f.python.startswith(env.python.rstrip("t") + ".")
    if python_differs:
        diffs.append(f"Python {f.python} (locked {env.python})")
    if f.origin != "collect-env":  # a report lists only a few packages
        for p in env.packages:
            have = f.packages.get(p.name)
            if cpu_job and p.name.startswith(CUDA_RUNTIME_WHEELS):
                continue
            if p.name != "torch" and have != p.version:
                diffs.append(f"{p.name} {have or 'missing'} (locked {p.version})")
                pins.append(f"{p.name}=={p.version}")
    return _EnvDiff(env, tuple(diffs), tuple(pins), torch_differs or python_differs)


def lock_mismatch(ctx: Context) -> list[Finding]:
    """Which environment of the lock this interpreter is (info), or how it differs from the
    closest one (error)."""
    f, lock = ctx.facts, ctx.lock
    if lock is None:
        return []
    envs = lock.all_environments()
    scored = [_env_diff(f, e, ctx.cpu_job) for e in envs]
    build = torch_variant(f)  # the installed build picks its environment first: cpu, cu130
    best = min(scored, key=lambda d: (bool(build) and build != d.env.variant, d.core, len(d.diffs)))
    if not best.diffs:
        return [
            Finding(
                "lock-environment",
                INFO,
                f"this interpreter matches environment {best.env.name} of {lock.name}'s lock "
                f"(torch {best.env.torch}, {len(best.env.packages)} packages)",
                "",
            )
        ]
    diffs = best.diffs
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    fix = (
        "run in the locked environment: `torchship sync` builds it, "
        "`torchship exec --local -- CMD` runs a command in it; or run in the locked image"
    )
    if best.pins and not best.core and len(best.pins) <= 10:
        fix = f"install the locked versions: `pip install {' '.join(best.pins)}`, or {fix}"
    closest = f" (closest: environment {best.env.name})" if len(envs) > 1 else ""
    return [
        Finding(
            "lock-mismatch",
            ERROR,
            f"the installed stack differs from {lock.name}'s lock{closest}: {shown}",
            fix,
        )
    ]


Check = Callable[[Context], list[Finding]]

CHECKS: tuple[tuple[str, Check], ...] = (
    ("hardware", no_gpu_visible),
    ("hardware", mig_device_visibility),
    ("driver", driver_too_old),
    ("driver", forward_compat_unsupported),
    ("driver", fabric_manager_missing),
    ("cuda", cpu_only_build),
    ("cuda", cuda_library_missing),
    ("cudnn-nccl", library_path_shadowing),
    ("cudnn-nccl", nccl_library_conflict),
    ("cudnn-nccl", nccl_transport_failure),
    ("torch", gpu_arch_unsupported),
    ("torch", cuda_visible_devices_late),
    ("torch", shm_too_small),
    ("torch", tf32_numerics),
    ("packages", domain_library_mismatch),
    ("lock", lock_mismatch),
)


def run_checks(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    for layer, check in CHECKS:
        for finding in check(ctx):
            findings.append(
                Finding(finding.code, finding.severity, finding.message, finding.fix, layer)
            )
    return findings


def report(ctx: Context, findings: list[Finding]) -> dict[str, Any]:
    return {"findings": [x.to_json() for x in findings], "facts": ctx.facts.to_json()}
