"""torchship.spec.fields reads PEP 508's plain form (name, extras, version specifiers) itself,
so that `torchship lock` can start uv before packaging's parser loads (issue 20). It must never
accept what packaging rejects, nor read a requirement differently: held to packaging's answer
on real requirement lines (tests/data/requirements, with their sources) and on structured
mutations of them. Anything it does not read goes to packaging, which decides."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement

from torchship.spec.fields import (
    PlainRequirement,
    _plain_requirement,
    parse_requirement,
    read_requirement,
)

DATA = Path(__file__).parents[1] / "data/requirements"
# pip's comment rule for a requirements file: `#` at the start, or after whitespace
_COMMENT = re.compile(r"(^|\s+)#.*$")


def _corpus() -> list[str]:
    lines = []
    for name in ("public.txt", "requires_dist.txt"):
        for line in (DATA / name).read_text("utf-8").splitlines():
            text = _COMMENT.sub("", line).strip()
            if text:
                lines.append(text)
    return lines


CORPUS = _corpus()
# what a mutation inserts: PEP 508's punctuation, whitespace it does and does not allow, and
# what a requirements file would read as an option, a comment or a URL
INSERTS = [" ", "\t", "\n", "\r", "\x0b", ",", ";", "[", "]", "(", ")", "=", "<", ">", "!",
           "~", "*", "@", "#", "-", "_", ".", "+", "a", "1", "v", "/", ":", "'", '"', "é",
           "\x00"]  # fmt: skip
OPERATORS = ["==", "!=", "<=", ">=", "~=", "===", "<", ">", "=>", "=<", "=", "!", "~", "<>"]


def _agrees(text: str) -> bool:
    """Whether the plain reader answered (True) or left it to packaging (False); fails when
    its answer is not packaging's."""
    plain = _plain_requirement(text)
    if plain is None:
        return False
    try:
        theirs = Requirement(text)
    except InvalidRequirement as e:
        raise AssertionError(f"read {text!r}, which packaging rejects: {e}") from None
    ours = (plain.name, set(plain.extras), sorted(map(str, plain.specifier)), plain.url)
    want = (theirs.name, theirs.extras, sorted(map(str, theirs.specifier)), theirs.url)
    assert ours == want, text
    assert plain.marker is None is theirs.marker, text
    return True


def _mutations(text: str, rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        i = rng.randrange(len(text) + 1)
        kind = rng.randrange(5)
        if kind == 0:  # insert
            out.append(text[:i] + rng.choice(INSERTS) + text[i:])
        elif kind == 1 and i < len(text):  # delete
            out.append(text[:i] + text[i + 1 :])
        elif kind == 2 and i < len(text):  # double
            out.append(text[:i] + text[i] + text[i:])
        elif kind == 3:  # another operator wherever one stands
            ops = [m.span() for m in re.finditer(r"[=!<>~]+", text)]
            if ops:
                a, b = rng.choice(ops)
                out.append(text[:a] + rng.choice(OPERATORS) + text[b:])
        else:  # cut
            out.append(text[:i])
    return out


def test_the_corpus_is_real_and_varied() -> None:
    assert len(CORPUS) > 600
    assert sum(";" in c for c in CORPUS) > 300  # markers: packaging's, never the plain reader's
    assert any("[" in c and ";" not in c for c in CORPUS)  # extras
    assert any(re.search(r"\s(>=|==|<)\s", c) for c in CORPUS)  # spaced specifiers


def test_every_real_line_reads_as_packaging_reads_it() -> None:
    read = [c for c in CORPUS if _agrees(c)]
    # every plain line is read without packaging: those are what specs name
    plain = [c for c in CORPUS if not re.search(r"[;@(]|===", c)]
    assert sorted(read) == sorted(plain)


def test_a_character_anywhere_in_a_plain_line_never_reads_differently() -> None:
    plain = sorted({c for c in CORPUS if _plain_requirement(c) is not None})
    for text in plain:
        for i in range(len(text) + 1):
            for ch in INSERTS:
                _agrees(text[:i] + ch + text[i:])


def test_mutations_of_real_lines_never_read_differently() -> None:
    rng = random.Random(20261130)
    seen: set[str] = set()
    read = 0
    for text in CORPUS:
        for m in _mutations(text, rng, 24):
            if m not in seen:
                seen.add(m)
                read += _agrees(m)
    assert len(seen) > 10_000 and read > 2_000  # the plain reader answered a good share


@pytest.mark.parametrize(
    "text",
    [
        "numpy\n--index-url https://evil.example/simple",  # a second line: an option for uv
        "--index-url=https://evil.example/simple",
        "-r /etc/passwd",
        "numpy>=1.0\n",
        "numpy>=1.0\r",
        "numpy >= 1.x",
        "numpy>=1.0,",
        ",numpy",
        "numpy>=1.0,,<2",
        "numpy[",
        "numpy[a,]",
        "numpy-",
        "numpy >=1.0 <2",
        "numpy===1.0,>=2",  # `===` takes the whole rest as its string: packaging's to read
        "numpy @ https://example.com/numpy.whl",
        "numpy; python_version < '3.12'",
        "numpy (>=1.0)",
        "",
        " ",
    ],
)
def test_hostile_and_odd_lines_are_never_read_unlike_packaging(text: str) -> None:
    _agrees(text)
    try:
        theirs: Requirement | None = Requirement(text)
    except InvalidRequirement:
        theirs = None
    if theirs is None:
        with pytest.raises(ValueError, match=r"is not a PEP 508 requirement|line break"):
            read_requirement(text)
    else:
        assert read_requirement(text).name == theirs.name


@pytest.mark.parametrize("text", ["numpy>=\n1.0", "numpy>=\x0b1.0", "numpy; python_version\n>'3'"])
def test_a_line_break_is_refused_even_where_packaging_takes_it(text: str) -> None:
    # one requirement is one line of uv's input: a break would make two
    with pytest.raises(ValueError, match="line break or another control character"):
        read_requirement(text)


def test_plain_requirements_keep_what_the_plan_reads() -> None:
    r = read_requirement(" fsspec[http , s3] >2021.06.0, <2023.2.0 ")
    assert r == PlainRequirement("fsspec", frozenset({"http", "s3"}), r.specifier)
    assert str(r.specifier) == "<2023.2.0,>2021.06.0"
    assert r.url is None and r.marker is None
    assert not read_requirement("torchvision").specifier


def test_torch_is_refused_in_either_form() -> None:
    for text in ("torch", "Torch>=2", "torch; python_version > '3'"):
        with pytest.raises(ValueError, match="top-level `torch` field"):
            parse_requirement(text)


def test_the_package_name_rule_is_packagings() -> None:
    from packaging.utils import InvalidName, canonicalize_name

    from torchship.spec.fields import is_package_name

    rng = random.Random(508)
    names = {read_requirement(c).name for c in CORPUS}
    seen = set()
    for name in sorted(names):
        seen.update(m for m in _mutations(name, rng, 30))
        seen.update(name[:i] + ch + name[i:] for i in range(len(name) + 1) for ch in INSERTS)
    assert len(seen) > 20_000
    for text in seen | names:
        try:
            canonicalize_name(text, validate=True)
            theirs = True
        except InvalidName:
            theirs = False
        assert is_package_name(text) is theirs, repr(text)
