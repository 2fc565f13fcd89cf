"""Packages layer: domain libraries paired with torch, NumPy's ABI."""

from __future__ import annotations

from torchship.doctor.checks.base import ERROR, WARNING, Check, Context, Finding, evidence


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
                    f"{lib} {have} is not the release paired with torch {f.torch} "
                    f"({', '.join(paired)})",
                    f"install {lib}=={paired[-1]} (or re-lock with `torchship lock`)",
                    evidence=(
                        *evidence(f, "torch"),
                        f"{lib} = {have} ({f.sources.get('package:' + lib, f.origin)})",
                    ),
                )
            )
    return out


def _major_minor(version: str) -> tuple[int, int] | None:
    try:
        major, minor = version.split("+", 1)[0].split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def numpy_abi_mismatch(ctx: Context) -> list[Finding]:
    """torch wheels before 2.3 were compiled against NumPy 1: NumPy 2 breaks their bridge."""
    f = ctx.facts
    numpy = f.packages.get("numpy")
    tv, nv = _major_minor(f.torch or ""), _major_minor(numpy or "")
    if tv is None or nv is None or nv[0] < 2 or tv >= (2, 3):
        return []
    return [
        Finding(
            "numpy-abi-mismatch",
            WARNING,
            f"numpy {numpy} with torch {f.torch}: torch before 2.3 was compiled against NumPy 1, "
            "so torch.from_numpy and friends fail ('compiled using NumPy 1.x cannot be run in "
            "NumPy 2')",
            "install numpy<2, or torch ≥ 2.3",
            evidence=(
                *evidence(f, "torch"),
                f"numpy = {numpy} ({f.sources.get('package:numpy', f.origin)})",
            ),
        )
    ]


CHECKS = (
    Check(("domain-library-mismatch",), "packages", "facts", domain_library_mismatch),
    Check(("numpy-abi-mismatch",), "packages", "facts", numpy_abi_mismatch),
)
