"""The workload's settings: command-line flags, and the job's [job.workload_args] table.

Pure (no torch). The same names work in both places: `--d-model 256` on the command line is
`d_model = 256` in a job file.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

AMP_MODES = ("auto", "bf16", "off")
COMPILE_MODES = ("off", "inductor", "aot_eager")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    steps: int = 60
    batch_size: int = 8  # sequences per rank per step
    seq_len: int = 64
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 1234
    amp: str = "auto"  # auto: bf16 on a GPU that supports it, off on CPU
    compile: str = "off"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # 0: only at the end (when checkpoint_dir is set)
    keep_checkpoints: int = 3
    data: str | None = None  # a UTF-8 text file; None: the bundled synthetic corpus
    log_every: int = 10
    summary: str | None = None  # where rank 0 writes the run summary (JSON)
    metrics: str | None = None  # where rank 0 appends one JSON line per logged step
    threads: int = 0  # intra-op threads per process on CPU; 0: torch's default

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def tokens_per_rank_step(self) -> int:
        return self.batch_size * self.seq_len


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be ≥ 1, got {value}")


def validate(cfg: TrainConfig) -> TrainConfig:
    for name in ("steps", "batch_size", "seq_len", "d_model", "layers", "heads", "log_every"):
        _positive(name, getattr(cfg, name))
    if cfg.d_model % cfg.heads:
        raise ValueError(f"d_model ({cfg.d_model}) must be a multiple of heads ({cfg.heads})")
    if cfg.amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {cfg.amp!r}")
    if cfg.compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {cfg.compile!r}")
    if cfg.checkpoint_every < 0 or cfg.keep_checkpoints < 1 or cfg.warmup_steps < 0:
        raise ValueError("checkpoint_every and warmup_steps must be ≥ 0, keep_checkpoints ≥ 1")
    if cfg.lr <= 0 or cfg.grad_clip < 0 or cfg.threads < 0:
        raise ValueError("lr must be > 0, grad_clip and threads ≥ 0")
    return cfg


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m torchship.workload",
        description="torchship's reference workload: a small Transformer LM trained with DDP.",
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        kind = {"int": int, "float": float}.get(str(f.type), str)
        choices = {"amp": AMP_MODES, "compile": COMPILE_MODES}.get(f.name)
        p.add_argument(flag, dest=f.name, type=kind, default=default, choices=choices)
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    ns = parser().parse_args(argv)
    try:
        return validate(TrainConfig(**vars(ns)))
    except ValueError as e:
        parser().error(str(e))
        raise  # unreachable: error() exits


def args_from_table(table: dict[str, Any]) -> list[str]:
    """[job.workload_args] → command-line flags; unknown names and bad values raise ValueError."""
    known = {f.name: f for f in fields(TrainConfig)}
    out: list[str] = []
    for key, value in table.items():
        if key not in known:
            raise ValueError(f"unknown workload argument {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{key} must be a number or a string")
        out += ["--" + key.replace("_", "-"), str(value)]
    validate(TrainConfig(**{**asdict(TrainConfig()), **_typed(table, known)}))
    return out


def _typed(table: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        kind = str(known[key].type)
        if kind == "int" and not isinstance(value, int):
            raise ValueError(f"{key} must be an integer")
        if kind == "float" and not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number")
        if kind.startswith("str") and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        out[key] = value
    return out
