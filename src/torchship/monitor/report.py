"""`torchship report JOB`: one self-contained HTML page about a run — loss, throughput and
step time from the workload's metrics.jsonl, GPU utilisation and memory over time from the
supervisor's gpus.jsonl, where it ran and why, what it cost — with every plot inlined as a PNG
(no scripts, no links out: it opens from a mail attachment or an air-gapped share).

gather() reads (job record, run folder) into a RunReport; render() turns that into HTML.
What is missing (a Kubernetes run folder that stayed in the cluster, a CPU run without GPU
samples, malformed lines) is said on the page, never silently left out. Plots need matplotlib
(the `plot` extra).
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship.conventions import (
    EXIT_FILE,
    GPU_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    SUPERVISOR_FILE,
    read_json,
)
from torchship.state import TERMINAL, Event, Job


@dataclass
class RunReport:
    job: Job
    events: list[Event]
    run_dir: Path | None
    steps: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl rows
    gpus: list[dict[str, Any]] = field(default_factory=list)  # gpus.jsonl rows
    summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # what is missing, and why
    process_span: tuple[float | None, float | None] = (None, None)  # the supervisor's records

    @property
    def started_at(self) -> float | None:
        """When the job's processes started (the supervisor's record), else when the store
        first saw it running (a short job can end before anyone looks)."""
        seen = next((e.at for e in self.events if e.state == "running"), None)
        return self.process_span[0] or seen

    @property
    def ended_at(self) -> float | None:
        if self.job.state not in (*TERMINAL, "lost"):
            return None
        return self.process_span[1] or self.job.updated_at

    def cost_usd(self, now: float) -> float | None:
        """The placement's rate × the hours from submission to the end (or now): the same
        figure `torchship_cost_usd_total` accrues."""
        rate = (self.job.placement or {}).get("usd_per_hour")
        if not isinstance(rate, int | float):
            return None
        end = self.ended_at or now
        return float(rate) * max(0.0, end - self.job.created_at) / 3600


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The objects of a JSON-lines file, and how many lines were not one (a torn last line
    of a killed run, say)."""
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def gather(job: Job, events: list[Event], run_dir: Path | None) -> RunReport:
    r = RunReport(job, events, run_dir if run_dir and run_dir.is_dir() else None)
    if r.run_dir is None:
        where = f" ({run_dir})" if run_dir else ""
        r.notes.append(
            f"no run folder on this machine{where}: a Kubernetes run keeps it in the cluster; "
            "its series are in Prometheus (see docs/monitoring.md)"
        )
        return r
    for name, target in ((METRICS_FILE, r.steps), (GPU_FILE, r.gpus)):
        path = r.run_dir / name
        if not path.is_file():
            continue
        rows, bad = read_jsonl(path)
        target.extend(rows)
        if bad:
            r.notes.append(f"{name}: {bad} line(s) were not JSON objects and are left out")
    if not r.steps:
        r.notes.append(f"no training metrics ({METRICS_FILE}): not the reference workload, "
                       "or it stopped before its first step")  # fmt: skip
    if not r.gpus:
        r.notes.append(f"no GPU samples ({GPU_FILE}): the run had no NVML to read "
                       "(a CPU machine, or nvidia-ml-py not installed)")  # fmt: skip
    r.process_span = (_time_in(r.run_dir / SUPERVISOR_FILE, "started_at"),
                      _time_in(r.run_dir / EXIT_FILE, "ended_at"))  # fmt: skip
    r.summary = read_json(r.run_dir / SUMMARY_FILE)
    if r.summary is None and (r.run_dir / SUMMARY_FILE).is_file():
        r.notes.append(f"{SUMMARY_FILE} is not a JSON object")
    return r


def _time_in(path: Path, key: str) -> float | None:
    value = (read_json(path) or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


# --- plots ----------------------------------------------------------------------------------


def _series(rows: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        a, b = row.get(x), row.get(y)
        if isinstance(a, int | float) and isinstance(b, int | float):
            xs.append(float(a))
            ys.append(float(b))
    return xs, ys


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plots(r: RunReport) -> list[tuple[str, str]]:
    """(title, data URI) per plot that has data, in the page's order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    step_plots = (("Loss", "loss", "loss"), ("Throughput", "tokens_per_s", "tokens/s"),
                  ("Step time", "step_ms", "ms per step (median so far)"),
                  ("Gradient norm", "grad_norm", "norm before clipping"))  # fmt: skip
    for title, key, label in step_plots:
        xs, ys = _series(r.steps, "step", key)
        if not xs:
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, color="#1f6feb")
        ax.set(xlabel="step", ylabel=label, title=title)
        ax.grid(alpha=0.3)
        out.append((title, _png(fig)))
        plt.close(fig)
    mine = [g for g in r.gpus if g.get("job")] or r.gpus  # the job's GPUs when attributable
    t0 = r.started_at or r.job.created_at
    for title, key, label in (("GPU utilisation", "util_pct", "%"),
                              ("GPU memory used", "mem_used_mib", "MiB")):  # fmt: skip
        by_gpu: dict[Any, list[dict[str, Any]]] = {}
        for g in mine:
            by_gpu.setdefault(g.get("gpu"), []).append(g)
        if not by_gpu:
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        for gpu, rows in sorted(by_gpu.items(), key=lambda kv: str(kv[0])):
            xs, ys = _series(rows, "time", key)
            ax.plot([(x - t0) / 60 for x in xs], ys, linewidth=1.2, label=f"GPU {gpu}")
        ax.set(xlabel="minutes since start", ylabel=label, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        out.append((title, _png(fig)))
        plt.close(fig)
    return out


# --- the page -------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}main{max-width:1280px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.sub{color:#59636e}.state{display:inline-block;padding:2px 10px;border-radius:12px;
font-weight:600;font-size:12px;color:#fff;background:#59636e}
.succeeded{background:#1a7f37}.failed,.lost{background:#cf222e}.running{background:#0969da}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.card{background:#fff;border:1px solid #d1d9e0;border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:18px}.card span{color:#59636e;font-size:12px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #d1d9e0;border-radius:8px;padding:8px}
figure img{width:100%;height:auto}table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #d1d9e0;padding:4px 10px;text-align:left;vertical-align:top}
.notes li{color:#9a6700}
"""


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "—"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, int | float) else "—"


def cards(r: RunReport, now: float) -> list[tuple[str, str]]:
    s = r.summary or {}
    last = r.steps[-1] if r.steps else {}
    start, end = r.started_at, r.ended_at
    ran = (end or now) - start if start else None
    cost = r.cost_usd(now)
    placement = r.job.placement or {}
    return [
        ("site", str(placement.get("site") or r.job.site or "—")),
        ("ran for", _duration(ran)),
        ("cost", f"${cost:,.2f}" if cost is not None else "not priced"),
        ("final loss", _num(s.get("final_loss", last.get("loss")), ".4f")),
        ("tokens/s", _num(s.get("tokens_per_s", last.get("tokens_per_s")), ",.0f")),
        ("median step", _num(s.get("step_ms_median", last.get("step_ms")), ".1f") + " ms"),
        (
            "MFU" + ("" if s.get("mfu") is not None else " (GPUs with a known peak)"),
            _num(s.get("mfu"), ".1%"),
        ),
        ("steps", _num(last.get("step"), "d") + (f" / {s['steps']}" if "steps" in s else "")),
    ]


def render(
    r: RunReport, now: float | None = None, images: list[tuple[str, str]] | None = None
) -> str:
    now = time.time() if now is None else now
    job, e = r.job, html.escape
    images = plots(r) if images is None else images
    placement = job.placement or {}
    facts = [
        ("job id", job.id), ("name", job.name), ("state", job.state),
        ("exit code", "—" if job.exit_code is None else str(job.exit_code)),
        ("site", (job.site or placement.get("site") or "—")  # its name, and its handle's kind
         + (f" ({job.handle.split('://', 1)[0]})" if job.handle and "://" in job.handle else "")),
        ("placement", str(placement.get("decision", "asked"))
         + (f": {placement['reason']}" if placement.get("reason") else "")),
        ("rate", f"${placement['usd_per_hour']:,.2f}/h" if isinstance(
            placement.get("usd_per_hour"), int | float) else "—"),
        ("submitted", _when(job.created_at)), ("started", _when(r.started_at)),
        ("ended", _when(r.ended_at)), ("lock", job.lock_hash or "—"),
        ("run folder", str(r.run_dir) if r.run_dir else "—"),
    ]  # fmt: skip
    if r.summary:
        for key in ("device", "world_size", "backend", "amp", "compile", "torch",
                    "params_identical"):  # fmt: skip
            if key in r.summary:
                facts.append((key.replace("_", " "), str(r.summary[key])))
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    card_html = "".join(f'<div class="card"><span>{e(k)}</span><b>{e(v)}</b></div>'
                        for k, v in cards(r, now))  # fmt: skip
    figs = "".join(f'<figure><img alt="{e(t)}" src="{uri}"></figure>' for t, uri in images)
    history = "".join(
        f"<tr><td>{e(_when(ev.at))}</td><td>{e(ev.state)}</td>"
        f"<td>{e(str((ev.detail or {}).get('reason', '')))}</td></tr>"
        for ev in r.events
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in r.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>torchship report · {e(job.name)} · {e(job.id)}</title><style>{CSS}</style></head>
<body><main>
<h1>{e(job.name)} <span class="state {e(job.state)}">{e(job.state)}</span></h1>
<div class="sub">job {e(job.id)} · report made {e(_when(now))}</div>
<h2>At a glance</h2><div class="cards">{card_html}</div>
<h2>Plots</h2><div class="plots">{figs or "<p>No series to plot.</p>"}</div>
{f'<h2>Missing</h2><ul class="notes">{notes}</ul>' if notes else ""}
<h2>Where it ran and what it cost</h2><table>{rows}</table>
<h2>History</h2><table><tr><th>at</th><th>state</th><th>reason</th></tr>{history}</table>
</main></body></html>
"""
