"""Every error torchship raises on purpose, under one root.

    TorchshipError                 message + hint; the CLI prints both, exit 1
    ├── UsageError                 bad input from the user (exit 2)
    │   ├── SpecError              torchship.toml / [tool.torchship]: names file and field path
    │   ├── UnknownGPUError        a GPU name the matrix does not know, with close matches
    │   └── LockFileError          a torchship.lock that is malformed or of an unknown schema
    ├── MatrixError                the packaged compatibility matrix is malformed (a bug)
    ├── NothingFitsError           no torch build runs on the targets (exit 1), with what would
    ├── LockError                  `torchship lock` could not produce a lock (exit 1)
    │   ├── IndexUnreachableError  a package index (PyPI, the PyTorch index) could not be reached
    │   └── LockOutOfDateError     `lock --check`: the spec changed since the lock was written
    └── EnvError                   an environment of the lock cannot be picked or made here

The library raises and never prints or exits; `torchship.cli` maps these to output and exit codes.
A value from the user is echoed in a message through `excerpt`, never whole: a file can hold a
1 MB string or key.
"""

from __future__ import annotations

import re

# What an error echoes of a user's value: enough to recognise it on one terminal line.
EXCERPT_CHARS = 80


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """`value` as repr() shows it, cut to about `limit` characters with "…" and the full
    length: an error names what it refused without echoing a megabyte of it."""
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        size = f" ({len(value):,} characters)"
    else:
        try:
            text, size = repr(value), ""
        except ValueError:  # an int past Python's 4300-digit limit for str()
            return f"<{type(value).__name__} too large to show>"
    if len(text) <= limit + 2 and (not isinstance(value, str) or len(value) <= limit):
        return text
    return text[:limit] + "…" + size


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def key_text(key: str) -> str:
    """A key as a field path shows it: bare when TOML would write it bare, else quoted and cut
    (a key can be a megabyte long, or hold a line break)."""
    return key if _BARE_KEY.fullmatch(key) else excerpt(key, 40)


# The last wall, in the CLI's error printer: one line of at most this many characters.
LINE_CHARS = 400


def one_line(text: str, limit: int = LINE_CHARS) -> str:
    """`text` on one line (line breaks and other control characters shown escaped), cut to
    `limit` characters: a message that echoed a user's value whole still prints as one line."""
    head = text[: limit + 1]
    clean = "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in head)
    return clean if len(clean) <= limit and len(text) <= limit else clean[:limit] + "…"


def few_lines(text: str, lines: int = 20, limit: int = LINE_CHARS) -> str:
    """`text` kept to its first `lines` lines, each made `one_line`: for the errors whose
    message is meant to span lines (a build's last log lines)."""
    head = text.splitlines()[: lines + 1]
    out = [one_line(line, limit) for line in head[:lines]]
    return "\n".join(out + (["…"] if len(head) > lines else []))


class TorchshipError(Exception):
    """Root of torchship's errors. `hint` says how to fix it, in one line."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(TorchshipError):
    """The user's input is wrong; nothing was attempted."""

    exit_code = 2


class SpecError(UsageError):
    """A spec file is malformed; `where` is `file:field.path`."""

    def __init__(self, file: str, field: str, problem: str, hint: str) -> None:
        self.file = file
        self.field = field
        where = f"{file}:{field}" if field else file
        super().__init__(f"{where}: {problem}", hint)


OTHER_VENDORS = {
    "AMD": "PyTorch's ROCm builds run on AMD GPUs (download.pytorch.org/whl/rocm…); torchship "
    "does not resolve them yet",
    "Intel": "PyTorch's XPU builds run on Intel GPUs (download.pytorch.org/whl/xpu); torchship "
    "does not resolve them yet",
    "Intel Gaudi": "Gaudi runs PyTorch through Intel's Gaudi software (habana_frameworks); "
    "torchship does not resolve it",
    "Apple": "torch's macOS build uses Apple GPUs through MPS; no CUDA build applies",
}


class UnknownGPUError(UsageError):
    """A GPU name that is not in the matrix; `suggestions` holds close matches."""

    def __init__(
        self, name: str, suggestions: tuple[str, ...], vendor: str = "", hint: str = ""
    ) -> None:
        """`hint`: what to say when there is no close match (default: the forms a GPU takes)."""
        self.name = name
        self.suggestions = suggestions
        if vendor:  # never a close NVIDIA name for another vendor's GPU
            super().__init__(
                f"{excerpt(name)} is not an NVIDIA GPU ({vendor}): torchship resolves CUDA builds",
                OTHER_VENDORS.get(vendor, "target an NVIDIA GPU, or use torch's CPU build"),
            )
            return
        if suggestions:
            hint = "did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
        elif not hint:
            hint = "name a GPU model (e.g. 'H100', 'RTX 4090') or its architecture ('sm_90', '9.0')"
        super().__init__(f"unknown GPU {excerpt(name)}", hint)


class LockFileError(UsageError):
    """torchship.lock cannot be read."""


class MatrixError(TorchshipError):
    """The compatibility matrix data is malformed."""


class NothingFitsError(TorchshipError):
    """The resolver found no build for the spec's targets."""


class LockError(TorchshipError):
    """Locking failed."""


class IndexUnreachableError(LockError):
    """A package index could not be reached while locking."""

    def __init__(self, index_url: str, detail: str, hint: str) -> None:
        self.index_url = index_url
        super().__init__(f"cannot reach the package index {index_url}: {detail}", hint)


class LockOutOfDateError(LockError):
    """The spec no longer matches the lock."""


class EnvError(TorchshipError):
    """`torchship sync`: no environment fits this machine, or uv could not install one (the
    message names the package and the cause)."""
