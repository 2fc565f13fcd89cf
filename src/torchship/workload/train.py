"""The training loop: DDP, AMP, optional torch.compile, clipping, checkpoints, measurements.

Deterministic by construction: weights start from the seed, batches are a function of
(seed, step, rank) and dropout is not used, so a run resumed from a checkpoint computes
bit for bit what the uninterrupted run computes (on CPU; cuBLAS and NCCL reductions may
differ in the last bits between runs on GPU).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from torchship._atomic import write_text_atomic
from torchship.conventions import JOB_ID_ENV
from torchship.monitor import logs
from torchship.monitor.training import ADDR_ENV, TrainingMetrics, port_from_env
from torchship.workload import checkpoint, data
from torchship.workload.config import TrainConfig, parse_args
from torchship.workload.flops import flops_per_token, mfu, peak_tflops
from torchship.workload.model import LM, matmul_params

WARMUP_STEPS_UNTIMED = 3  # the first steps of each attempt (allocation, compilation) are not timed


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: one process, no process group


@dataclass
class Progress:
    history: list[list[float]] = field(default_factory=list)  # [step, loss] at log steps
    step_s: list[float] = field(default_factory=list)
    grad_norm: float = 0.0


PER_RANK_EVENTS = frozenset({"start", "step", "done"})  # in JSON logs, every rank writes these


def say(d: Dist, msg: str, event: str = "message", **fields: Any) -> None:
    """Rank 0's progress line; with TORCHSHIP_LOG_FORMAT=json, a JSON object carrying the job
    id and rank, written by every rank for the events that differ between ranks."""
    json_logs = logs.log_format() == "json"
    if d.rank == 0 or (json_logs and event in PER_RANK_EVENTS):
        logs.emit("torchship.workload", "[torchship.workload]", msg, event, fields=fields)


@contextmanager
def telemetry(
    d: Dist, run: dict[str, Any], start: int, steps: int
) -> Iterator[TrainingMetrics | None]:
    """Local rank 0's Prometheus endpoint while training, when TORCHSHIP_METRICS_PORT is set."""
    tm = _serve_metrics(d)
    if tm is not None:
        tm.describe_run(**run)
        tm.set(step=start, steps_target=steps)
    try:
        yield tm
    finally:
        if tm is not None:
            tm.close()


def _serve_metrics(d: Dist) -> TrainingMetrics | None:
    if d.local_rank != 0:
        return None
    try:
        port = port_from_env()
    except ValueError as e:
        print(f"[torchship.workload] training metrics are off: {e}", file=sys.stderr, flush=True)
        return None
    if port is None:
        return None
    tm = TrainingMetrics(os.environ.get(JOB_ID_ENV, ""), d.rank)
    addr = os.environ.get(ADDR_ENV, "127.0.0.1")
    served = tm.serve(port, addr)
    if served is None:
        return None
    url = f"http://{addr}:{served.port}/metrics"
    logs.emit("torchship.workload", "[torchship.workload]", f"training metrics on {url}",
              "metrics", stream=sys.stderr, fields={"url": url, "port": served.port})  # fmt: skip
    return tm


def setup() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if world == 1:
        return Dist(0, 1, 0, device, None)
    dist.init_process_group(
        backend,
        store=_attempt_store(world),
        rank=rank,
        world_size=world,
        device_id=device if backend == "nccl" else None,
    )
    return Dist(rank, world, local, device, backend)


def _attempt_store(world: int) -> Any:
    """Under torchrun, the agent's store with a prefix per restart attempt.

    After torchrun restarts a worker group, the agent's store can still hold the previous
    attempt's addresses; gloo's connectFullMesh then dials a dead worker's port and fails
    (seen here in the SIGKILL-and-resume test). A per-attempt prefix makes every attempt
    publish and read fresh keys.
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_PORT" not in env:
        return None  # not under torchrun's agent: let init_process_group read env://
    from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]

    base = TCPStore(
        env["MASTER_ADDR"],
        int(env["MASTER_PORT"]),
        world,
        is_master=False,
        timeout=timedelta(minutes=10),
    )
    return PrefixStore(f"torchship/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/", base)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def amp_dtype(cfg: TrainConfig, d: Dist) -> torch.dtype | None:
    if cfg.amp == "bf16":
        return torch.bfloat16
    if cfg.amp == "auto" and d.device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in state-dict order (no numpy needed)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        c = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(ctypes.string_at(c.data_ptr(), c.numel() * c.element_size()))
    return h.hexdigest()


def mean_across(d: Dist, value: torch.Tensor) -> float:
    v = value.detach().float().clone()
    if d.backend is not None:
        dist.all_reduce(v)
        v /= d.world
    return float(v.item())


def resume(
    cfg: TrainConfig, d: Dist, model: LM, opt: torch.optim.Optimizer
) -> tuple[int, Progress]:
    if not cfg.checkpoint_dir:
        return 0, Progress()
    folder = Path(cfg.checkpoint_dir)
    loaded = checkpoint.load_newest(folder)
    if loaded is None:  # silent only for an empty (or missing) folder
        why = checkpoint.why_none(folder)
        if why:
            say(d, f"no complete checkpoint in {folder}: {why}; starting from step 0")
        return 0, Progress()
    for path, why in loaded.skipped:
        say(d, f"skipping checkpoint {path.name}: {why}")
    model.load_state_dict(loaded.state["model"])
    opt.load_state_dict(loaded.state["optimizer"])
    saved_world = loaded.state.get("world_size")
    if saved_world != d.world:
        say(d, f"note: checkpoint was written by {saved_world} ranks, now {d.world}")
    say(d, f"resumed from {loaded.path} (step {loaded.step})")
    return loaded.step, Progress(history=[list(x) for x in loaded.state.get("history", [])])


def save(cfg: TrainConfig, d: Dist, step: int, model: LM, opt: Any, prog: Progress) -> None:
    if d.rank != 0 or not cfg.checkpoint_dir:
        return
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "config": cfg.to_json(),
        "world_size": d.world,
        "history": prog.history,
    }
    checkpoint.save(Path(cfg.checkpoint_dir), step, state, cfg.keep_checkpoints)


def announce(
    cfg: TrainConfig, d: Dist, model: LM, start: int, dtype: torch.dtype | None, device_name: str
) -> dict[str, Any]:
    """Say how the run is set up (the `start` event); returns that setup."""
    run: dict[str, Any] = {"device": device_name, "backend": d.backend or "none"}
    run["amp"] = str(dtype or "off")
    run |= {"compile": cfg.compile, "world_size": d.world, "torch": torch.__version__}
    params = sum(p.numel() for p in model.parameters())
    say(
        d,
        f"{d.world} rank(s) on {device_name} ({d.backend or 'no process group'}) · "
        f"{params / 1e6:.2f}M params · "
        f"amp {run['amp']} · compile {cfg.compile} · steps {start}→{cfg.steps}",
        "start",
        **run,
        params=params,
        start_step=start,
        steps=cfg.steps,
    )
    return run


def train(cfg: TrainConfig, d: Dist) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tokens = data.load_tokens(cfg.data, cfg.seed)
    model = LM(data.VOCAB_SIZE, cfg.seq_len, cfg.d_model, cfg.layers, cfg.heads).to(d.device)
    # fused on CUDA: one kernel for the whole update instead of a few per parameter group
    # (measured on an H200: see docs/benchmarks.md, "GPU")
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        fused=d.device.type == "cuda",
    )
    start, prog = resume(cfg, d, model, opt)
    wrapped: torch.nn.Module = model
    if d.backend is not None:
        ids = [d.local_rank] if d.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    fwd: Any = wrapped if cfg.compile == "off" else torch.compile(wrapped, backend=cfg.compile)
    dtype = amp_dtype(cfg, d)
    n_matmul = matmul_params(model)
    fpt = flops_per_token(n_matmul, cfg.layers, cfg.d_model, cfg.seq_len)
    device_name = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else "cpu"
    peak = peak_tflops(device_name) if d.device.type == "cuda" else None
    run = announce(cfg, d, model, start, dtype, device_name)
    global_tokens = cfg.tokens_per_rank_step * d.world
    with telemetry(d, run, start, cfg.steps) as tm:
        loss = torch.zeros(())
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            x, y = data.batch(tokens, cfg.seed, step, d.rank, cfg.batch_size, cfg.seq_len)
            x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
            ctx = torch.autocast(d.device.type, dtype=dtype) if dtype else nullcontext()
            with ctx:
                loss = fwd(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            opt.step()
            if d.device.type == "cuda":
                torch.cuda.synchronize(d.device)
            if step - start >= WARMUP_STEPS_UNTIMED:
                prog.step_s.append(time.perf_counter() - t0)
                if tm is not None:
                    tm.observe_step(prog.step_s[-1], global_tokens)
            done = step + 1
            if tm is not None:
                tm.set(step=done)
            if done % cfg.log_every == 0 or done == cfg.steps or step == 0:
                log_step(
                    cfg,
                    d,
                    done,
                    mean_across(d, loss),
                    float(norm),
                    prog,
                    global_tokens,
                    fpt,
                    peak,
                    tm,
                )
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != cfg.steps:
                save(cfg, d, done, model, opt, prog)
    save(cfg, d, cfg.steps, model, opt, prog)
    return summarize(cfg, d, model, prog, start, global_tokens, fpt, peak, device_name)


def throughput(prog: Progress, global_tokens: int) -> tuple[float | None, float | None]:
    """(tokens/s, median step ms) over the timed steps, or Nones before any step was timed."""
    if not prog.step_s:
        return None, None
    ordered = sorted(prog.step_s)
    median = ordered[len(ordered) // 2]
    return global_tokens * len(prog.step_s) / sum(prog.step_s), median * 1e3


def log_step(
    cfg: TrainConfig,
    d: Dist,
    done: int,
    loss: float,
    norm: float,
    prog: Progress,
    global_tokens: int,
    fpt: int,
    peak: float | None,
    tm: TrainingMetrics | None = None,
) -> None:
    prog.history.append([done, loss])
    prog.grad_norm = norm
    tps, ms = throughput(prog, global_tokens)
    util = mfu(tps, fpt, peak, d.world) if (tps and peak) else None
    lr = lr_at(cfg, done - 1)
    parts = [f"step {done}/{cfg.steps}", f"loss {loss:.4f}", f"grad-norm {norm:.3f}"]
    if tps and ms:
        parts += [f"{ms:.1f} ms/step", f"{tps:,.0f} tokens/s"]
    if util is not None:
        parts.append(f"MFU {util:.1%}")
    row: dict[str, float | None] = {"step": done, "loss": loss, "grad_norm": norm, "lr": lr}
    row |= {"step_ms": ms, "tokens_per_s": tps, "mfu": util}
    say(d, " · ".join(parts), "step", **row)
    if tm is not None:
        tm.set(step=done, loss=loss, grad_norm=norm, learning_rate=lr, tokens_per_second=tps,
               mfu=util)  # fmt: skip
    if d.rank == 0 and cfg.metrics:
        with open(cfg.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(row | {"time": time.time()}) + "\n")


def summarize(
    cfg: TrainConfig,
    d: Dist,
    model: LM,
    prog: Progress,
    start: int,
    global_tokens: int,
    fpt: int,
    peak: float | None,
    device_name: str,
) -> dict[str, Any]:
    mine = digest(model)
    digests = [mine]
    if d.backend is not None:
        gathered: list[Any] = [None] * d.world
        dist.all_gather_object(gathered, mine)
        digests = [str(x) for x in gathered]
    tps, ms = throughput(prog, global_tokens)
    util = mfu(tps, fpt, peak, d.world) if (tps and peak) else None
    return {
        "steps": cfg.steps,
        "resumed_from_step": start,
        "world_size": d.world,
        "device": device_name,
        "backend": d.backend,
        "amp": cfg.amp,
        "compile": cfg.compile,
        "params": sum(p.numel() for p in model.parameters()),
        "first_loss": prog.history[0][1] if prog.history else None,
        "final_loss": prog.history[-1][1] if prog.history else None,
        "grad_norm": prog.grad_norm,
        "tokens_per_s": tps,
        "step_ms_median": ms,
        "flops_per_token": fpt,
        "peak_tflops_per_gpu": peak,
        "mfu": util,
        "param_digests": digests,
        "params_identical": len(set(digests)) == 1,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.data is not None and not Path(cfg.data).is_file():
        print(f"error: --data {cfg.data}: no such file", file=sys.stderr)
        print(
            "hint: pass a UTF-8 text file, or leave --data out for the bundled corpus",
            file=sys.stderr,
        )
        return 2
    for out in (cfg.summary, cfg.metrics):
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
    d = setup()
    try:
        summary = train(cfg, d)
        if d.backend is not None:
            dist.barrier()  # leave together: no rank tears gloo down under a peer's collective
    finally:
        if d.backend is not None:
            dist.destroy_process_group()
    tps = summary["tokens_per_s"]
    say(
        d,
        f"done: {cfg.steps} steps · loss {summary['first_loss']:.4f} → {summary['final_loss']:.4f}"
        + (f" · {tps:,.0f} tokens/s" if tps else "")
        + (
            f" · MFU {summary['mfu']:.1%} of {summary['peak_tflops_per_gpu']} TFLOP/s"
            if summary["mfu"]
            else ""
        )
        + f" · params identical on all ranks: {summary['params_identical']}",
        "done",
        steps=cfg.steps,
        final_loss=summary["final_loss"],
        tokens_per_s=tps,
        mfu=summary["mfu"],
        params_identical=summary["params_identical"],
    )
    if d.rank == 0 and cfg.summary:
        write_text_atomic(Path(cfg.summary), json.dumps(summary, indent=2) + "\n")
    return 0
