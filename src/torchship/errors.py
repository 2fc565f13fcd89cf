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
"""

from __future__ import annotations


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


class UnknownGPUError(UsageError):
    """A GPU name that is not in the matrix; `suggestions` holds close matches."""

    def __init__(self, name: str, suggestions: tuple[str, ...]) -> None:
        self.name = name
        self.suggestions = suggestions
        if suggestions:
            hint = "did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
        else:
            hint = "name a GPU model (e.g. 'H100', 'RTX 4090') or its architecture ('sm_90', '9.0')"
        super().__init__(f"unknown GPU {name!r}", hint)


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
