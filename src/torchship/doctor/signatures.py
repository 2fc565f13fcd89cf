"""Failure signatures: how failures show themselves in text, as data (data/signatures.toml).

A signature says which lines name a failure (anchors + a pattern), what confirms or rules it out
(predicates over the facts), and what to tell the user (message and fix templates). Adding a kind
of failure is one entry in the data file plus its real reports in tests/data/reports/.

The scan is linear in the text: each anchor is found with str.find over the whole text, and the
pattern runs only on a window of at most WINDOW characters around each occurrence, so no pattern
can go quadratic on a megabyte-long progress-bar line.
"""

from __future__ import annotations

import bisect
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from torchship.doctor.facts import Facts
from torchship.doctor.layers import LAYERS

WINDOW = 600  # characters on each side of an anchor that a pattern may see
MAX_DISTINCT = 200  # distinct lines one anchor is tried on (a log repeats a line many times)
MAX_TRIES = 20_000  # occurrences of one anchor looked at in all: the scan's work stays bounded
SEVERITIES = ("error", "warning", "info")
_FIELDS = {
    "id",
    "code",
    "layer",
    "severity",
    "anchors",
    "pattern",
    "when",
    "unless",
    "supersedes",
    "message",
    "fix",
    "reports",
}
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True, slots=True)
class Hit:
    """One line of the text that a signature matched."""

    signature: Signature
    line_no: int  # 1-based
    line: str  # the line, cut to the window the pattern saw
    groups: Mapping[str, str]
    span: tuple[int, int] = (0, 0)  # the match within `line`
    prose: bool = False  # the phrase stands in a sentence of the reporter's, not in an error

    @property
    def evidence(self) -> str:
        start = max(0, self.span[0] - 60)
        text = self.line[start : max(self.span[1] + 100, start + 160)].strip()
        return f"line {self.line_no}: {'…' if start else ''}{text[:200]}"


@dataclass(frozen=True, slots=True)
class Signature:
    id: str
    code: str
    layer: str
    severity: str
    anchors: tuple[str, ...]
    source: str  # the pattern, compiled on first use: most signatures never meet their anchor
    message: str
    fix: str
    when: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    supersedes: tuple[str, ...] = ()
    reports: tuple[str, ...] = ()

    @property
    def pattern(self) -> re.Pattern[str]:
        compiled = _COMPILED.get(self.source)
        if compiled is None:
            compiled = _COMPILED[self.source] = re.compile(self.source, re.IGNORECASE)
        return compiled

    def render(self, template: str, hit: Hit) -> str:
        values = {"line": hit.line.strip()[:160], **{k: v for k, v in hit.groups.items() if v}}
        return string.Formatter().vformat(template, (), _Defaulting(values))


_COMPILED: dict[str, re.Pattern[str]] = {}


class _Defaulting(dict[str, str]):
    """Template values; a group that did not take part reads as 'unknown'."""

    def __missing__(self, key: str) -> str:
        return "unknown"


class SignatureError(ValueError):
    """The signatures data file is malformed (a bug in torchship, caught by its tests)."""


def _strings(entry: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SignatureError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def parse_signatures(data: dict[str, Any], check_patterns: bool = True) -> tuple[Signature, ...]:
    """The signatures of a data file; with `check_patterns`, every pattern is compiled now (the
    tests do), else on first use (a command's start does not pay for 70 patterns)."""
    entries = data.get("signature")
    if not isinstance(entries, list) or set(data) != {"signature"}:
        raise SignatureError("signatures: expected only [[signature]] tables")
    out: list[Signature] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"signature #{i + 1} ({entry.get('id', '?')})"
        unknown = set(entry) - _FIELDS
        if unknown:
            raise SignatureError(f"{where}: unknown field(s) {sorted(unknown)}")
        for key in ("id", "code", "layer", "severity", "pattern", "message", "fix"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise SignatureError(f"{where}: {key} is required (a string)")
        if entry["id"] in seen:
            raise SignatureError(f"{where}: id {entry['id']!r} is used twice")
        seen.add(entry["id"])
        if entry["severity"] not in SEVERITIES or entry["layer"] not in LAYERS:
            raise SignatureError(f"{where}: severity or layer is not one of the known ones")
        anchors = _strings(entry, "anchors", where)
        if not anchors or any(a != a.lower() or not a.isascii() for a in anchors):
            raise SignatureError(f"{where}: anchors must be lower-case ASCII, at least one")
        when, unless = _strings(entry, "when", where), _strings(entry, "unless", where)
        for name in (*when, *unless):
            if name not in PREDICATES:
                raise SignatureError(f"{where}: unknown predicate {name!r}")
        if check_patterns:
            try:
                re.compile(entry["pattern"], re.IGNORECASE)
            except re.error as e:
                raise SignatureError(f"{where}: pattern does not compile ({e})") from None
        out.append(
            Signature(
                id=entry["id"],
                code=entry["code"],
                layer=entry["layer"],
                severity=entry["severity"],
                anchors=anchors,
                source=entry["pattern"],
                message=entry["message"],
                fix=entry["fix"],
                when=when,
                unless=unless,
                supersedes=_strings(entry, "supersedes", where),
                reports=_strings(entry, "reports", where),
            )
        )
    return tuple(out)


# Beside this module, as compat's matrix is: importlib.resources would find it as well, but it
# imports tempfile (with random and shutil, ~11 ms of `run`'s preflight) and zipfile, and
# torchship is never imported from a zip archive.
SIGNATURES_FILE = Path(__file__).parent / "data" / "signatures.toml"


@cache
def load_signatures() -> tuple[Signature, ...]:
    text = SIGNATURES_FILE.read_text("utf-8")
    return parse_signatures(tomllib.loads(text), check_patterns=False)


class Text:
    """A text prepared for scanning: ASCII-lower-cased copy (same length) and line offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = text.translate(_ASCII_LOWER)
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def line_no(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def window(self, offset: int, length: int) -> tuple[str, int]:
        """(the line around [offset, offset+length) cut to WINDOW characters each side, where
        the window starts in the text)."""
        n = self.line_no(offset)
        start = self.starts[n - 1]
        end = self.starts[n] - 1 if n < len(self.starts) else len(self.text)
        first = max(start, offset - WINDOW)
        return self.text[first : min(end, offset + length + WINDOW)], first


# A line that has the shape of an emitted error or log line, not of a sentence.
_EMITTED = re.compile(
    r"^\s*(?:[>|#*`\[(]|\d|[\w.]*(?:Error|Exception|Warning|Warn|Fatal)\b|E\s|"
    r"(?:ERROR|WARN(?:ING)?|FATAL|CRITICAL|INFO|DEBUG)\b|\w+(?:\.\w+)*:\s)"
    r"|\b(?:NCCL|NVRM|nvidia-smi|modprobe|dmesg|kernel):"
)
# Words of the reporter's own sentence before the phrase: narration, or the phrase negated.
_NARRATION = re.compile(
    r"\b(?:I|I'm|I've|we|we've|we're|my|our|read|says|said|say|mentions?|seems?|thought|"
    r"similar|related|usual|means?|docs?|documentation)\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(
    r"\b(?:fixed|solved|resolved|no longer|not the usual|not an?|to avoid|avoid(?:s|ed)?|prevent|"
    r"instead of|used to|last (?:year|month|week)|no more|not seeing|not getting|have no|"
    r"without|never)\b",
    re.IGNORECASE,
)


_CLAUSE = re.compile(r"[.:;!?]\s")


def _prose(window: str, start: int) -> tuple[bool, bool]:
    """(in prose, negated): where the phrase at `start` stands in a sentence of the reporter's.
    Only the clause before the phrase counts: "I get this error: X" shows X; "to avoid X",
    "I fixed X" negate it; "I read that X" quotes it."""
    before = window[:start]
    clause = _CLAUSE.split(before[-80:])[-1]
    negated = bool(_NEGATED.search(clause))
    if not clause.strip():
        return False, negated  # the output itself, or introduced as such ("...error: X")
    if _EMITTED.match(before) and not _NARRATION.search(before[:80]):
        return False, negated
    return bool(_NARRATION.search(clause)), negated


def scan(text: Text, signatures: tuple[Signature, ...]) -> list[Hit]:
    """Every (signature, line) match, in line order; one hit per signature and line. A phrase
    negated in the reporter's own sentence ("I fixed X", "to avoid X") is no hit; one quoted in a
    sentence is a hit marked `prose`."""
    hits: dict[tuple[str, int], Hit] = {}
    for sig in signatures:
        for anchor in sig.anchors:
            pos, tried = text.lower.find(anchor), 0
            seen: set[str] = set()
            while pos >= 0 and tried < MAX_TRIES and len(seen) < MAX_DISTINCT:
                tried += 1
                line_no = text.line_no(pos)
                nxt = text.starts[line_no] if line_no < len(text.starts) else len(text.text)
                if (sig.id, line_no) not in hits:
                    window, _ = text.window(pos, len(anchor))
                    content = window.strip()
                    if content not in seen:
                        seen.add(content)
                        m = sig.pattern.search(window)
                        if m:
                            prose, negated = _prose(window, m.start())
                            if not negated:
                                groups = {k: v for k, v in m.groupdict().items() if v is not None}
                                hits[(sig.id, line_no)] = Hit(
                                    sig, line_no, window, groups, m.span(), prose
                                )
                pos = text.lower.find(anchor, max(nxt, pos + 1))
    return sorted(hits.values(), key=lambda h: (h.line_no, h.signature.id))


# --- predicates: the facts that confirm or rule a signature out ------------------------------

Predicate = Callable[[Facts, Hit], bool]


def _in_container(f: Facts, hit: Hit) -> bool:
    return f.container is not None


def _nvidia_smi_failed(f: Facts, hit: Hit) -> bool:
    return "nvidia-smi-failed" in f.sources


_TORCH_OWN = re.compile(r"torch/lib/lib(?:torch|c10|shm)\w*\.so", re.IGNORECASE)


def _torch_own_library_line(f: Facts, hit: Hit) -> bool:
    """The undefined symbol is in one of torch's own libraries, not an extension's."""
    return bool(_TORCH_OWN.search(hit.line))


_LISTING = re.compile(r"^\s*(?:-+>\s*)?\d{1,6}\s{2,}\S|\braise\s+\w+\(")


def _source_listing(f: Facts, hit: Hit) -> bool:
    """The line is source code shown in a traceback (IPython's numbered listing, a `raise`),
    not the error that happened."""
    return bool(_LISTING.search(hit.line))


def _mig_mentioned(f: Facts, hit: Hit) -> bool:
    return "mig-mentioned" in f.sources or any(
        (g.mig_mode or "").lower() == "enabled" for g in f.gpus
    )


_AMPERE_CC = re.compile(r"^(?:8|9|1\d)\.\d$")


def _ampere_mentioned(f: Facts, hit: Hit) -> bool:
    return "ampere-mentioned" in f.sources or any(
        _AMPERE_CC.match(g.cc or "") or AMPERE_NAME.search(g.name) for g in f.gpus
    )


def _cvd_before_import(f: Facts, hit: Hit) -> bool:
    """CUDA_VISIBLE_DEVICES set in code before the program's `import torch`: the right way."""
    where = f.sources.get("import-torch", "")
    if not where.startswith("line "):
        return False
    return hit.line_no < int(where.split(":", 1)[0].removeprefix("line "))


# Ampere and newer GPUs by name (TF32 by default, bf16): what a report names in prose.
AMPERE_NAME = re.compile(
    r"\b(?:RTX\s?(?:A\d{4}|[345]0[5-9]0(?:\s?Ti)?)|A100|A800|H100|H800|H200|GH200|B200|GB200|"
    r"A10G?|A30|A40|A16|A2|L4|L40S?|A[456]000|RTX\s?PRO|GB10|"
    r"(?:(?<=on )|(?<=an )|(?<=a ))[345]0[5-9]0(?:\s?Ti)?)\b",
    re.IGNORECASE,
)

PREDICATES: dict[str, Predicate] = {
    "in-container": _in_container,
    "nvidia-smi-failed": _nvidia_smi_failed,
    "torch-own-library-line": _torch_own_library_line,
    "source-listing": _source_listing,
    "mig-mentioned": _mig_mentioned,
    "ampere-mentioned": _ampere_mentioned,
    "domain-library-mentioned": lambda f, hit: "domain-library-mentioned" in f.sources,
    "docker-default-shm": lambda f, hit: "shm-docker-default" in f.sources,
    "network-error": lambda f, hit: "network-error" in f.sources,
    "multi-rank-launch": lambda f, hit: "multi-rank" in f.sources,
    "cvd-before-import": _cvd_before_import,
    "macos": lambda f, hit: "mac" in (f.os or "").lower() or "darwin" in (f.os or "").lower(),
}


def applies(hit: Hit, facts: Facts) -> bool:
    """The signature's predicates hold for this hit; a line of source code shown in a traceback
    (IPython's numbered listing, a `raise`) is never the error that happened."""
    sig = hit.signature
    if _source_listing(facts, hit):
        return False
    return all(PREDICATES[p](facts, hit) for p in sig.when) and not any(
        PREDICATES[p](facts, hit) for p in sig.unless
    )
