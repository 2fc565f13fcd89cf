"""This host's name, as gethostname(2) gives it: on POSIX uname(2)'s node name, read without
importing socket (~4-6 ms of every `run`, `sync` and `exec` start, issue 20)."""

from __future__ import annotations

import os


def hostname() -> str:
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def kernel_and_arch() -> tuple[str, str]:
    """(kernel release, machine) as platform.release() and platform.machine() say them, from
    uname where there is one (platform costs ~1.5 ms of imports and regexes to start)."""
    if hasattr(os, "uname"):
        u = os.uname()
        return u.release, u.machine
    import platform

    return platform.release(), platform.machine()
