"""Headless Chromium for tests: load a page, return the DOM after it ran, or a screenshot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def chromium(tmp: Path, *args: str, window: str = "1280,800") -> str:
    """Headless Chromium with a fresh profile each time (no cookie carried over); its stdout."""
    profile = tmp / f"profile-{os.urandom(4).hex()}"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        "--virtual-time-budget=20000",
    ]
    proc = subprocess.run(
        ["chromium", *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )
    return proc.stdout
