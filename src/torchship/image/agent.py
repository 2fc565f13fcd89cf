"""torchship inside its images: `torchship doctor`, the reference workload (with its training
metrics) and the metrics exporter run in every container, without touching the locked
environment.

The agent is torchship's own source and its four pure-Python dependencies (packaging,
platformdirs, tomli_w, prometheus_client) copied as module files (no dist-info) into
/opt/torchship/lib, which a `.pth` file appends to the venv's sys.path. Appended, not
prepended: where the lock pins one of those packages, the locked copy wins; and with no
dist-info, the doctor's package check sees only the lock's packages. Reading these files is
the one input of rendering outside the lock: the image label `io.torchship.agent` records
the torchship version they came from.
"""

from __future__ import annotations

import importlib
from pathlib import Path

AGENT_CONTEXT = "torchship-agent"
AGENT_DIR = "/opt/torchship"
_MODULES = ("torchship", "packaging", "platformdirs", "tomli_w", "prometheus_client")
_SKIP_DIRS = {"__pycache__"}

LAUNCHER = """#!/opt/venv/bin/python
# torchship's agent in this image: the same CLI, on the locked environment's Python.
import sys

from torchship.cli import main

sys.exit(main())
"""


def _package_root(name: str) -> Path:
    module = importlib.import_module(name)
    init = module.__file__
    if init is None:  # a namespace package: not one of ours
        raise RuntimeError(f"{name} has no __init__ file to copy")
    return Path(init).parent


def agent_files() -> dict[str, str]:
    """Context files under `torchship-agent/`: lib/<module>/… and bin/torchship, sorted."""
    files: dict[str, str] = {}
    for name in _MODULES:
        root = _package_root(name)
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root.parent)
            if not path.is_file() or _SKIP_DIRS & set(rel.parts):
                continue
            if path.suffix not in {".py", ".json", ".typed", ".md", ".txt", ".toml"}:
                continue
            files[f"{AGENT_CONTEXT}/lib/{rel.as_posix()}"] = path.read_text("utf-8")
    files[f"{AGENT_CONTEXT}/bin/torchship"] = LAUNCHER
    return files
