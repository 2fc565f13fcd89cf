"""Atomic checkpoints and resume from the newest valid one.

A checkpoint is `step-00000020.pt` in the checkpoint folder, written by rank 0 to a temp
file in the same folder, fsynced, then renamed (torchship._atomic.open_atomic): a crash
leaves the previous checkpoint intact, never a torn one. Loading uses
`torch.load(weights_only=True)` (tensors and plain containers only, never arbitrary pickle),
and a file that fails to load or lacks a field is skipped in favour of the next older one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchship._atomic import open_atomic

FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})\.pt$")
_TEMP = re.compile(r"^\.step-\d{8}\.pt\..*$")  # open_atomic's temp file of a checkpoint
REQUIRED = ("format", "step", "model", "optimizer", "config")


@dataclass(frozen=True, slots=True)
class Loaded:
    path: Path
    state: dict[str, Any]
    skipped: tuple[tuple[Path, str], ...]  # newer files that were not valid, and why

    @property
    def step(self) -> int:
        return int(self.state["step"])


def unfinished(folder: Path) -> list[Path]:
    """Temp files of saves that never reached their rename (the writer was killed)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TEMP.match(p.name))


def why_none(folder: Path) -> str | None:
    """What a folder with no loadable checkpoint holds instead, or None when it holds none:
    a resume was expected there, and starting from step 0 should say why."""
    damaged = [p.name for _, p in checkpoints(folder)]
    temps = [p.name for p in unfinished(folder)]
    found = [f"{len(damaged)} unreadable ({', '.join(damaged[:3])})"] if damaged else []
    if temps:
        found.append(f"{len(temps)} unfinished save(s), killed before the rename "
                     f"({', '.join(temps[:3])})")  # fmt: skip
    return "; ".join(found) or None


def path_for(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def save(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = path_for(folder, step)
    with open_atomic(path) as f:
        torch.save({"format": FORMAT, "step": step, **state}, f)
    for _, old in checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_newest(folder: Path) -> Loaded | None:
    skipped: list[tuple[Path, str]] = []
    for _, path in checkpoints(folder):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: any error from the unpickler or zip reader
            skipped.append((path, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
            continue
        missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
        if missing or state.get("format") != FORMAT:
            skipped.append((path, f"not a torchship checkpoint (missing {', '.join(missing)})"))
            continue
        return Loaded(path, state, tuple(skipped))
    return None
