"""This host's name, as gethostname(2) gives it: on POSIX uname(2)'s node name, read without
importing socket (~4-6 ms of every `run`, `sync` and `exec` start, issue 20)."""

from __future__ import annotations

import os


def hostname() -> str:
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()
