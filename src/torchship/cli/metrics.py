"""`torchship metrics serve [--port P] [--host H] [--cache-s S]`: the Prometheus exporter (GPU
metrics under dcgm-exporter's names, torchship's job metrics) until interrupted.
`torchship metrics dashboard [-o FILE]`: the Grafana dashboard for those series."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from torchship.errors import UsageError

# The exporter's defaults, repeated so that parsing these flags does not load the exporter (and
# with it the job store and the HTTP server); a test checks that they agree.
DEFAULT_PORT = 9401  # torchship.monitor.exporter.DEFAULT_PORT
DEFAULT_CACHE_S = 5.0  # torchship.monitor.exporter.DEFAULT_CACHE_S


def add_parser(sub: Any) -> None:
    p = sub.add_parser("metrics", help="Prometheus metrics: GPUs (DCGM names) and jobs")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="serve|dashboard")
    s = verbs.add_parser("serve", help="serve /metrics until interrupted")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for a scraper "
                   "elsewhere)")  # fmt: skip
    s.add_argument("--cache-s", type=float, default=DEFAULT_CACHE_S, metavar="S",
                   help="serve one reading of the GPUs and the job store to every scrape "
                   f"within S seconds (default {DEFAULT_CACHE_S:g}; 0: read on every "
                   "scrape)")  # fmt: skip
    s.set_defaults(run=run)
    d = verbs.add_parser("dashboard", help="print (or write) the Grafana dashboard JSON")
    d.add_argument("-o", "--output", metavar="FILE", help="write it here instead of stdout")
    d.set_defaults(run=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    from torchship._atomic import write_text_atomic
    from torchship.monitor.dashboard import dashboard_json

    text = dashboard_json()
    if not args.output:
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--output {out}: not a file in an existing folder",
                         "give a file name, e.g. torchship.json")  # fmt: skip
    write_text_atomic(out, text)
    print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    import threading

    from torchship.monitor.exporter import serve
    from torchship.monitor.gpus import open_reader

    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port", "give 1-65535")
    if not 0 <= args.cache_s <= 3600:
        raise UsageError(f"--cache-s {args.cache_s:g} is out of range",
                         "give 0-3600 seconds, below the scrape interval")  # fmt: skip
    reader, why = open_reader()
    try:
        server = serve(args.port, args.host, reader, why, cache_s=args.cache_s)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror}",
                         "pick another --port, or stop what holds it") from None  # fmt: skip
    print(f"serving http://{args.host}:{server.server_port}/metrics (Ctrl-C stops)", flush=True)
    threading.Event().wait()  # until KeyboardInterrupt: the CLI maps it to exit 130
    return 0
