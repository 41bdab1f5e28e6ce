"""Datasource parts: one byte range of one CSV file read into a small encoded table (:func:`read_part`),
and parts merged back, in input order, into the table :func:`amlflow.engine.dataset.build_dataset`
writes, byte for byte (:class:`PartMerger`, :func:`merge_parts`). The service's datasource job on Dask
(``amlflow.service.dask_datasource``) reads ranges on the workers and merges in the service.

A range owns the lines that *start* in it (a line starts at 0 or after a ``\\n``); reading goes past its end
to finish its last line. The row selection of a rearrangement depends only on absolute byte offsets, so it
does not depend on where the ranges are cut; gzip files are read whole, one part each. The parser is
:mod:`amlflow.engine.dataset`'s own reader (its limits, ``CHUNK_BYTES`` and ``MAX_REJECTED_ROWS``, are read
from there at call time).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amlflow.engine import dataset as _ds
from amlflow.engine.dataset import DatasetInfo, Source
from amlflow.engine.rearrange import Rearrangement
from amlflow.engine.schema import Schema
from amlflow.engine.table import EncodedTable, TableWriter

__all__ = ["PartInfo", "PartMerger", "merge_parts", "read_part"]


def _range_chunks(source: Source, lo: int, hi: int) -> Iterator[int | bytes]:
    """The lines that start in ``[lo, hi)`` of an uncompressed file: first the offset of the first such
    line, then their bytes in chunks (reading past ``hi`` to finish the last one). A line starts at 0 or
    after a ``\\n``. Only ``[lo - 1, end of the last line)`` is read (``Source.open_at``)."""
    at = max(lo - 1, 0)
    fh = source.open_at(at) if source.open_at is not None else source.open()
    try:
        if source.open_at is None and at:  # no ranged open: skip to ``at``
            left = at
            while left:
                got = fh.read(min(left, _ds.CHUNK_BYTES))
                if not got:
                    break
                left -= len(got)
        pos, chunk = at, b""
        if lo > 0:  # the first line start at or after lo: after the first '\n' at or after lo - 1
            while True:
                chunk = fh.read(_ds.CHUNK_BYTES) or b""
                if not chunk:
                    yield pos
                    return
                j = chunk.find(b"\n")
                if j >= 0:
                    pos, chunk = pos + j + 1, chunk[j + 1 :]
                    break
                pos += len(chunk)
        elif lo == 0 and hi > 0:
            chunk = _ds._read_at_least(fh, 2, _ds.CHUNK_BYTES)
            if chunk[:2] == _ds._GZIP_MAGIC:
                raise ValueError(f"{source.key}: a gzip file cannot be read by byte range")
        yield pos
        if pos >= hi:
            return
        while True:
            if not chunk:  # up to hi, then small reads to the end of the last line: little read past it
                want = hi - pos if 0 < hi - pos < _ds.CHUNK_BYTES else _ds.CHUNK_BYTES
                chunk = fh.read(want if pos < hi else min(_ds.CHUNK_BYTES, _ds._TAIL_READ)) or b""
                if not chunk:
                    return
            if pos + len(chunk) >= hi:  # holds byte hi - 1: end at the first '\n' from there
                j = chunk.find(b"\n", max(hi - 1 - pos, 0))
                if j >= 0:
                    yield chunk[: j + 1]
                    return
            yield chunk
            pos, chunk = pos + len(chunk), b""
    finally:
        fh.close()


@dataclass
class PartInfo:
    """What :func:`read_part` reports of one byte range of one file (stored in the part's
    ``meta.json`` ``info``; :func:`merge_parts` reads it from there).

    Positions (``rejected_positions`` in the part's table) and sample line numbers are relative to the
    part; sample offsets are the file's. ``n_lines``: the lines of the range (the header included);
    ``header``: the file's header line when the range holds the file's first line and the schema has one;
    ``overflow``: the part alone had more than MAX_REJECTED_ROWS rejected rows (reading stopped; the
    table is empty)."""

    key: str
    lo: int
    hi: int | None
    start: int
    bytes_read: int
    n_lines: int
    n_rows: int
    n_positions: int
    n_records: int
    n_rejected_total: int
    n_rejected_selected: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    header: str | None = None
    overflow: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartInfo:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def read_part(
    source: Source,
    schema: Schema,
    rearrangement: Rearrangement | None,
    out_dir: Path | str,
    *,
    total_bytes: int,
    file_start: int,
    lo: int = 0,
    hi: int | None = None,
    memory_budget: int | None = None,
) -> PartInfo:
    """Read the lines of ``source`` that start in ``[lo, hi)`` (``hi`` None: the whole file, gunzipped
    when it is gzip) into a *part*: an encoded table at ``out_dir`` with the part's own dictionaries,
    ``rejected_positions`` relative to the part and a :class:`PartInfo` as ``info["part"]``.

    The row selection depends only on absolute byte offsets (``total_bytes``: the whole input's size as
    :func:`input_sizes` counts it; ``file_start``: this file's start in it), so parts merged in order by
    :func:`merge_parts` make the table :func:`build_dataset` writes, byte for byte.

    ``memory_budget``: as :func:`build_dataset`'s (the part's dictionaries may take half of it).

    Raises:
        DataError: an unreadable gzip file, or more distinct values than the dictionary budget.
        ValueError: a byte range of a gzip file.
    """
    if rearrangement is None:
        rearrangement = Rearrangement()
    with _ds.table_writer(out_dir, schema, memory_budget) as writer:
        reader = _ds._Reader(schema, rearrangement, writer, total_bytes, limit=False)
        header = bool(schema.has_header) and lo == 0
        overflow = False
        start = 0
        try:
            if hi is None:
                if lo:
                    raise ValueError("read_part: lo without hi")
                read = reader.read_file(source, file_start)
            else:
                chunks = _range_chunks(source, lo, hi)
                start = int(next(chunks))
                body = (c for c in chunks if isinstance(c, bytes))
                read = reader.read_stream(source.key, body, file_start, start, header)
        except _ds._Overflow:
            overflow, read = True, 0
        info = PartInfo(
            key=source.key,
            lo=lo,
            hi=hi,
            start=start,
            bytes_read=read,
            n_lines=reader.n_lines,
            n_rows=0 if overflow else writer.n_rows,
            n_positions=0 if overflow else reader.pos,
            n_records=reader.n_records,
            n_rejected_total=reader.n_rejected_total,
            n_rejected_selected=reader.n_rejected_selected,
            samples=reader.samples,
            header=reader.headers.get(source.key),
            overflow=overflow,
        )
        if overflow:
            writer.abort()
            with TableWriter(out_dir, schema.names) as empty:
                empty.finish(info={"part": info.to_dict()})
        else:
            writer.finish(
                rejected_positions=_ds._concat(reader.rejected_positions),
                files=[(source.key, 0, reader.pos)],
                info={"part": info.to_dict()},
            )
    return info


class PartMerger:
    """Parts (:func:`read_part`), added in input order, merged into one encoded table at ``out_dir``:
    dictionaries remapped, codes streamed in slices (memory stays bounded), rejected positions shifted,
    sample line numbers shifted by the lines of the file's earlier parts, the first 10 samples kept, the
    MAX_REJECTED_ROWS check on the running total — the table and report :func:`build_dataset` makes.

    Example: ``with PartMerger(schema, r, [(key, size), ...], out) as m: m.add(part_dir); m.finish()``.
    """

    def __init__(
        self,
        schema: Schema,
        rearrangement: Rearrangement | None,
        sources: Sequence[tuple[str, int]],
        out_dir: Path | str,
        *,
        slice_rows: int = 1 << 20,
        memory_budget: int | None = None,
    ) -> None:
        self.rearrangement = rearrangement if rearrangement is not None else Rearrangement()
        self.totals = _ds._Totals(sources)
        self.names = list(schema.names)
        self.writer = _ds.table_writer(out_dir, schema, memory_budget)
        self.slice_rows = slice_rows
        self.pos = 0
        self._file = -1  # index in sources of the current file
        self._file_first = 0
        self._lines = 0  # lines of the current file's earlier parts
        self._hi: int | None = None  # where the current file's last part stopped (None: read whole)

    def __enter__(self) -> PartMerger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.__exit__(*exc)

    def _next_file(self, key: str, lo: int, hi: int | None) -> None:
        """A part of another file starts the next file (at byte 0); one of the same file continues it
        where the previous part stopped."""
        if self._file >= 0 and self.sources_key(self._file) == key:
            if self._hi is None or lo != self._hi:
                raise ValueError(f"merge_parts: part {key}@{lo} out of input order")
            self._hi = hi
            return
        if self._file >= 0:
            self.totals.files.append((self.sources_key(self._file), self._file_first, self.pos))
        self._file += 1
        if self._file >= len(self.totals.sources) or self.sources_key(self._file) != key or lo:
            raise ValueError(f"merge_parts: part {key}@{lo} out of input order")
        self._file_first, self._lines, self._hi = self.pos, 0, hi

    def sources_key(self, i: int) -> str:
        return self.totals.sources[i][0]

    def add(self, part_dir: Path | str) -> PartInfo:
        """Add the next part (its directory; it may be deleted afterwards)."""
        table = EncodedTable.open(part_dir)
        part = PartInfo.from_dict(table.info["part"])
        if table.names != self.names:
            raise ValueError(f"merge_parts: part {part.key}@{part.lo} has columns {table.names}")
        self._next_file(part.key, part.lo, part.hi)
        t = self.totals
        for s in part.samples:
            if len(t.samples) >= _ds._SAMPLES:
                break
            t.samples.append({**s, "line": int(s["line"]) + self._lines})
        t.n_rejected_total += part.n_rejected_total
        if t.n_rejected_total > _ds.MAX_REJECTED_ROWS:  # an overflowed part always gets here
            raise _ds._too_many(part.key, t.samples[0] if t.samples else {})
        if part.header is not None:
            t.headers[part.key] = part.header
        t.n_records += part.n_records
        t.n_rejected_selected += part.n_rejected_selected
        t.bytes_read += part.bytes_read
        if len(table.rejected_positions):
            t.rejected.append(np.asarray(table.rejected_positions, dtype=np.int64) + self.pos)
        self.writer.append_table(table, table.n_rows, slice_rows=self.slice_rows)
        self.pos += part.n_positions
        self._lines += part.n_lines
        return part

    def finish(self) -> DatasetInfo:
        """Write the merged table (atomically) and return the input's report."""
        if self._file >= 0:
            self.totals.files.append((self.sources_key(self._file), self._file_first, self.pos))
        if len(self.totals.files) != len(self.totals.sources):
            raise ValueError(
                f"merge_parts: parts of {len(self.totals.files)} of {len(self.totals.sources)} files"
            )
        return self.totals.finish(self.writer, self.rearrangement)


def merge_parts(
    parts: Iterable[Path | str],
    schema: Schema,
    rearrangement: Rearrangement | None,
    sources: Sequence[tuple[str, int]],
    out_dir: Path | str,
) -> DatasetInfo:
    """Merge the part directories ``parts`` (every part of every file of ``sources`` — ``(key, object
    size)`` in input order — in order) into one encoded table at ``out_dir`` (:class:`PartMerger`).

    Raises:
        DataError: more than 10,000 rejected rows in all (the message :func:`build_dataset` gives).
        ValueError: parts missing or out of order.
    """
    with PartMerger(schema, rearrangement, sources, out_dir) as merger:
        for part in parts:
            merger.add(part)
        return merger.finish()
