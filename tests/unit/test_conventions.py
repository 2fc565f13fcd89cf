"""Facts every site shares are stated once, in torchship.conventions (issue 19 item 4): no other
module restates the run folder's files, the container paths, the ports, the job's environment
names or the label prefixes; and the /dev/shm rule moved there renders as it did."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO
from torchship import conventions as c
from torchship.backends.docker import shm_size

SRC = REPO / "src/torchship"
STATED = {
    c.RUN_MOUNT, c.WORKSPACE, c.LOCAL_RENDEZVOUS, c.LOG_FORMAT_ENV, c.JOB_ID_ENV, c.RUN_DIR_ENV,
    c.CHECKPOINT_DIR_ENV, c.METRICS_PORT_ENV, c.METRICS_ADDR_ENV, c.EXIT_FILE,
    c.SUPERVISOR_FILE, c.SUMMARY_FILE, c.METRICS_FILE, c.GPU_FILE, c.REQUEST_FILE,
}  # fmt: skip
PREFIXES = (c.CONTAINER_LABEL_PREFIX, c.K8S_LABEL_PREFIX)
NUMBERS = {c.RENDEZVOUS_PORT, c.TRAINING_PORT}  # (IMAGE_UID, 1000, is every millisecond too)
# Not ours to edit while this was done (issue 19: others change image/ at the same time): the
# image's labels, and in its Dockerfile text its user (ARG UID=1000) and /workspace. It should
# import CONTAINER_LABEL_PREFIX, IMAGE_UID and WORKSPACE.
ELSEWHERE = {"image/dockerfile.py"}


def _constants(path: Path) -> list[tuple[object, int]]:
    tree = ast.parse(path.read_text("utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr)}  # fmt: skip
    return [(n.value, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and id(n) not in docs]  # fmt: skip


def test_no_module_restates_a_convention() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "conventions.py" or rel in ELSEWHERE:
            continue
        for value, line in _constants(path):
            if isinstance(value, str) and (value in STATED or any(p in value for p in PREFIXES)):
                found.append(f"{rel}:{line} {value!r}")
            elif isinstance(value, int) and not isinstance(value, bool) and value in NUMBERS:
                found.append(f"{rel}:{line} {value}")
    assert found == []


@pytest.mark.parametrize("memory_gib", [None, 0.0, 0.5, 1, 2.9, 3, 5.5, 7.25, 32, 40, 512])
def test_the_shm_rule_renders_as_each_site_did(memory_gib: float | None) -> None:
    """Before the move, docker and Kubernetes each had their own copy of the rule."""
    was_docker = "8g" if not memory_gib else f"{max(1, min(16, int(memory_gib // 2)))}g"
    was_k8s = 8192 if not memory_gib else int(max(1024, min(16384, memory_gib * 1024 // 2)))
    assert shm_size(memory_gib) == was_docker
    assert c.shm_mib(memory_gib) == was_k8s
