"""GPU names -> compute capability, with aliases and close-match suggestions.

Accepts what people write ("H100", "rtx 4090", "A100-SXM4-80GB"), what nvidia-smi prints
("NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"), and bare architectures ("sm_90", "9.0").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from torchship.compat.archs import CC, MAX_MAJOR, parse_cc, sm_str
from torchship.compat.matrix import GPU, Matrix
from torchship.errors import UnknownGPUError

_DROP = {"nvidia", "geforce", "tesla"}
# Memory sizes and form factors that nvidia-smi appends ("80GB", "HBM3", "SXM5", "PCIe", "NVL").
_SUFFIX = re.compile(r"^(\d+gb|hbm\d*e?|sxm\d*|pcie|mig|\d+c|\d+g)$")
# What is meant as an architecture, valid or not: parse_cc then decides (`sm_900`, `99.9` and
# `0.0` are refused there, not matched as names). A GPU target takes sm_XY[a|f], compute_XY, X.Y.
_ARCH_LIKE = re.compile(r"^(sm_\d+[a-z]?|compute_\d+[a-z]?|\d+\.\d+[a-z]?)$", re.IGNORECASE)
_ARCH_OK = re.compile(r"^(sm_\d+[af]?|compute_\d+|\d+\.\d+)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class GPUTarget:
    """A GPU the environment must run on. `gpu` is None when given as a bare architecture."""

    label: str  # what we show: "H100" or "sm_90"
    cc: CC
    gpu: GPU | None

    @property
    def sm(self) -> str:
        return sm_str(self.cc)

    @property
    def display(self) -> str:
        return gpu_display(self.label, self.gpu is None, self.cc)

    @property
    def is_geforce(self) -> bool:
        return self.gpu is not None and self.gpu.segment == "consumer"


def gpu_display(label: str, bare: bool, cc: CC) -> str:
    """How reasons name a GPU: its label, and its architecture unless it is a bare one."""
    return label if bare else f"{label} ({sm_str(cc)})"


def normalize(name: str) -> tuple[str, ...]:
    tokens = re.split(r"[^a-z0-9]+", name.lower())
    return tuple(t for t in tokens if t and t not in _DROP)


@cache
def _alias_index(matrix: Matrix) -> dict[tuple[str, ...], GPU]:
    index: dict[tuple[str, ...], GPU] = {}
    for gpu in matrix.gpus:
        for alias in (gpu.name, *gpu.aliases):
            index.setdefault(normalize(alias), gpu)
    return index


def _match(matrix: Matrix, tokens: tuple[str, ...]) -> GPU | None:
    index = _alias_index(matrix)
    if tokens in index:
        return index[tokens]
    # Longest alias that is a token prefix, if what follows is only memory/form-factor noise
    # ("h100 80gb hbm3") -- but never "rtx 6000" for "rtx 6000 ada generation".
    for n in range(len(tokens) - 1, 0, -1):
        head, rest = tokens[:n], tokens[n:]
        if head in index and all(_SUFFIX.match(t) for t in rest):
            return index[head]
    return None


def suggest(matrix: Matrix, name: str, n: int = 3) -> tuple[str, ...]:
    names = {" ".join(normalize(g.name)): g.name for g in matrix.gpus}
    for g in matrix.gpus:
        for a in g.aliases:
            names.setdefault(" ".join(normalize(a)), g.name)
    key = " ".join(normalize(name))
    import difflib  # only for a name that matched nothing: not on every command's path

    close = difflib.get_close_matches(key, list(names), n=n * 2, cutoff=0.6)
    out: list[str] = []
    for c in close:
        if names[c] not in out:
            out.append(names[c])
    return tuple(out[:n])


# Names that are another vendor's GPU (asked only after no NVIDIA name matched): an AMD
# Instinct MI300X or Radeon RX 7900 XTX, an Intel Arc/Data Center GPU Max/Gaudi, an Apple M3.
_AMD = re.compile(r"\b(amd|radeon|instinct|mi\d{2,3}[a-z]?|rx \d{3,4}|w\d{4})\b")
_GAUDI = re.compile(r"\bgaudi ?\d?\b")
_INTEL = re.compile(r"\b(intel|arc [abc]\d{3}|iris|ponte vecchio|data center gpu max)\b")
_APPLE = re.compile(r"\b(apple|m[1-5] (pro|max|ultra))\b")


def other_vendor(name: str) -> str:
    """ "AMD", "Intel" or "Apple" when the name is one of their GPUs, else ""."""
    text = " ".join(re.split(r"[^a-z0-9]+", name.lower())).strip()
    vendors = (("AMD", _AMD), ("Intel Gaudi", _GAUDI), ("Intel", _INTEL), ("Apple", _APPLE))
    for vendor, pattern in vendors:
        if pattern.search(text):
            return vendor
    return ""


def lookup_gpu(matrix: Matrix, name: str) -> GPUTarget:
    """Resolve a GPU name or architecture; raises UnknownGPUError with close matches."""
    text = name.strip()
    if _ARCH_LIKE.match(text):
        return _bare_arch(text)
    gpu = _match(matrix, normalize(text))
    if gpu is None:
        vendor = other_vendor(text)
        raise UnknownGPUError(text, () if vendor else suggest(matrix, text), vendor)
    return GPUTarget(label=gpu.name, cc=gpu.cc, gpu=gpu)


def _bare_arch(text: str) -> GPUTarget:
    """A target given as its architecture (`sm_90`, `9.0`); UnknownGPUError, with the form
    meant where it is cheap to guess (`sm_9` -> sm_90, `9.0a` -> sm_90a), when it is none."""
    if _ARCH_OK.match(text):
        try:
            cc = parse_cc(text)
        except ValueError:
            pass
        else:
            return GPUTarget(label=sm_str(cc), cc=cc, gpu=None)
    raise UnknownGPUError(  # not the generic hint: it names sm_90 and 9.0, which this is like
        text,
        _arch_guesses(text.lower()),
        hint=f"no NVIDIA GPU has this compute capability: name a GPU model, or sm_XY / X.Y "
        f"with X from 1 to {MAX_MAJOR} (e.g. 'sm_90', '12.0')",
    )


def _arch_guesses(text: str) -> tuple[str, ...]:
    """Valid architectures a malformed one likely meant: a missing minor (`sm_9` -> sm_90), a
    suffix on X.Y or compute_XY (`9.0a`, `compute_90a` -> sm_90a), an extra trailing zero
    (`sm_900` -> sm_90), an unknown suffix dropped (`sm_90x` -> sm_90)."""
    guesses = []
    m = re.match(r"^(sm|compute)_(\d+)([a-z]?)$", text)
    if m:
        kind, digits, suffix = m.groups()
        if suffix and suffix not in "af":
            suffix = ""
        elif suffix:
            kind = "sm"
        if len(digits) == 1:
            guesses.append(f"{kind}_{digits}0{suffix}")
        elif len(digits) > 2 and digits.endswith("0"):
            guesses.append(f"{kind}_{digits[:-1]}{suffix}")
        else:
            guesses.append(f"{kind}_{digits}{suffix}")
    m = re.match(r"^(\d+)\.(\d+)([a-z]?)$", text)
    if m:
        major, minor, suffix = m.groups()
        if len(minor) > 1 and minor.endswith("0"):
            minor = minor[:-1]
        af = suffix in ("a", "f")
        guesses.append(f"sm_{major}{minor}{suffix}" if af else f"{major}.{minor}")
    return tuple(g for g in guesses if g != text and _ARCH_OK.match(g) and _parses(g))


def _parses(text: str) -> bool:
    try:
        parse_cc(text)
    except ValueError:
        return False
    return True
