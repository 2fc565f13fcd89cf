"""Refresh each signature's `reports` list in src/torchship/doctor/data/signatures.toml from the
corpus: the real reports (tests/data/reports/) whose established cause is the signature's code
and on which the signature fires. Run after adding reports or signatures:

    python tools/signature_reports.py [--check]

--check changes nothing and exits 1 when the file is not up to date (the test suite runs it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.corpus import NONE, load_corpus  # noqa: E402

from torchship.compat.matrix import load_matrix  # noqa: E402
from torchship.doctor.reader import read  # noqa: E402
from torchship.doctor.signatures import Text, applies, load_signatures, scan  # noqa: E402

DATA = REPO / "src/torchship/doctor/data/signatures.toml"
MAX_LISTED = 6


def fired() -> dict[str, list[str]]:
    matrix = load_matrix()
    out: dict[str, set[str]] = {}
    for r in load_corpus():
        if r.cause == NONE:
            continue
        facts, _ = read(r.body, matrix)
        for h in scan(Text(r.body), load_signatures()):
            if h.signature.code == r.cause and applies(h, facts):
                out.setdefault(h.signature.id, set()).add(r.source)
    return {k: sorted(v)[:MAX_LISTED] for k, v in out.items()}


def rewrite(text: str, reports: dict[str, list[str]]) -> str:
    text = re.sub(r"\nreports = \[\n(?:  \"[^\"\n]*\",\n)*\]", "", text)
    out, current = [], None
    for line in text.split("\n"):
        m = re.match(r'^id = "(.+)"$', line)
        if m:
            current = m.group(1)
        out.append(line)
        if line.startswith("fix = ") and current:
            urls = reports.get(current, [])
            if urls:
                out.append("reports = [\n" + "".join(f'  "{u}",\n' for u in urls) + "]")
            current = None
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    old = DATA.read_text("utf-8")
    new = rewrite(old, fired())
    if args.check:
        if new != old:
            print(f"{DATA}: reports lists are stale; run python tools/signature_reports.py")
            return 1
        return 0
    DATA.write_text(new, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
