"""Training metrics as Prometheus series, served by the reference workload while it trains.

One process per node serves them (local rank 0), when TORCHSHIP_METRICS_PORT (or the
workload's `--metrics-port`) is set; the Kubernetes and docker sites set it to TRAINING_PORT.
Every series carries `torchship_job` (TORCHSHIP_JOB_ID) and `rank` (the serving process's
global rank), so per-node step times show a straggler:

    torchship_train_step                 last completed step
    torchship_train_steps_target         the step the run ends at
    torchship_train_loss                 mean loss across ranks at the last logged step
    torchship_train_grad_norm            gradient norm before clipping
    torchship_train_learning_rate
    torchship_train_tokens_per_second    global tokens/s over the timed steps
    torchship_train_mfu                  model FLOPs utilisation, 0–1 (GPUs with a known peak)
    torchship_train_step_seconds         histogram of every timed step's duration
    torchship_train_tokens_total         counter of global tokens trained on (this attempt)
    torchship_train_info{device,backend,amp,compile,world_size,torch}  1

Nothing here imports torch; prometheus_client is a dependency of torchship and ships in every
image's agent.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from torchship.conventions import METRICS_ADDR_ENV, METRICS_PORT_ENV

PORT_ENV = METRICS_PORT_ENV
ADDR_ENV = METRICS_ADDR_ENV
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
GAUGES = (
    ("step", "Last completed training step."),
    ("steps_target", "The step the run ends at."),
    ("loss", "Mean training loss across ranks at the last logged step."),
    ("grad_norm", "Gradient norm (before clipping) at the last logged step."),
    ("learning_rate", "Learning rate at the last logged step."),
    ("tokens_per_second", "Global training throughput over the timed steps (tokens/s)."),
    ("mfu", "Model FLOPs utilisation (0-1), where the GPU's peak is known."),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    port: int  # the bound port (the asked one, or the OS's pick for 0)
    addr: str


def port_from_env(env: dict[str, str] | None = None) -> int | None:
    """The port asked for in TORCHSHIP_METRICS_PORT; None when unset; ValueError when bad."""
    text = (os.environ if env is None else env).get(PORT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{PORT_ENV}={text} is not a TCP port (0-65535)")
    return int(text)


class TrainingMetrics:
    """The workload's series in a registry of their own, labelled with job and rank."""

    def __init__(self, job: str, rank: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("torchship_job", "rank")
        values = (job, str(rank))
        self._gauges = {
            name: Gauge(f"torchship_train_{name}", text, labels, registry=self.registry).labels(
                *values
            )
            for name, text in GAUGES
        }
        self._steps = Histogram(
            "torchship_train_step_seconds",
            "Duration of each timed training step (s).",
            labels,
            buckets=STEP_BUCKETS,
            registry=self.registry,
        ).labels(*values)
        self._tokens = Counter(
            "torchship_train_tokens",
            "Global tokens trained on in this attempt.",
            labels,
            registry=self.registry,
        ).labels(*values)
        self._info = Gauge(
            "torchship_train_info",
            "The run's setup (value 1).",
            (*labels, "device", "backend", "amp", "compile", "world_size", "torch"),
            registry=self.registry,
        )
        self._values = values
        self._server: Any = None

    def describe_run(self, **setup: Any) -> None:
        keys = ("device", "backend", "amp", "compile", "world_size", "torch")
        self._info.labels(*self._values, *(str(setup.get(k, "")) for k in keys)).set(1)

    def set(self, **values: float | None) -> None:
        """Set gauges by short name (`loss=…`); None leaves a gauge as it was."""
        for name, value in values.items():
            if value is not None:
                self._gauges[name].set(value)

    def observe_step(self, seconds: float, tokens: int) -> None:
        self._steps.observe(seconds)
        self._tokens.inc(tokens)

    def serve(self, port: int, addr: str) -> Endpoint | None:
        """Serve /metrics on a daemon thread; None (and one line on stderr) when it cannot bind:
        training goes on without its endpoint rather than failing."""
        from prometheus_client import start_http_server

        try:
            server, _thread = start_http_server(port, addr, registry=self.registry)
        except OSError as e:
            print(
                f"[torchship.workload] training metrics are off: cannot listen on "
                f"{addr}:{port} ({e.strerror or e}); set {PORT_ENV} to a free port",
                file=sys.stderr,
                flush=True,
            )
            return None
        self._server = server
        return Endpoint(int(server.server_port), addr)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
