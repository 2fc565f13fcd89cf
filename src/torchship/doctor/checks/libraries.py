"""cuDNN / NCCL / CUDA libraries: is the library torch loads the one it was built against?"""

from __future__ import annotations

import re

from torchship.doctor.checks.base import ERROR, WARNING, Check, Context, Finding

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
                    evidence=(lib, f.sources.get("library_path_libs", "LD_LIBRARY_PATH")),
                )
            )
    return out


def nccl_library_conflict(ctx: Context) -> list[Finding]:
    f = ctx.facts
    out = []
    foreign = [p for p in f.loaded_libs if "libnccl" in p and "site-packages" not in p]
    if foreign and any(p.startswith("nvidia-nccl") for p in f.packages):
        out.append(
            Finding(
                "nccl-library-conflict",
                ERROR,
                f"{foreign[0]} is loaded: a different libnccl than the one torch was built "
                f"against{' (' + f.torch_nccl + ')' if f.torch_nccl else ''} is in use",
                "remove other NCCL builds from LD_LIBRARY_PATH/LD_PRELOAD, or reinstall the "
                "nvidia-nccl wheel torch pins",
                evidence=(foreign[0],),
            )
        )
    wheels = sorted(p for p in f.packages if re.match(r"nvidia-nccl-cu\d+$", p))
    if len(wheels) > 1:
        out.append(
            Finding(
                "nccl-library-conflict",
                WARNING,
                f"{' and '.join(wheels)} are both installed: they ship the same libnccl.so.2, "
                "and the one loaded may not be the one torch was built against",
                f"uninstall the NCCL wheel that does not match torch's CUDA "
                f"(`pip uninstall {wheels[0]}`), then reinstall torch's",
                evidence=tuple(f.sources.get(f"package:{w}", w) for w in wheels),
            )
        )
    return out


CHECKS = (
    Check(("library-path-shadowing",), "libraries", "facts", library_path_shadowing),
    Check(("nccl-library-conflict",), "libraries", "facts", nccl_library_conflict),
)
