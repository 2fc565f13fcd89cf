"""SQLite's file format, read directly: pages, table-leaf cells and their records, for rows
that no b-tree reaches any more (a damaged job store). Pure functions over bytes; a cell that
does not parse is skipped, never fatal. Format: https://www.sqlite.org/fileformat2.html
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

MAGIC = b"SQLite format 3\0"
WAL_HEADER, FRAME_HEADER = 32, 24
TABLE_LEAF = 13
BTREE_KINDS = (2, 5, 10, 13)  # interior index, interior table, leaf index, leaf table


def cells(data: bytes, wal: bytes | None = None) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(rowid, values) of every table-leaf cell of a database file's pages, then of the pages
    in its WAL's frames (newer copies of the same pages)."""
    size = page_size(data[:100]) or guess_page_size(data)
    pages = [data[i : i + size] for i in range(0, len(data) - size + 1, size)]
    if wal:
        frames, step = wal[WAL_HEADER:], FRAME_HEADER + size
        pages += [
            frames[i + FRAME_HEADER : i + step] for i in range(0, len(frames) - step + 1, step)
        ]
    for number, page in enumerate(pages, start=1):
        yield from leaf_cells(page, 100 if number == 1 else 0, pages)


def page_size(head: bytes) -> int | None:
    if not head.startswith(MAGIC) or len(head) < 18:
        return None
    size = struct.unpack(">H", head[16:18])[0]
    size = 65536 if size == 1 else size
    return size if size >= 512 and size & (size - 1) == 0 else None


def guess_page_size(data: bytes) -> int:
    """The page size under which most pages start like a b-tree page."""

    def score(size: int) -> float:  # the share of pages that look like one
        starts = range(size, len(data), size)
        return sum(data[i] in BTREE_KINDS for i in starts) / max(1, len(starts))

    return max((1 << n for n in range(9, 17)), key=score)


def varint(b: bytes, i: int) -> tuple[int, int]:
    value = 0
    for k in range(9):
        byte = b[i + k]
        if k == 8:
            return (value << 8) | byte, i + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i + k + 1
    raise IndexError


def leaf_cells(page: bytes, start: int, pages: list[bytes]) -> list[tuple[int, tuple[Any, ...]]]:
    """(rowid, values) of each cell of a table-leaf page; [] for any other page. A cell that
    does not parse is skipped, never fatal."""
    if len(page) < start + 8 or page[start] != TABLE_LEAF:
        return []
    count = struct.unpack(">H", page[start + 3 : start + 5])[0]
    out = []
    for k in range(count):
        try:
            at = struct.unpack(">H", page[start + 8 + 2 * k : start + 10 + 2 * k])[0]
            size, i = varint(page, at)
            rowid, i = varint(page, i)
            out.append((rowid, record(payload(page, i, size, pages))))
        except (IndexError, ValueError, struct.error, UnicodeDecodeError):
            continue
    return out


def payload(page: bytes, i: int, size: int, pages: list[bytes]) -> bytes:
    usable = len(page)
    most = usable - 35
    if size <= most:
        return page[i : i + size]
    least = (usable - 12) * 32 // 255 - 23
    local = least + (size - least) % (usable - 4)
    local = local if local <= most else least
    out = bytearray(page[i : i + local])
    nxt = struct.unpack(">I", page[i + local : i + local + 4])[0]
    hops = 0
    while len(out) < size and 0 < nxt <= len(pages) and hops < 1000:
        over = pages[nxt - 1]
        out += over[4:]
        nxt, hops = struct.unpack(">I", over[:4])[0], hops + 1
    if len(out) < size:
        raise ValueError("overflow chain cut short")
    return bytes(out[:size])


def record(b: bytes) -> tuple[Any, ...]:
    header, i = varint(b, 0)
    types = []
    while i < header:
        t, i = varint(b, i)
        types.append(t)
    values: list[Any] = []
    at = header
    for t in types:
        n = serial_size(t)
        raw = b[at : at + n]
        if len(raw) < n:
            raise ValueError("record cut short")
        values.append(value(t, raw))
        at += n
    return tuple(values)


def serial_size(t: int) -> int:
    if t >= 12:
        return (t - 12) // 2 if t % 2 == 0 else (t - 13) // 2
    return (0, 1, 2, 3, 4, 6, 8, 8, 0, 0)[t] if t < 10 else 0


def value(t: int, raw: bytes) -> Any:
    if t == 0:
        return None
    if 1 <= t <= 6:
        return int.from_bytes(raw, "big", signed=True)
    if t == 7:
        return struct.unpack(">d", raw)[0]
    if t in (8, 9):
        return t - 8
    if t >= 13 and t % 2 == 1:
        return raw.decode("utf-8")
    if t >= 12:
        return bytes(raw)
    raise ValueError(f"serial type {t}")
