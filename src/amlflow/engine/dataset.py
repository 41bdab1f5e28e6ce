"""The CSV reader: :func:`build_dataset` parses a datasource's files once into an encoded table.

The table format (dictionaries, codes, the on-disk layout) and its writer live in
:mod:`amlflow.engine.table`; :class:`EncodedTable`, :class:`TableWriter` and :func:`code_dtype` are
re-exported here (with ``FORMAT``, ``VERSION``, ``SPILL_BYTES``) for callers that import them from
this module.

Files are read in the given order as a stream of ~8 MB blocks cut at a line end. Line starts come from a
numpy scan of the block (so every row's byte offset is known: the split needs it); lines AML rejects
before parsing (> 100 KB, an unterminated quote, a bare CR) are taken out; pyarrow parses the rest of
the block (every column as binary; a row with the wrong number of fields goes to invalid_row_handler,
whose ``number`` is the row's index among the non-empty lines handed to it); each column is then
dictionary-encoded by pyarrow and appended to the table. Values may not contain line ends even when
quoted (docs/aml-reference.md §3.4), so a line is a row.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from amlflow.engine.errors import DataError
from amlflow.engine.limits import MAX_RECORD_BYTES
from amlflow.engine.rearrange import Rearrangement
from amlflow.engine.schema import Schema
from amlflow.engine.table import FORMAT, SPILL_BYTES, VERSION, EncodedTable, TableWriter, code_dtype

__all__ = [
    "CHUNK_BYTES",
    "FORMAT",
    "MAX_REJECTED_ROWS",
    "MAX_ROW_BYTES",
    "SPILL_BYTES",
    "VERSION",
    "DatasetInfo",
    "EncodedTable",
    "PartInfo",
    "PartMerger",
    "Source",
    "TableWriter",
    "build_dataset",
    "code_dtype",
    "input_sizes",
    "is_gzip",
    "merge_parts",
    "read_part",
]

MAX_ROW_BYTES = MAX_RECORD_BYTES
MAX_REJECTED_ROWS = 10_000


@dataclass(frozen=True)
class Source:
    """One input file: its key (for messages, the random split and ``files``), size and opener."""

    key: str
    size: int
    open: Callable[[], BinaryIO]
    #: a stream from a byte offset (a ranged read), for :func:`read_part`; None: open and skip
    open_at: Callable[[int], BinaryIO] | None = None


@dataclass
class DatasetInfo:
    """What a datasource job reports (``n_rows`` = selected rows in the table)."""

    n_rows: int
    n_rejected: int
    data_size_bytes: int
    n_files: int
    rejected_samples: list[dict[str, Any]] = field(default_factory=list)
    n_rows_total: int = 0
    n_rejected_total: int = 0
    files: list[tuple[str, int, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "n_rows": self.n_rows,
            "n_rejected": self.n_rejected,
            "data_size_bytes": self.data_size_bytes,
            "n_files": self.n_files,
            "rejected_samples": self.rejected_samples,
            "n_rows_total": self.n_rows_total,
            "n_rejected_total": self.n_rejected_total,
            "files": [list(f) for f in self.files],
        }


_GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 8 << 20
_SAMPLES = 10
_TAIL_READ = 64 << 10  # read size past the end of a byte range, looking for its last line's end
# one field, as pyarrow reads it: quoted ("" = a quote; after the closing quote, text up to the comma) or
# not (a quote inside is literal). Possessive/atomic, so a bad 100 KB line fails in linear time.
_FIELD = rb'(?>"(?:[^"]|"")*+"[^,]*+|[^,"][^,]*+|)'
_QUOTED_LINE = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*", re.DOTALL)
_REASONS = {1: "row longer than 100 KB", 2: "unterminated quote", 3: "carriage return inside the row"}


def _read_at_least(fh: BinaryIO, n: int, size: int) -> bytes:
    """Read up to ``size`` bytes, and at least ``n`` unless the stream ends (streams may read short)."""
    data = fh.read(size) or b""
    while len(data) < n:
        more = fh.read(size - len(data))
        if not more:
            break
        data += more
    return bytes(data)


def _iter_bytes(source: Source) -> Iterator[bytes]:
    """The source's bytes in chunks, gunzipped when they start with the gzip magic number."""
    fh = source.open()
    try:
        first = _read_at_least(fh, 2, CHUNK_BYTES)
        if first[:2] == _GZIP_MAGIC:
            yield from _gunzip(source.key, first, fh)
            return
        if first:
            yield first
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk
    finally:
        fh.close()


def _gunzip(key: str, first: bytes, fh: BinaryIO) -> Iterator[bytes]:
    d = zlib.decompressobj(wbits=31)
    pending, in_member = first, False
    try:
        while True:
            if not pending:
                pending = fh.read(1 << 20)
                if not pending:
                    break
            while pending:
                in_member = True
                out = d.decompress(pending, CHUNK_BYTES)
                if out:
                    yield out
                if d.eof:
                    pending, in_member = d.unused_data, False
                    d = zlib.decompressobj(wbits=31)
                    if pending and pending[:2] != _GZIP_MAGIC:
                        pending = b""  # trailing garbage after the last member: ignored, like gzip(1)
                else:
                    pending = d.unconsumed_tail
    except zlib.error as exc:
        raise DataError(f"{key}: not a valid gzip file ({exc})", field=key) from None
    if in_member:
        raise DataError(f"{key}: the gzip data is truncated", field=key)


class _Overflow(Exception):
    """A part passed MAX_REJECTED_ROWS on its own: the whole input has too many (the merge says so)."""


class _Reader:
    """Reads sources into a TableWriter, keeping the rows a Rearrangement selects.

    With ``limit`` (in-process) it raises the MAX_REJECTED_ROWS DataError itself; without (a part) it
    raises :class:`_Overflow` and :func:`read_part` records that the part overflowed.
    """

    def __init__(
        self,
        schema: Schema,
        rearrangement: Rearrangement,
        writer: TableWriter,
        total_bytes: int,
        *,
        limit: bool = True,
    ) -> None:
        self.schema = schema
        self.rearrangement = rearrangement
        self.writer = writer
        self.total_bytes = total_bytes
        self.limit = limit
        self.names = list(schema.names)
        self.n_columns = len(self.names)
        self.pos = 0  # next position in the selected output sequence
        self.rejected_positions: list[np.ndarray] = []
        self.n_records = 0
        self.n_rejected_total = 0
        self.n_rejected_selected = 0
        self.samples: list[dict[str, Any]] = []
        self.headers: dict[str, str] = {}
        self.n_lines = 0  # lines of the last stream read (its last line counted even without '\n')
        self._convert = pa_csv.ConvertOptions(
            column_types={n: pa.binary() for n in self.names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )

    # -- per file

    def read_file(self, source: Source, file_start: int) -> int:
        """Read one whole file; returns its (uncompressed) size in bytes."""
        return self.read_stream(source.key, _iter_bytes(source), file_start, 0, bool(self.schema.has_header))

    def read_stream(
        self, key: str, chunks: Iterable[bytes], file_start: int, local: int, header: bool
    ) -> int:
        """Read whole lines (``chunks``, starting at byte ``local`` of file ``key``: a line start) to
        the end of ``chunks``; line numbers count from the stream's start. Returns the bytes read."""
        self.key, self.file_start = key, file_start
        self.header_pending = header
        start = local
        line_no = 0  # lines before ``local``
        carry = b""
        skipping: tuple[int, int, bytes] | None = None  # an overlong line being skipped
        for chunk in chunks:
            if skipping is not None:
                j = chunk.find(b"\n")
                if len(skipping[2]) < 200:  # the sample's text: the line's first 200 bytes
                    more = chunk[: j if j >= 0 else len(chunk)][: 200 - len(skipping[2])]
                    skipping = (skipping[0], skipping[1], skipping[2] + more)
                if j < 0:
                    local += len(chunk)
                    continue
                self._long_line(*skipping)
                skipping = None
                local += j + 1
                line_no += 1
                chunk = chunk[j + 1 :]
            buf = carry + chunk if carry else chunk
            cut = buf.rfind(b"\n") + 1
            if cut:
                line_no += self._block(memoryview(buf)[:cut], local, line_no)
                local += cut
            carry = buf[cut:]
            if len(carry) > MAX_ROW_BYTES + 1:
                skipping = (local, line_no, bytes(carry[:200]))
                local += len(carry)
                carry = b""
        if skipping is not None:
            self._long_line(*skipping)
            line_no += 1
        elif carry:
            line_no += self._block(memoryview(carry), local, line_no)
            local += len(carry)
        self.n_lines = line_no
        return local - start

    def _long_line(self, offset: int, line_no: int, text: bytes) -> None:
        if self.header_pending:  # an overlong header is skipped, not kept (as _block does)
            self.header_pending = False
            return
        selected = bool(
            self.rearrangement.selects(np.array([offset]), self.total_bytes, self.key, self.file_start)[0]
        )
        if selected:
            self.rejected_positions.append(np.array([self.pos], dtype=np.int64))
            self.pos += 1
        self.n_records += 1
        self._rejects(np.array([offset]), np.array([line_no + 1]), [1], [text], np.array([selected]))

    def _block(self, block: memoryview, local: int, line_base: int) -> int:
        """Handle whole lines (the last may lack its newline, at end of file); returns the line count."""
        arr = np.frombuffer(block, dtype=np.uint8)
        n_bytes = len(arr)
        nl = np.flatnonzero(arr == 10)
        starts = np.empty(len(nl) + 1, dtype=np.int64)
        starts[0] = 0
        starts[1:] = nl + 1
        ends = np.append(nl, n_bytes).astype(np.int64)
        if starts[-1] == n_bytes:
            starts, ends = starts[:-1], ends[:-1]
        n_lines = len(starts)
        has_cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
        content_end = ends - has_cr
        numbers = np.arange(line_base + 1, line_base + n_lines + 1, dtype=np.int64)
        first = 0
        if self.header_pending and n_lines:
            if content_end[0] - starts[0] <= MAX_ROW_BYTES:  # an overlong header is skipped, not kept
                text = bytes(block[starts[0] : content_end[0]])
                self.headers[self.key] = text.decode("utf-8", "replace")
            self.header_pending = False
            first = 1

        reason = np.zeros(n_lines, dtype=np.int8)
        reason[(content_end - starts) > MAX_ROW_BYTES] = 1
        cr = np.flatnonzero(arr == 13)
        if len(cr) > int(has_cr.sum()):
            line_of = np.searchsorted(starts, cr, side="right") - 1
            bare = np.unique(line_of[cr != content_end[line_of]])
            reason[bare[reason[bare] == 0]] = 3  # an overlong line stays overlong (however it is read)
        quotes = np.flatnonzero(arr == 34)
        if len(quotes):
            for i in np.unique(np.searchsorted(starts, quotes, side="right") - 1).tolist():
                if reason[i] == 0 and not _QUOTED_LINE.fullmatch(block[starts[i] : content_end[i]]):
                    reason[i] = 2

        records = np.flatnonzero(content_end > starts)
        records = records[records >= first]
        if not len(records):
            return n_lines
        rec_reason = reason[records]
        offsets = starts[records] + local
        selected = self.rearrangement.selects(offsets, self.total_bytes, self.key, self.file_start)

        # parse the lines not already rejected with pyarrow
        to_parse = records[rec_reason == 0]
        if len(to_parse) == len(records):
            data: memoryview | bytes = block[starts[first] :] if first < n_lines else b""
        else:
            nxt = np.append(starts[1:], n_bytes)
            data = b"".join(
                block[s:e] for s, e in zip(starts[to_parse].tolist(), nxt[to_parse].tolist(), strict=True)
            )
        bad: dict[int, str] = {}

        def on_invalid(row: Any) -> str:
            bad[row.number - 1] = f"expected {row.expected_columns} fields, found {row.actual_columns}"
            return "skip"

        table = None
        if len(to_parse):
            try:
                table = pa_csv.read_csv(
                    pa.BufferReader(pa.py_buffer(data)),
                    read_options=pa_csv.ReadOptions(
                        column_names=self.names, use_threads=False, block_size=max(len(data) + 64, 1 << 16)
                    ),
                    parse_options=pa_csv.ParseOptions(
                        newlines_in_values=False, invalid_row_handler=on_invalid
                    ),
                    convert_options=self._convert,
                )
            except pa.ArrowException as exc:  # pragma: no cover - the line checks above should prevent it
                where = f"{self.key} lines {int(numbers[records[0]])}-{int(numbers[records[-1]])}"
                raise DataError(f"{where}: the CSV cannot be read ({exc})", field=self.key) from None
        status = rec_reason.astype(np.int16)
        messages: dict[int, str] = {}
        if bad:
            parsed_idx = np.flatnonzero(rec_reason == 0)
            for k, msg in bad.items():
                status[parsed_idx[k]] = 4
                messages[int(parsed_idx[k])] = msg
        accepted = status == 0
        n_accepted = int(accepted.sum())
        if table is not None and table.num_rows != n_accepted:  # pragma: no cover - a reader bug
            raise DataError(
                f"{self.key}: internal error: parsed {table.num_rows} rows, expected {n_accepted}",
                field=self.key,
            )

        rejected = np.flatnonzero(~accepted)
        if len(rejected):
            reasons = [messages.get(int(i), _REASONS.get(int(status[i]), "")) for i in rejected]
            texts = [
                bytes(block[starts[records[i]] : min(content_end[records[i]], starts[records[i]] + 200)])
                for i in rejected[:_SAMPLES]
            ]
            self._rejects(offsets[rejected], numbers[records[rejected]], reasons, texts, selected[rejected])
        sel_idx = np.flatnonzero(selected)
        if len(sel_idx):
            bad_sel = np.flatnonzero(~accepted[sel_idx])
            if len(bad_sel):
                self.rejected_positions.append(self.pos + bad_sel.astype(np.int64))
            self.pos += len(sel_idx)
        self.n_records += len(records)

        keep = selected[accepted]
        if table is not None and keep.any():
            self._encode(table, None if keep.all() else keep)
        return n_lines

    def _rejects(
        self,
        offsets: np.ndarray,
        lines: np.ndarray,
        reasons: Sequence[Any],
        texts: Sequence[bytes],
        selected: np.ndarray,
    ) -> None:
        n = len(offsets)
        for j in range(min(n, max(0, _SAMPLES - len(self.samples)))):
            reason = reasons[j]
            self.samples.append(
                {
                    "file": self.key,
                    "line": int(lines[j]),
                    "offset": int(offsets[j]),
                    "reason": _REASONS.get(reason, str(reason)) if isinstance(reason, int) else reason,
                    "text": texts[j].decode("utf-8", "replace") if j < len(texts) else "",
                }
            )
        self.n_rejected_total += n
        self.n_rejected_selected += int(np.count_nonzero(selected))
        if self.n_rejected_total > MAX_REJECTED_ROWS:
            if not self.limit:
                raise _Overflow
            raise _too_many(self.key, self.samples[0] if self.samples else {})

    def _encode(self, table: pa.Table, keep: np.ndarray | None) -> None:
        # only the selected rows' values enter the dictionaries: what a range of the input holds does
        # not depend on where the reader's blocks begin and end (parts merge to the same table)
        if keep is not None:
            table = table.filter(pa.array(keep))
        for i in range(self.n_columns):
            col = table.column(i)
            arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
            enc = pc.dictionary_encode(arr)
            idx = enc.indices.to_numpy(zero_copy_only=False)
            self.writer.append_raw(i, enc.dictionary, idx)


def _too_many(key: str, first: Mapping[str, Any]) -> DataError:
    """The MAX_REJECTED_ROWS error: the file where the limit was passed and the input's first bad line.
    (The count is the limit's, not the running total at some block: the message does not depend on how
    the input was cut up.)"""
    return DataError(
        f"more than {MAX_REJECTED_ROWS:,} rows were rejected (reached {MAX_REJECTED_ROWS + 1:,} in "
        f"{key}); the first was {first.get('file')} line {first.get('line')}: {first.get('reason')}",
        field=key,
    )


def _peek_gzip(source: Source) -> bool:
    fh = source.open()
    try:
        return _read_at_least(fh, 2, 2)[:2] == _GZIP_MAGIC
    finally:
        fh.close()


def is_gzip(source: Source) -> bool:
    """Whether ``source`` starts with the gzip magic number (read as gzip, never split into ranges)."""
    return _peek_gzip(source)


def input_sizes(sources: Sequence[Source], rearrangement: Rearrangement | None) -> list[int]:
    """Each source's size as the split counts it: the object size, or — for a ``sequential`` split,
    which needs the total before reading — the uncompressed size of a gzip file (decompressed once to
    measure it). The file starts passed to :func:`read_part` are the running sums of these."""
    if rearrangement is None or rearrangement.is_everything or rearrangement.strategy != "sequential":
        return [int(s.size) for s in sources]
    return [sum(len(c) for c in _iter_bytes(s)) if _peek_gzip(s) else int(s.size) for s in sources]


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
                got = fh.read(min(left, CHUNK_BYTES))
                if not got:
                    break
                left -= len(got)
        pos, chunk = at, b""
        if lo > 0:  # the first line start at or after lo: after the first '\n' at or after lo - 1
            while True:
                chunk = fh.read(CHUNK_BYTES) or b""
                if not chunk:
                    yield pos
                    return
                j = chunk.find(b"\n")
                if j >= 0:
                    pos, chunk = pos + j + 1, chunk[j + 1 :]
                    break
                pos += len(chunk)
        elif lo == 0 and hi > 0:
            chunk = _read_at_least(fh, 2, CHUNK_BYTES)
            if chunk[:2] == _GZIP_MAGIC:
                raise ValueError(f"{source.key}: a gzip file cannot be read by byte range")
        yield pos
        if pos >= hi:
            return
        while True:
            if not chunk:  # up to hi, then small reads to the end of the last line: little read past it
                want = hi - pos if 0 < hi - pos < CHUNK_BYTES else CHUNK_BYTES
                chunk = fh.read(want if pos < hi else min(CHUNK_BYTES, _TAIL_READ)) or b""
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
) -> PartInfo:
    """Read the lines of ``source`` that start in ``[lo, hi)`` (``hi`` None: the whole file, gunzipped
    when it is gzip) into a *part*: an encoded table at ``out_dir`` with the part's own dictionaries,
    ``rejected_positions`` relative to the part and a :class:`PartInfo` as ``info["part"]``.

    The row selection depends only on absolute byte offsets (``total_bytes``: the whole input's size as
    :func:`input_sizes` counts it; ``file_start``: this file's start in it), so parts merged in order by
    :func:`merge_parts` make the table :func:`build_dataset` writes, byte for byte.

    Raises:
        DataError: an unreadable gzip file.
        ValueError: a byte range of a gzip file.
    """
    if rearrangement is None:
        rearrangement = Rearrangement()
    with TableWriter(out_dir, schema.names) as writer:
        reader = _Reader(schema, rearrangement, writer, total_bytes, limit=False)
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
        except _Overflow:
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
                rejected_positions=_concat(reader.rejected_positions),
                files=[(source.key, 0, reader.pos)],
                info={"part": info.to_dict()},
            )
    return info


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int64)


class _Totals:
    """The whole input's report, added up file by file (in-process) or part by part (merge)."""

    def __init__(self, sources: Sequence[tuple[str, int]]) -> None:
        self.sources = list(sources)
        self.rejected: list[np.ndarray] = []
        self.samples: list[dict[str, Any]] = []
        self.headers: dict[str, str] = {}
        self.files: list[tuple[str, int, int]] = []
        self.n_records = self.n_rejected_total = self.n_rejected_selected = self.bytes_read = 0

    def finish(self, writer: TableWriter, rearrangement: Rearrangement) -> DatasetInfo:
        info = DatasetInfo(
            n_rows=writer.n_rows,
            n_rejected=self.n_rejected_selected,
            data_size_bytes=sum(size for _, size in self.sources),
            n_files=len(self.sources),
            rejected_samples=self.samples,
            n_rows_total=self.n_records - self.n_rejected_total,
            n_rejected_total=self.n_rejected_total,
            files=self.files,
        )
        meta = info.to_dict()
        meta["data_bytes_read"] = self.bytes_read
        meta["headers"] = self.headers
        meta["rearrangement"] = rearrangement.to_dict()
        writer.finish(rejected_positions=_concat(self.rejected), files=self.files, info=meta)
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
    ) -> None:
        self.rearrangement = rearrangement if rearrangement is not None else Rearrangement()
        self.totals = _Totals(sources)
        self.names = list(schema.names)
        self.writer = TableWriter(out_dir, self.names)
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
            if len(t.samples) >= _SAMPLES:
                break
            t.samples.append({**s, "line": int(s["line"]) + self._lines})
        t.n_rejected_total += part.n_rejected_total
        if t.n_rejected_total > MAX_REJECTED_ROWS:  # an overflowed part always gets here
            raise _too_many(part.key, t.samples[0] if t.samples else {})
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


def build_dataset(
    sources: Sequence[Source], schema: Schema, rearrangement: Rearrangement | None, out_dir: Path | str
) -> DatasetInfo:
    """Parse CSV ``sources`` (in the given order) with ``schema``, keep the rows ``rearrangement``
    selects, and write them as an encoded table at ``out_dir`` (atomically).

    The same reader as :func:`read_part` over each whole file, straight into one table: reading the
    files as parts (any byte ranges) and :func:`merge_parts` gives the same bytes.

    Args:
        sources: the input files, already in AML's order (lexicographic key order for a prefix).
        schema: an :class:`amlflow.engine.schema.Schema` (``names``, ``has_header``).
        rearrangement: an :class:`amlflow.engine.rearrange.Rearrangement`, or None for every row.
        out_dir: where the table goes (replaced if it exists).

    Raises:
        DataError: no input, unreadable gzip, or more than 10,000 rejected rows (naming the file and the
            first bad line).
    """
    if rearrangement is None:
        rearrangement = Rearrangement()
    if not sources:
        raise DataError("no input data files", field="DataLocationS3")
    sizes = input_sizes(sources, rearrangement)
    total = sum(sizes)
    totals = _Totals([(s.key, int(s.size)) for s in sources])
    with TableWriter(out_dir, schema.names) as writer:
        reader = _Reader(schema, rearrangement, writer, total)
        file_start = 0
        for source, size in zip(sources, sizes, strict=True):
            first = reader.pos
            totals.bytes_read += reader.read_file(source, file_start)
            totals.files.append((source.key, first, reader.pos))
            file_start += size
        totals.rejected = reader.rejected_positions
        totals.samples = reader.samples
        totals.headers = reader.headers
        totals.n_records = reader.n_records
        totals.n_rejected_total = reader.n_rejected_total
        totals.n_rejected_selected = reader.n_rejected_selected
        return totals.finish(writer, rearrangement)
