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
        kind = _kind(f)
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


class ArgError(ValueError):
    """A bad [job.workload_args] entry: `key` names it, `hint` says what would be right."""

    def __init__(self, key: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.key, self.hint = key, hint


def _kind(f: Any) -> type:
    return {"int": int, "float": float}.get(str(f.type), str)


def check_table(table: dict[str, Any]) -> TrainConfig:
    """Validate [job.workload_args] as the workload will read it; raises ArgError."""
    known = {f.name: f for f in fields(TrainConfig)}
    values = asdict(TrainConfig())
    for key, value in table.items():
        if key not in known:
            from difflib import get_close_matches  # only for a key that is wrong

            close = get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"one of: {', '.join(known)}"
            raise ArgError(key, "unknown workload argument", hint)
        kind = _kind(known[key])
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ArgError(key, f"must be {_NOUN[kind]}", f"write {key} = {values[key]!r}")
        values[key] = value
    try:
        return validate(TrainConfig(**values))
    except ValueError as e:
        bad = next((k for k in table if k in str(e)), next(iter(table), "steps"))
        raise ArgError(bad, str(e), "see `python -m torchship.workload --help`") from None


_NOUN = {int: "an integer", float: "a number", str: "a string"}


def args_from_table(table: dict[str, Any]) -> list[str]:
    """[job.workload_args] → the workload's command-line flags (validated first)."""
    check_table(table)
    out: list[str] = []
    for key, value in table.items():
        if value is not None:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out
