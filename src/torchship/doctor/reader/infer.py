"""From what the text said to Facts: a torch build named by its tag, or inferred where the
platform says what an unlabelled version means; what the text did not show."""

from __future__ import annotations

from torchship.compat.matrix import Matrix
from torchship.doctor.facts import Facts, build_of_tag, platform_of
from torchship.doctor.reader.builder import _Builder


def _facts(b: _Builder, matrix: Matrix) -> Facts:
    v = b.values
    torch = v.get("torch") or b.packages.get("torch") or b.packages.get("pytorch") or None
    sources = dict(b.sources)
    if torch and "torch" not in sources:
        sources["torch"] = sources.get("package:torch") or sources.get("package:pytorch", "")
    build, cuda = v.get("build"), v.get("torch_cuda")
    if torch and "+" in torch and build is None:
        build, cuda = build_of_tag(torch.split("+", 1)[1])
        if cuda:
            sources["torch_cuda"] = sources["torch"]
    partial = Facts(origin="report", os=v.get("os"), glibc=v.get("glibc"), arch=v.get("arch"))
    if torch and build is None:
        build, cuda, why = _untagged(torch, platform_of(partial), v.get("arch"), matrix)
        if why:
            sources["torch_cuda" if cuda else "torch_build"] = why
    if build:
        sources.setdefault("torch_build", sources.get("torch", ""))
    arch, cudnn, nccl, inferred = _infer(matrix, torch, cuda if build == "cuda" else None)
    if inferred:
        sources["torch_arch"] = inferred
        sources.setdefault("torch_cudnn", inferred)
    if b.gpus:
        sources["gpus"] = b.gpu_source
    env = dict(b.env)
    shm = v.get("shm_bytes")
    if shm is None and "shm-docker-default" in sources:
        shm = 64 * 2**20
        sources["shm_bytes"] = (
            "inferred: docker's default /dev/shm of 64 MiB (" + sources["shm-docker-default"] + ")"
        )
    return Facts(
        origin="report",
        os=v.get("os"),
        arch=v.get("arch"),
        glibc=v.get("glibc"),
        container=v.get("container"),
        driver=v.get("driver"),
        driver_cuda=v.get("driver_cuda"),
        gpus=tuple(sorted(b.gpus, key=lambda g: g.index)),
        env=env,
        python=v.get("python"),
        packages=dict(b.packages),
        torch=torch,
        torch_build=build,
        torch_cuda=cuda if build == "cuda" else None,
        torch_arch=arch,
        torch_cudnn=cudnn,
        torch_nccl=nccl,
        cuda_available=v.get("cuda_available"),
        loaded_libs=tuple(v.get("loaded_libs", ())),
        system_cudnn=tuple(v.get("system_cudnn", ())),
        shm_bytes=shm,
        host_nvcc=v.get("host_nvcc"),
        sources={k: s for k, s in sources.items() if s},
    )


def _untagged(
    torch: str, platform: str | None, arch: str | None, matrix: Matrix
) -> tuple[str | None, str | None, str]:
    """(build, CUDA, why) for a torch version without a local tag, where the platform says."""
    if platform in ("windows", "macos"):
        return "cpu", None, f"inferred: PyPI's torch wheels for {platform} are CPU builds"
    if platform == "linux" and arch in ("x86_64", "aarch64"):
        base = matrix.release(torch)
        rel = base.on(f"linux-{arch}") if base is not None else None
        if rel is None:
            return None, None, ""
        variant = rel.variant(rel.pypi_default)
        if variant is None or variant.cuda is None:
            return (
                "cpu",
                None,
                f"inferred: PyPI's default build of {torch} for Linux {arch} is CPU"
                " (no build tag in the report)",
            )
        return (
            "cuda",
            variant.cuda_str,
            f"inferred: PyPI's default build of {torch} for Linux {arch} is "
            f"{rel.pypi_default} (no build tag in the report)",
        )
    return None, None, ""


def _infer(
    matrix: Matrix, torch: str | None, cuda: str | None
) -> tuple[tuple[str, ...] | None, str | None, str | None, str]:
    """(arch list, cuDNN, NCCL, where from) for a CUDA torch build, from the matrix."""
    if not torch or not cuda:
        return None, None, None, ""
    base = torch.split("+", 1)[0]
    rel = matrix.release(base)
    if rel is None:
        return None, None, None, ""
    name = "cu" + cuda.replace(".", "")
    v = rel.variant(name)
    if v is None or v.archs is None:
        return None, None, None, ""
    return v.arch_tokens(), v.cudnn, v.nccl, f"inferred from the matrix for {base}+{name}"


_DECIDING = (
    ("torch", "the torch version and build"),
    ("driver", "the NVIDIA driver version"),
    ("gpus", "the GPU model"),
    ("python", "the Python version"),
)


def unseen(f: Facts) -> tuple[str, ...]:
    """The facts that decide most failures and that the text did not give."""
    out = []
    for key, what in _DECIDING:
        value = getattr(f, key)
        if not value:
            out.append(what)
        elif key == "torch" and f.torch_build is None:
            out.append("which build of torch (CUDA or CPU)")
    return tuple(out)
