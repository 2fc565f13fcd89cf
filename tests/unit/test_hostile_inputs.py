"""Hostile input files (issue 17, items 3 and 15).

- Every file a command reads, given a FIFO, /dev/zero, /dev/urandom, a directory, a 60 MB file
  or binary data, ends within 2 s with exit 2 and at most two lines (error, hint): the real CLI,
  `main()` in a forked child with a memory ceiling and an alarm, so a regression fails the test
  instead of hanging it or eating the machine's memory.
- Errors echo an excerpt of a user's value, never all of it (a 1 MB key or name).
- No silent fields: unknown top-level keys and tables are refused with the closest valid name.
- A structural fuzzer: real files (examples/, tests/data, the spec `torchship init` writes, a
  facts file read from a real collect_env report) mutated while staying valid TOML/JSON (a
  value of another type, inf/nan, 10**30, a 64 KB string, NUL and bidi characters, a deleted
  key, an added key, a nested table) and driven through the real loaders and what runs next
  on what they accept. Only TorchshipError may come out, with a short one-line message and a
  hint. Seeded and bounded: a few seconds.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import REPO
from torchship.cli.plan import write_plan
from torchship.compat.matrix import load_matrix
from torchship.doctor.collect_env import parse_collect_env
from torchship.doctor.diagnosis import diagnose_facts
from torchship.doctor.diff import diff
from torchship.doctor.facts import facts_from_json, read_facts
from torchship.errors import SpecError, TorchshipError, UsageError, excerpt
from torchship.init import render_spec
from torchship.lock import resolve_spec
from torchship.lock.model import read_lock
from torchship.place.policy import demand_from_job, place
from torchship.place.trace import parse_trace
from torchship.sites import load_sites
from torchship.spec.job import load_job
from torchship.spec.load import load_spec

EXAMPLES = REPO / "examples"
COLLECT_ENV = REPO / "tests" / "data" / "collect_env" / "torch-2.1.0-cu121-8xa100.txt"
MESSAGE_CHARS = 400  # errors.LINE_CHARS: what the CLI prints of a message at most

# --- special files and huge inputs, through the CLI ------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Valid files for the arguments that are not under test."""
    d = tmp_path_factory.mktemp("good")
    for name in ("torchship.toml", "job.toml", "torchship.lock"):
        shutil.copy(EXAMPLES / "quickstart" / name, d / name)
    shutil.copy(EXAMPLES / "hybrid" / "trace-week.csv", d / "trace.csv")
    facts = parse_collect_env(COLLECT_ENV.read_text(), load_matrix(), str(COLLECT_ENV))
    (d / "facts.json").write_text(json.dumps(facts.to_json()))
    return {"job": str(d / "job.toml"), "trace": str(d / "trace.csv"),
            "facts": str(d / "facts.json"), "project": str(d)}  # fmt: skip


@pytest.fixture(scope="module")
def special(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("special")
    os.mkfifo(d / "fifo")
    with (d / "huge").open("wb") as fh:  # sparse: 60 MB that takes no disk
        fh.truncate(60 * 2**20)
    (d / "binary").write_bytes(bytes(range(256)) * 16)
    (d / "empty-dir").mkdir()
    return {"fifo": str(d / "fifo"), "/dev/zero": "/dev/zero", "/dev/urandom": "/dev/urandom",
            "directory": str(d / "empty-dir"), "60 MB file": str(d / "huge"),
            "binary": str(d / "binary")}  # fmt: skip


# Each command's file arguments: {X} is the input under test, the others are valid files.
ENTRY_POINTS = {
    "resolve PROJECT": ["resolve", "{X}"],
    "lock PROJECT": ["lock", "{X}"],
    "lock --check PROJECT": ["lock", "--check", "{X}"],
    "plan JOB": ["plan", "{X}"],
    "plan --sites": ["plan", "{job}", "--sites", "{X}"],
    "run JOB --dry-run": ["run", "{X}", "--dry-run"],
    "run --site auto --sites": ["run", "{job}", "--site", "auto", "--sites", "{X}", "--dry-run"],
    "site check --sites": ["site", "check", "--sites", "{X}"],
    "site list --sites": ["site", "list", "--sites", "{X}"],
    "site add --sites": ["site", "add", "x", "--kind", "local", "--sites", "{X}"],
    "simulate TRACE": ["simulate", "{X}"],
    "simulate --sites": ["simulate", "{trace}", "--sites", "{X}"],
    "diff A B": ["diff", "{facts}", "{X}"],
    "doctor --facts": ["doctor", "--facts", "{X}"],
    "doctor --collect-env": ["doctor", "--collect-env", "{X}"],
    "doctor --lock": ["doctor", "--facts", "{facts}", "--lock", "{X}"],
}
INPUTS = ("fifo", "/dev/zero", "/dev/urandom", "directory", "60 MB file", "binary")
MEMORY_CEILING = 2**30  # reading /dev/zero whole is a MemoryError here, not the machine's
ALARM_S = 5  # a FIFO waited on ends as SIGALRM, and fails the test


def run_main(argv: list[str], err: Path) -> tuple[int, str, float]:
    """torchship's main(argv) in a forked child: (exit status, stderr, seconds)."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CEILING, MEMORY_CEILING))
            signal.alarm(ALARM_S)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            sys.stderr = err.open("w")
            from torchship.cli import main

            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err.read_text(), time.perf_counter() - start


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_special_or_huge_input_file_ends_fast_with_one_clear_line(
    entry: str, good: dict[str, str], special: dict[str, str], tmp_path: Path
) -> None:
    """Before: a FIFO hung `plan`, `site check`, `simulate`, `doctor --facts`; /dev/zero read
    until memory ran out; a 60 MB file was read whole."""
    failures = []
    for name in INPUTS:
        argv = [a.format(X=special[name], **good) for a in ENTRY_POINTS[entry]]
        code, err, took = run_main(argv, tmp_path / "stderr")
        lines = err.splitlines()
        if not (code == 2 and 1 <= len(lines) <= 2 and lines[0].startswith("error: ")
                and "Traceback" not in err and took < 2.0):  # fmt: skip
            failures.append(f"{name}: exit {code}, {took:.1f} s, stderr {err[:300]!r}")
    assert not failures, f"{entry}:\n" + "\n".join(failures)


def test_a_fifo_beside_the_job_is_not_waited_on(good: dict[str, str], tmp_path: Path) -> None:
    """A cloned repository whose torchship.toml is a FIFO: `lock` and `resolve` refuse it."""
    project = tmp_path / "p"
    project.mkdir()
    os.mkfifo(project / "torchship.toml")
    for argv in (["resolve", str(project)], ["lock", str(project)]):
        code, err, took = run_main(argv, tmp_path / "stderr")
        assert code == 2 and took < 2.0 and "Traceback" not in err, (argv, code, err)


# --- excerpts: an error never echoes a whole value ------------------------------------------


MB = "x" * 2**20


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("job.toml", f'[job]\nworkload = "reference"\nname = "{MB}"\n'),
        ("job.toml", f'[job]\nworkload = "reference"\n"{MB}" = 1\n'),
        ("job.toml", f'[job]\nworkload = "reference"\n[job.env]\n"{MB}-" = "1"\n'),
        ("job.toml", f'[job]\nworkload = "reference"\n[job.workload_args]\namp = "{MB}"\n'),
        ("job.toml", f'[job]\ncommand = ["x"]\negress = ["{MB}"]\n'),
        ("job.toml", f'"{MB}" = 1\n[job]\nworkload = "reference"\n'),
        ("torchship.toml", f'torch = "{MB}"\npython = "3.12"\n'),
        ("torchship.toml", f'torch = "2.9.1"\npython = "{MB}"\n'),
        ("torchship.toml", f'torch = "2.9.1"\npython = "3.12"\n[targets]\ndriver = "{MB}"\n'),
        ("torchship.toml", f'torch = "2.9.1"\npython = "3.12"\n[targets]\ngpus = ["{MB}"]\n'),
        ("torchship.toml", f'torch = "2.9.1"\npython = "3.12"\npackages = ["{MB} >= x"]\n'),
        ("torchship.toml", f'torch = "2.9.1"\npython = "3.12"\n[image]\n"{MB}" = 1\n'),
        ("facts.json", json.dumps({"kind": "torchship-facts", "schema_version": MB})),
        ("facts.json", json.dumps({"kind": "torchship-facts", "schema_version": 1, MB: 1})),
    ],
)
def test_errors_echo_an_excerpt_of_a_megabyte_value(file: str, text: str, tmp_path: Path) -> None:
    """Before: the job name was cut, but unknown keys, GPU names, versions, packages, workload
    arguments and facts fields were echoed whole (a 1 MB line on the terminal)."""
    path = tmp_path / file
    path.write_text(text)
    loader: Callable[[Path], object] = {"job.toml": load_job, "torchship.toml": _spec_resolved,
                                        "facts.json": read_facts}[file]  # fmt: skip
    with pytest.raises(TorchshipError) as e:
        loader(path)
    assert len(e.value.message) < 300 and len(e.value.hint) < 300, e.value.message[:400]
    assert "xxxx…" in e.value.message


def _spec_resolved(path: Path) -> object:
    return resolve_spec(load_spec(path), load_matrix())


def test_the_cli_prints_one_short_line_whatever_a_message_holds(tmp_path: Path) -> None:
    """The last wall: a message carrying a megabyte and line breaks prints as one line each."""
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nworkload = "reference"\n"{MB}\\nfake: line" = 1\n')
    code, err, _ = run_main(["plan", str(job)], tmp_path / "stderr")
    assert code == 2 and len(err) < 1000 and len(err.splitlines()) == 2, err[:1000]


def test_excerpt_is_short_and_one_line() -> None:
    assert excerpt("abc") == "'abc'"
    long = excerpt("a\n" * 10**6)
    assert len(long) < 120 and "\n" not in long and long.endswith("(2,000,000 characters)")
    assert excerpt(10**30) == str(10**30)
    assert excerpt(10**5000) == "<int too large to show>"  # str() refuses past 4300 digits


# --- no silent fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        # a [[data]] typo made a sensitive job public; the hint names the form to write
        ('[[data]]\npath = "d"\n', "data", "did you mean [[job.data]]?"),
        ("[envv]\nA = '1'\n", "envv", "did you mean [job.env]?"),
        ("nodes = 2\n", "nodes", "did you mean nodes = … under [job]?"),
        ("[colour]\nx = 1\n", "colour", "move it under [job]"),
    ],
)
def test_a_top_level_table_of_a_job_names_where_it_belongs(
    text: str, field: str, hint: str, tmp_path: Path
) -> None:
    (tmp_path / "job.toml").write_text(text + '[job]\nworkload = "reference"\n')
    with pytest.raises(SpecError) as e:
        load_job(tmp_path)
    assert e.value.field == field and e.value.hint.startswith(hint), (e.value, e.value.hint)


def test_a_misspelt_job_table_is_named(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text('[jobs]\nworkload = "reference"\n')
    with pytest.raises(SpecError, match="job: missing") as e:
        load_job(tmp_path)
    assert e.value.hint == "did you mean [job] (not [jobs])?"


def test_a_facts_file_refuses_unknown_fields_with_the_closest_name(good: dict[str, str]) -> None:
    """Before: unknown keys were dropped (a misspelt `torch_cuda` was a facts file without it)."""
    data = json.loads(Path(good["facts"]).read_text())
    data["torch_cudaa"] = data.pop("torch_cuda")
    with pytest.raises(UsageError, match=r"f\.json:torch_cudaa: unknown field") as e:
        facts_from_json(data, "f.json")
    assert e.value.hint == "did you mean 'torch_cuda'?"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ('torch = "2.9.1"\npython = "3.12"\n[target]\ngpus = []\n', "did you mean 'targets'?"),
        ('torch = "2.9.1"\npython = "3.12"\npackage = []\n', "did you mean 'packages'?"),
        ('[tool.torchship]\ntorch = "2.9.1"\npython = "3.12"\n[tool.torchship.imag]\n',
         "did you mean 'image'?"),
    ],
)  # fmt: skip
def test_a_spec_refuses_unknown_tables_with_the_closest_name(
    text: str, hint: str, tmp_path: Path
) -> None:
    name = "pyproject.toml" if text.startswith("[tool") else "torchship.toml"
    (tmp_path / name).write_text(text)
    with pytest.raises(SpecError, match="unknown field") as e:
        load_spec(tmp_path)
    assert e.value.hint == hint


# --- parser limits: nesting, digits, NUL ------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("job.toml", "[job]\nx = " + "[" * 2000 + "]" * 2000, "nested too deep"),
        ("job.toml", "[job]\nnodes = " + "9" * 5000, "Exceeds the limit"),
        ("torchship.toml", "a = " + "{b = " * 600 + "1" + "}" * 600, "nested too deep"),
        ("facts.json", "[" * 100_000 + "]" * 100_000, "nested too deep"),
        ("facts.json", '{"kind": "torchship-facts", "a": ' + "9" * 5000 + "}", "Exceeds the"),
        ("job.toml", '[job]\nname = "train\\n"\nworkload = "reference"\n', "not a valid job"),
        ("job.toml", '[job]\ncommand = ["python", "a\\u0000b"]\n', "NUL"),
        ("job.toml", '[job]\nworkload = "reference"\n[job.env]\nA = "\\u0000"\n', "NUL"),
        ("job.toml", '[job]\ncommand = ["x"]\negress = ["10.0.0.0/8:²"]\n', "not a port"),
        ("job.toml", '[job]\nworkload = "reference"\ncpus = nan\n', "not nan"),
        ("job.toml", '[job]\nworkload = "reference"\nnodes = 1_000_000_000_000\n', "1–10000"),
        ("job.toml", '[job]\nworkload = "reference"\n[job.workload_args]\nlr = nan\n', "is nan"),
        ("torchship.toml", 'torch = "2.9.1"\npython = "3.12"\nname = "a\\n"\n', "valid name"),
    ],
)
def test_parser_limits_are_one_clear_error(
    file: str, text: str, message: str, tmp_path: Path
) -> None:
    """Before: RecursionError and ValueError escaped tomllib and json (exit 3 "internal error");
    "train\\n" passed the name check ($ matches before a final line break); NUL reached argv and
    the environment; '²' is a digit to isdigit() and crashed int(); nan passed every check."""
    path = tmp_path / file
    path.write_text(text)
    loader: Callable[[Path], object] = {"job.toml": load_job, "torchship.toml": load_spec,
                                        "facts.json": read_facts}[file]  # fmt: skip
    with pytest.raises(UsageError, match=message) as e:
        loader(path)
    assert len(e.value.message) < 300 and e.value.hint


# --- the structural fuzzer -------------------------------------------------------------------

BIG = "x" * 2**16
VALUES: tuple[object, ...] = (
    0, -1, 10**30, -(10**30), 10**400, 1.5, math.inf, -math.inf, math.nan, True, False, "",
    BIG, "é\u202e\x00\n", "../../etc/passwd", "²", [], [1, "a"], [{}], [BIG], {}, {"k": 1},
)  # fmt: skip
Path_ = tuple[str | int, ...]


def _paths(node: object, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:2]):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _at(doc: Any, path: Path_) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def mutations(doc: dict[str, Any], seed: str, count: int) -> Iterator[tuple[str, Any]]:
    """`count` structural mutations of `doc`, chosen by `seed`: (what was done, the new doc)."""
    ops: list[tuple[Path_, str, object]] = []
    for path in _paths(doc):
        ops += [(path, "set", v) for v in VALUES]
        ops += [(path, "delete", None), (path, "nest", None), (path, "wrap", None)]
        if isinstance(_at(doc, path), dict):
            ops += [(path, "add", "colour"), (path, "add", BIG)]
    ops += [((), "add", "colour"), ((), "add", "data")]
    for path, op, value in random.Random(seed).sample(ops, min(count, len(ops))):
        new = copy.deepcopy(doc)
        if op == "add":
            _at(new, path)[value] = 1
        else:
            parent, key = _at(new, path[:-1]), path[-1]
            if op == "set":
                parent[key] = value
            elif op == "delete":
                del parent[key]
            else:
                parent[key] = {"k": parent[key]} if op == "nest" else [parent[key]]
        yield f"{op} {'.'.join(map(str, path))} {excerpt(value, 30)}", new


def _trimmed(doc: dict[str, Any]) -> dict[str, Any]:
    """A real lock with its package list cut to two: the same shape, a tenth of the parsing."""
    return {k: v[:2] if isinstance(v, list) else v for k, v in doc.items()}


def _toml(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


def _check(what: str, run: Callable[[], object], failures: list[str]) -> None:
    try:
        run()
    except TorchshipError as e:
        if not (e.hint and len(e.message) <= MESSAGE_CHARS and len(e.hint) <= MESSAGE_CHARS
                and "\n" not in e.message + e.hint):  # fmt: skip
            failures.append(f"{what}: {type(e).__name__} of {len(e.message)} chars: "
                            f"{e.message[:120]!r} hint {e.hint[:60]!r}")  # fmt: skip
    except Exception as e:  # what the fuzzer is for
        tb = traceback.extract_tb(e.__traceback__)[-1]
        failures.append(f"{what}: {type(e).__name__} at {Path(tb.filename).name}:{tb.lineno}: "
                        f"{str(e)[:100]}")  # fmt: skip


SITES = EXAMPLES / "hybrid" / "sites.toml"


def _job_then(path: Path) -> None:
    """A job as `plan -o` uses it: placed on the example sites, and rendered for one site of
    each kind (Kubernetes YAML, a SkyPilot task, the local script)."""
    job = load_job(path)
    sites = load_sites(SITES)
    place(demand_from_job(job), sites)
    kinds = {s.kind: s for s in sites}
    for site in (kinds["kubernetes"], kinds["skypilot"], kinds["local"]):
        write_plan(path.parent / "plan", job, None, site)


def _sites_then(path: Path) -> None:
    place(demand_from_job(load_job(EXAMPLES / "hybrid" / "job-2node.toml")), load_sites(path))


def _spec_then(path: Path) -> None:
    resolve_spec(load_spec(path), load_matrix())


def _facts_then(path: Path) -> None:
    facts = read_facts(path)
    diagnose_facts(facts, load_matrix(), None, "")
    diff(facts, facts)


def _init_spec(tmp: Path) -> Path:
    (tmp / "init.toml").write_text(render_spec("fuzz", "2.9.1", "3.12"))
    return tmp / "init.toml"


def _facts_file(tmp: Path) -> Path:
    facts = parse_collect_env(COLLECT_ENV.read_text(), load_matrix(), str(COLLECT_ENV))
    (tmp / "real-facts.json").write_text(json.dumps(facts.to_json()))
    return tmp / "real-facts.json"


# (name, the real file, the name to write mutations as, how they are read and used)
TOML_SOURCES: list[tuple[str, Callable[[Path], Path], str, Callable[[Path], None]]] = [
    ("spec", lambda _: EXAMPLES / "hybrid" / "torchship.toml", "torchship.toml", _spec_then),
    ("init spec", _init_spec, "torchship.toml", _spec_then),
    ("job", lambda _: EXAMPLES / "quickstart" / "job.toml", "job.toml", _job_then),
    ("job 2 nodes", lambda _: EXAMPLES / "hybrid" / "job-2node.toml", "job.toml", _job_then),
    ("sites", lambda _: SITES, "sites.toml", _sites_then),
    ("lock", lambda _: REPO / "tests/data/locks/cu128/torchship.lock", "torchship.lock",
     lambda p: read_lock(p) and None),
]  # fmt: skip
MUTATIONS_PER_FILE = 300


@pytest.mark.parametrize(
    "source",
    TOML_SOURCES,
    ids=[s[0] for s in TOML_SOURCES],
)  # fmt: skip
def test_structural_fuzz_of_real_toml_files(
    source: tuple[str, Callable[[Path], Path], str, Callable[[Path], None]], tmp_path: Path
) -> None:
    name, real, file_name, use = source
    doc = _toml(real(tmp_path))
    if name == "lock":
        doc = _trimmed(doc)
    failures: list[str] = []
    target = tmp_path / "case" / file_name
    target.parent.mkdir()
    for what, new in mutations(doc, f"{name}-17", MUTATIONS_PER_FILE):
        target.write_text(tomli_w.dumps(new))
        _check(what, lambda: use(target), failures)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:15])


def test_structural_fuzz_of_a_real_facts_file(tmp_path: Path) -> None:
    doc = json.loads(_facts_file(tmp_path).read_text())
    failures: list[str] = []
    target = tmp_path / "case.json"
    for what, new in mutations(doc, "facts-17", 400):
        target.write_text(json.dumps(new))
        _check(what, lambda: _facts_then(target), failures)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:15])


def test_structural_fuzz_of_a_real_trace(tmp_path: Path) -> None:
    """A trace is CSV: each mutation puts one value, as text, into one cell of a real row, or
    drops a column, or adds one."""
    rows = (EXAMPLES / "hybrid" / "trace-week.csv").read_text().splitlines()[:6]
    cells = [r.split(",") for r in rows]
    rng = random.Random("trace-17")
    failures: list[str] = []
    for _ in range(150):
        new = [list(r) for r in cells]
        i, j = rng.randrange(1, len(new)), rng.randrange(len(new[0]))
        value = rng.choice(VALUES)
        op = rng.choice(("set", "set", "drop column", "add column"))
        if op == "set":
            new[i][j] = str(value).replace(",", ";").replace("\n", " ")[: 2**15]
        elif op == "drop column":
            new = [r[:j] + r[j + 1 :] for r in new]
        else:
            new = [r + (["colour"] if k == 0 else ["1"]) for k, r in enumerate(new)]
        text = "\n".join(",".join(r) for r in new)
        _check(f"{op} line {i + 1} column {j} {excerpt(value, 30)}",
               functools.partial(parse_trace, text, "trace.csv"), failures)  # fmt: skip
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:15])
