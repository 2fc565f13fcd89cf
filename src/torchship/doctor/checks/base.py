"""What every check shares: Finding, Context, the Check record, and helpers over the facts.

A check is pure: it reads the Context (facts, matrix, optional lock, the signature hits of the
text it was given) and returns Findings with a stable code (docs/doctor.md; never renamed), a
severity, a fix, the evidence it rests on and a confidence.

Evidence first: an **error** needs positive evidence (a failure line, or an observed fact that
cannot work); a missing or inferred fact never produces one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchship.compat.archs import Arch, parse_arch
from torchship.compat.gpus import GPUTarget, lookup_gpu
from torchship.compat.matrix import Matrix
from torchship.doctor.facts import Facts, GPUFact
from torchship.errors import UnknownGPUError
from torchship.lock.model import Lock
from torchship.versions import parse_version

if TYPE_CHECKING:  # a machine's checks without an error text load no signatures
    from torchship.doctor.signatures import Hit

ERROR, WARNING, INFO = "error", "warning", "info"
HIGH, MEDIUM, LOW = "high", "medium", "low"
SEVERITY_RANK = {ERROR: 0, WARNING: 1, INFO: 2}
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
    evidence: tuple[str, ...] = ()  # the lines or facts it rests on
    confidence: str = HIGH  # high: observed; medium: inferred (matrix, defaults); low: a hint
    # a finding that only says "something is wrong here"; dropped when another error explains
    fallback: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "layer": self.layer,
            "evidence": list(self.evidence),
            "confidence": self.confidence,
        }


@dataclass(frozen=True, slots=True)
class Context:
    facts: Facts
    matrix: Matrix
    lock: Lock | None = None
    hits: tuple[Hit, ...] = ()  # signature matches in the error text or report
    cpu_job: bool = False  # checking for a job that uses no GPU (a run's preflight)
    applied: tuple[Hit, ...] = ()  # the hits whose predicates hold for these facts

    def hit(self, code: str) -> Hit | None:
        return next((h for h in self.applied if h.signature.code == code), None)


def context(
    facts: Facts,
    matrix: Matrix,
    lock: Lock | None = None,
    hits: tuple[Hit, ...] = (),
    cpu_job: bool = False,
) -> Context:
    """The Context, with the hits that apply to these facts worked out once."""
    if hits:
        from torchship.doctor.signatures import applies

        applied = tuple(h for h in hits if applies(h, facts))
    else:
        applied = ()
    return Context(facts, matrix, lock, hits, cpu_job, applied)


Run = Callable[[Context], list[Finding]]


@dataclass(frozen=True, slots=True)
class Check:
    """A declared check: the codes it may return, its layer, what it needs, its function."""

    codes: tuple[str, ...]
    layer: str
    scope: str  # "facts": any facts; "machine": a live probe; "lock": needs a lock
    run: Run


# --- evidence ---------------------------------------------------------------------------------


def evidence(f: Facts, *keys: str) -> tuple[str, ...]:
    """Each fact with where it came from ("driver 470.82 (line 12: ...)")."""
    out = []
    for key in keys:
        value = getattr(f, key, None) if not key.startswith("env:") else f.env.get(key[4:])
        if key == "gpus":
            value = ", ".join(g.name for g in f.gpus) or None
        if value in (None, (), {}, ""):
            continue
        where = f.sources.get(key) or f.origin
        out.append(f"{key.removeprefix('env:')} = {value} ({where})")
    return tuple(out)


def inferred(f: Facts, *keys: str) -> bool:
    return any(f.sources.get(k, "").startswith("inferred") for k in keys)


# --- helpers over the facts -------------------------------------------------------------------


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
    if f.build == "cpu":
        return "cpu"
    if f.build == "cuda" and f.torch_cuda:
        return "cu" + f.torch_cuda.replace(".", "")
    if f.torch and "+" in f.torch:
        return f.torch.split("+", 1)[1]
    if f.torch and f.build is not None:
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


def arch_span(archs: tuple[Arch, ...]) -> str:
    sass = [a.token for a in archs if not a.ptx]
    return f"{sass[0]}…{sass[-1]}" if len(sass) > 1 else (sass[0] if sass else "no GPU code")


def driver(f: Facts) -> tuple[int, ...] | None:
    try:
        return parse_version(f.driver) if f.driver else None
    except ValueError:
        return None


def fitting_build(ctx: Context, gpus: tuple[GPUTarget, ...]) -> str | None:
    """The build the resolver picks for these GPUs and this driver, at or after this torch."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from torchship.compat.request import Request
    from torchship.compat.resolve import resolve

    f = ctx.facts
    base = (f.torch or "").split("+", 1)[0]
    try:
        spec = SpecifierSet(f">={base}") if base else SpecifierSet()
    except InvalidSpecifier:
        spec = SpecifierSet()
    req = Request(torch=spec, torch_text=base, gpus=gpus, driver=driver(f))
    res = resolve(req, ctx.matrix)
    if res.chosen is not None:
        return res.chosen.local_version
    from torchship.compat.explain import nearest_fit

    return nearest_fit(req, ctx.matrix)
