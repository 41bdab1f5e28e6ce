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

Reading one byte range of a file into a *part* and merging parts back into this table, byte for byte (the
datasource job on Dask), is :mod:`amlflow.engine.dataset_parts`; it uses this module's reader.
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
from amlflow.engine.limits import MAX_RECORD_BYTES, default_memory_budget
from amlflow.engine.rearrange import Rearrangement
from amlflow.engine.schema import Schema
from amlflow.engine.table import (
    BYTES_PER_DISTINCT_VALUE,
    FORMAT,
    SPILL_BYTES,
    VERSION,
    EncodedTable,
    TableWriter,
    code_dtype,
)

__all__ = [
    "BYTES_PER_DISTINCT_VALUE",
    "CHUNK_BYTES",
    "FORMAT",
    "MAX_REJECTED_ROWS",
    "MAX_ROW_BYTES",
    "MIN_DICTIONARY_BYTES",
    "SPILL_BYTES",
    "VERSION",
    "DatasetInfo",
    "EncodedTable",
    "Source",
    "TableWriter",
    "build_dataset",
    "code_dtype",
    "dictionary_budget",
    "input_sizes",
    "is_gzip",
    "value_column_indices",
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
        quoted = np.zeros(n_lines, dtype=bool)
        if len(quotes):
            quoted[np.unique(np.searchsorted(starts, quotes, side="right") - 1)] = True
            for i in np.flatnonzero(quoted).tolist():
                if reason[i] == 0 and not _QUOTED_LINE.fullmatch(block[starts[i] : content_end[i]]):
                    reason[i] = 2

        records = np.flatnonzero(content_end > starts)
        records = records[records >= first]
        if not len(records):
            return n_lines
        rec_reason = reason[records]
        offsets = starts[records] + local
        selected = self.rearrangement.selects(offsets, self.total_bytes, self.key, self.file_start)

        # pyarrow parses the selected lines not already rejected, and the unselected ones with a quote; an
        # unselected line without one only needs its field count checked (its commas + 1, what pyarrow
        # would find): a 70/30 split's datasources each parse only their own rows
        ok = rec_reason == 0
        parse = ok & (selected | quoted[records])
        to_parse = records[parse]
        counted = np.flatnonzero(ok & ~parse)
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
            parsed_idx = np.flatnonzero(parse)
            for k, msg in bad.items():
                status[parsed_idx[k]] = 4
                messages[int(parsed_idx[k])] = msg
        if len(counted):
            commas = np.flatnonzero(arr == 44)
            lines = records[counted]
            fields = 1 + np.searchsorted(commas, content_end[lines]) - np.searchsorted(commas, starts[lines])
            for k in np.flatnonzero(fields != self.n_columns).tolist():
                status[counted[k]] = 4
                messages[int(counted[k])] = f"expected {self.n_columns} fields, found {int(fields[k])}"
        accepted = status == 0
        n_accepted = int((accepted & parse).sum())
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

        keep = selected[accepted & parse]
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


#: the least a datasource job's dictionaries may take whatever its memory budget: the job's read blocks
#: and pyarrow's buffers take ~100-300 MB anyway, and a budget set small to make training stream or an
#: evaluation run batch by batch should not refuse an ordinary datasource (~790,000 distinct values)
MIN_DICTIONARY_BYTES = 256 << 20


def dictionary_budget(memory_budget: int | None) -> int:
    """What a datasource job's column dictionaries may take: half of its memory budget (None: the
    machine's default, :func:`amlflow.engine.limits.default_memory_budget`), at least
    :data:`MIN_DICTIONARY_BYTES`; the rest is for the read blocks and the statistics."""
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    return max(budget // 2, MIN_DICTIONARY_BYTES)


def value_column_indices(schema: Schema) -> list[int]:
    """The columns a datasource job stores without a dictionary once they have more than
    :data:`~amlflow.engine.table.VALUE_COLUMN_MIN_VALUES` distinct values: the NUMERIC attributes but the
    target, the rowId and the rowWeight (the batch output prints the target's and the tag's text, and
    training reads the target and the weight per dictionary entry)."""
    keep = {schema.target, schema.row_id, schema.row_weight}
    return [i for i, n in enumerate(schema.names) if n not in keep and schema.type_of(n) == "NUMERIC"]


def table_writer(out_dir: Path | str, schema: Schema, memory_budget: int | None) -> TableWriter:
    """The writer of a datasource job's table (or part): its dictionary budget and value columns."""
    return TableWriter(
        out_dir,
        schema.names,
        dictionary_budget=dictionary_budget(memory_budget),
        value_columns=value_column_indices(schema),
    )


def build_dataset(
    sources: Sequence[Source],
    schema: Schema,
    rearrangement: Rearrangement | None,
    out_dir: Path | str,
    *,
    memory_budget: int | None = None,
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
        memory_budget: the job's memory budget in bytes (None: the machine's default); the columns'
            dictionaries may take half of it, at least 256 MiB (:func:`dictionary_budget`).

    Raises:
        DataError: no input, unreadable gzip, more than 10,000 rejected rows (naming the file and the
            first bad line), or more distinct values than the dictionary budget (naming the column).
    """
    if rearrangement is None:
        rearrangement = Rearrangement()
    if not sources:
        raise DataError("no input data files", field="DataLocationS3")
    sizes = input_sizes(sources, rearrangement)
    total = sum(sizes)
    totals = _Totals([(s.key, int(s.size)) for s in sources])
    with table_writer(out_dir, schema, memory_budget) as writer:
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
