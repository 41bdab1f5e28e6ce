"""The encoded table: how a datasource's rows are stored once parsed, and the CSV reader that builds it.

Every attribute is stored the same way whatever its type (docs/architecture.md, "the encoded table"):
a *dictionary* of the distinct raw strings (stripped of surrounding white space; ``""`` = missing) and
one unsigned integer *code* per row indexing it (``uint8``/``uint16``/``uint32``, the narrowest that
fits). Types are views computed on the dictionary (:mod:`amlflow.engine.schema`).

On disk (one directory, written into a temporary sibling and renamed into place, so readers never see
half a table)::

    meta.json          {"format": "amlflow-encoded-table", "version": 2, "n_rows",
                        "columns": [{"name", "dtype", "offset", "n_values"}, ...],
                        "files": [[key, first_position, stop_position], ...],
                        "rejected_positions": [...], "info": {...}}
    codes.bin          every column's codes, one after the other (each 64-byte aligned at its
                        ``offset``, ``n_rows`` values of its ``dtype``); memory-mapped when opened
    dictionaries.json  one JSON list of strings per column

``rejected_positions`` are the positions, in the selected output sequence, where a rejected row stood.

Example:
    >>> import pandas as pd
    >>> t = EncodedTable.from_frame(pd.DataFrame({"a": ["x", " y", None, "x"]}))
    >>> t.n_rows, list(t.dictionary("a")), t.codes("a").tolist()
    (4, ['x', 'y', ''], [0, 1, 2, 0])
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from amlflow.engine.errors import DataError

__all__ = [
    "MAX_REJECTED_ROWS",
    "MAX_ROW_BYTES",
    "DatasetInfo",
    "EncodedTable",
    "Source",
    "TableWriter",
    "build_dataset",
    "code_dtype",
]

FORMAT = "amlflow-encoded-table"
VERSION = 2
MAX_ROW_BYTES = 100 * 1024
MAX_REJECTED_ROWS = 10_000
SPILL_BYTES = 64 << 20
_ALIGN = 64


def code_dtype(n_values: int) -> np.dtype[Any]:
    """The narrowest unsigned dtype able to index a dictionary of ``n_values`` entries."""
    if n_values <= 1 << 8:
        return np.dtype(np.uint8)
    if n_values <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


# --------------------------------------------------------------------------------------------- writer


class _ColumnWriter:
    """Merges per-batch dictionaries into one; keeps the codes in memory until the table spills them."""

    def __init__(self, spill_path: Path) -> None:
        self.spill_path = spill_path
        self.index: dict[str, int] = {}
        self.values: list[str] = []
        self.n = 0
        self.buffered: list[np.ndarray] = []
        self.buffered_bytes = 0
        self.spilled: list[tuple[np.dtype[Any], int]] = []  # segments in the spill file, in order
        self.raw_seen: pa.Array | None = None  # raw values met so far (append_raw) ...
        self.raw_map = np.zeros(0, dtype=np.int64)  # ... and their codes

    @property
    def dtype(self) -> np.dtype[Any]:
        return code_dtype(len(self.values))

    def _remap(self, local_values: Sequence[str]) -> np.ndarray:
        index, values = self.index, self.values
        out = np.empty(len(local_values), dtype=np.int64)
        for j, raw in enumerate(local_values):
            s = raw.strip() if raw else ""
            code = index.get(s)
            if code is None:
                code = index[s] = len(values)
                values.append(s)
            out[j] = code
        return out

    def append_raw(self, local_dict: pa.Array, local_codes: np.ndarray) -> int:
        """Like :meth:`append` for a batch dictionary of raw (binary, unstripped) values: values seen
        before are looked up by pyarrow in one call; only new ones go through Python."""
        if self.raw_seen is None or not len(self.raw_seen):
            pos = np.full(len(local_dict), -1, dtype=np.int64)
        else:
            found = pc.index_in(local_dict, value_set=self.raw_seen)
            pos = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        new = np.flatnonzero(pos < 0)
        if len(new):
            fresh = local_dict.take(pa.array(new))
            texts = [v.decode("utf-8", "replace") for v in fresh.to_pylist()]
            base = len(self.raw_map)
            self.raw_map = np.concatenate([self.raw_map, self._remap(texts)])
            self.raw_seen = fresh if self.raw_seen is None else pa.concat_arrays([self.raw_seen, fresh])
            pos[new] = np.arange(base, base + len(new))
        return self._append_codes(self.raw_map[pos], local_codes)

    def append(self, local_values: Sequence[str], local_codes: np.ndarray) -> int:
        """Append rows given as codes into ``local_values`` (a batch's own dictionary); returns the bytes
        now buffered."""
        return self._append_codes(self._remap(local_values), local_codes)

    def _append_codes(self, remap: np.ndarray, local_codes: np.ndarray) -> int:
        if len(local_codes):
            codes = remap.astype(self.dtype)[local_codes]
            self.buffered.append(codes)
            self.buffered_bytes += codes.nbytes
        self.n += len(local_codes)
        return self.buffered_bytes

    def spill(self) -> None:
        """Move the buffered codes to this column's spill file."""
        if not self.buffered:
            return
        with open(self.spill_path, "ab") as fh:
            for arr in self.buffered:
                fh.write(arr.tobytes())
                self.spilled.append((arr.dtype, len(arr)))
        self.buffered, self.buffered_bytes = [], 0

    def write_codes(self, out: BinaryIO) -> None:
        """Write every code, in the final dtype, to ``out``."""
        dtype = self.dtype
        if self.spilled:
            with open(self.spill_path, "rb") as fh:
                for seg_dtype, count in self.spilled:
                    out.write(np.fromfile(fh, dtype=seg_dtype, count=count).astype(dtype).tobytes())
        for arr in self.buffered:
            out.write(arr.astype(dtype, copy=False).tobytes())


class TableWriter:
    """Writes an encoded table incrementally, atomically: nothing appears at ``out_dir`` until
    :meth:`finish`; :meth:`abort` (or an exception inside ``with``) leaves nothing behind.

    Codes stay in memory up to ``spill_bytes`` in all, then go to one temporary file per column; the
    table itself is three files (few file creations: they are slow on some file systems).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "t"
        >>> with TableWriter(d, ["a"]) as w:
        ...     w.append_column(0, ["x", "y"], np.array([0, 1, 1]))
        ...     t = w.finish()
        >>> EncodedTable.open(d).codes("a").tolist()
        [0, 1, 1]
    """

    def __init__(self, out_dir: Path | str, names: Sequence[str], *, spill_bytes: int = SPILL_BYTES) -> None:
        self.out_dir = Path(out_dir)
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError("column names must be unique")
        self.spill_bytes = spill_bytes
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out_dir.parent / f".{self.out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
        self.tmp.mkdir()
        self.columns = [_ColumnWriter(self.tmp / f"{i}.spill") for i in range(len(self.names))]
        self._buffered = 0
        self._done = False

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()

    @property
    def n_rows(self) -> int:
        """Rows written so far (the first column's count)."""
        return self.columns[0].n if self.columns else 0

    def append_column(self, i: int, local_values: Sequence[str], local_codes: np.ndarray) -> None:
        """Append rows to column ``i``: ``local_codes`` index ``local_values`` (stripped on merge)."""
        col = self.columns[i]
        before = col.buffered_bytes
        self._buffered += col.append(local_values, np.asarray(local_codes)) - before
        self._maybe_spill()

    def append_raw(self, i: int, local_dict: pa.Array, local_codes: np.ndarray) -> None:
        """Append rows to column ``i``: ``local_codes`` index ``local_dict``, a pyarrow binary/string
        array of raw values (decoded as UTF-8 with replacement, stripped on merge)."""
        col = self.columns[i]
        before = col.buffered_bytes
        self._buffered += col.append_raw(local_dict, np.asarray(local_codes)) - before
        self._maybe_spill()

    def _maybe_spill(self) -> None:
        if self._buffered > self.spill_bytes:
            for c in self.columns:
                c.spill()
            self._buffered = 0

    def append_strings(self, i: int, values: Sequence[str | None]) -> None:
        """Append rows to column ``i`` given as plain strings (None = missing)."""
        codes, uniques = pd.factorize(pd.Series(values, dtype=object).fillna(""), use_na_sentinel=False)
        self.append_column(i, [str(u) for u in uniques], codes)

    def finish(
        self,
        *,
        rejected_positions: Sequence[int] | np.ndarray = (),
        files: Sequence[tuple[str, int, int]] | None = None,
        info: dict[str, Any] | None = None,
    ) -> EncodedTable:
        """Write the codes, dictionaries and ``meta.json``, and rename the table into place."""
        counts = {c.n for c in self.columns}
        if len(counts) > 1:
            raise ValueError(f"columns have different row counts: {sorted(counts)}")
        n_rows = self.n_rows
        rejected = [int(x) for x in np.asarray(rejected_positions, dtype=np.int64).tolist()]
        offsets = []
        with open(self.tmp / "codes.bin", "wb") as fh:
            for col in self.columns:
                pad = -fh.tell() % _ALIGN
                fh.write(b"\0" * pad)
                offsets.append(fh.tell())
                col.write_codes(fh)
        with open(self.tmp / "dictionaries.json", "w", encoding="utf-8") as fh:
            json.dump([col.values for col in self.columns], fh, ensure_ascii=False, separators=(",", ":"))
        for col in self.columns:
            if col.spilled:
                col.spill_path.unlink()
        total = n_rows + len(rejected)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "n_rows": n_rows,
            "columns": [
                {"name": name, "dtype": col.dtype.name, "offset": off, "n_values": len(col.values)}
                for name, col, off in zip(self.names, self.columns, offsets, strict=True)
            ],
            "files": [list(f) for f in files] if files is not None else [["", 0, total]],
            "rejected_positions": rejected,
            "info": info or {},
        }
        with open(self.tmp / "meta.json", "w", encoding="utf-8") as fh:
            json.dump(meta, fh, ensure_ascii=False, indent=1)
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.tmp, self.out_dir)
        self._done = True
        return EncodedTable.open(self.out_dir)

    def abort(self) -> None:
        """Discard everything written."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._done = True


# ---------------------------------------------------------------------------------------------- table


class EncodedTable:
    """Rows of a datasource, dictionary-encoded per column (see the module docstring).

    Build one with :meth:`open` (a directory written by :func:`build_dataset` or :class:`TableWriter`)
    or :meth:`from_frame` (a DataFrame of strings, for tests and small inputs).
    """

    def __init__(
        self,
        names: Sequence[str],
        dictionaries: dict[str, np.ndarray] | None,
        codes: dict[str, np.ndarray] | None,
        n_rows: int,
        *,
        rejected_positions: np.ndarray | None = None,
        files: Sequence[tuple[str, int, int]] | None = None,
        info: dict[str, Any] | None = None,
        directory: Path | None = None,
        layout: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self._names = list(names)
        self._dicts: dict[str, np.ndarray] = dict(dictionaries or {})
        self._codes: dict[str, np.ndarray] = dict(codes or {})
        self._n_rows = int(n_rows)
        self._rejected = (
            np.asarray(rejected_positions, dtype=np.int64)
            if rejected_positions is not None
            else np.zeros(0, dtype=np.int64)
        )
        total = self._n_rows + len(self._rejected)
        self._files = [(str(k), int(a), int(b)) for k, a, b in files] if files else [("", 0, total)]
        self.info: dict[str, Any] = dict(info or {})
        self.directory = directory
        self._layout = layout or {}
        self._mmap: np.ndarray | None = None
        self._index = {n: i for i, n in enumerate(self._names)}

    # -- construction

    @classmethod
    def open(cls, directory: Path | str) -> EncodedTable:
        """Open a table written by :func:`build_dataset` / :class:`TableWriter` (codes memory-mapped)."""
        directory = Path(directory)
        try:
            with open(directory / "meta.json", encoding="utf-8") as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            raise DataError(f"no encoded table at {directory}", field="directory") from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DataError(f"{directory}: not an {FORMAT} v{VERSION}", field="directory")
        names = [c["name"] for c in meta["columns"]]
        rejected = np.asarray(meta.get("rejected_positions", []), dtype=np.int64)
        return cls(
            names,
            None,
            None,
            meta["n_rows"],
            rejected_positions=rejected,
            files=[tuple(f) for f in meta["files"]],
            info=meta.get("info"),
            directory=directory,
            layout={c["name"]: (c["dtype"], int(c["offset"])) for c in meta["columns"]},
        )

    @classmethod
    def from_frame(cls, df: pd.DataFrame, out_dir: Path | str | None = None) -> EncodedTable:
        """Encode a DataFrame of strings (NaN/None → ``""``, values stripped); in memory, or written to
        ``out_dir`` in the on-disk format when given."""
        names = [str(c) for c in df.columns]
        if out_dir is not None:
            with TableWriter(out_dir, names) as w:
                for i, col in enumerate(df.columns):
                    w.append_strings(i, _as_strings(df[col]))
                return w.finish()
        dicts: dict[str, np.ndarray] = {}
        codes: dict[str, np.ndarray] = {}
        for name, col in zip(names, df.columns, strict=True):
            stripped = pd.Series(_as_strings(df[col]), dtype=object).str.strip()
            c, uniques = pd.factorize(stripped, use_na_sentinel=False)
            d = np.empty(len(uniques), dtype=object)
            d[:] = [str(u) for u in uniques]
            dicts[name] = d
            codes[name] = c.astype(code_dtype(len(d)))
        return cls(names, dicts, codes, len(df))

    # -- access

    @property
    def names(self) -> list[str]:
        """Column names in schema order."""
        return list(self._names)

    @property
    def n_rows(self) -> int:
        """Number of rows in the table (rejected rows excluded)."""
        return self._n_rows

    @property
    def rejected_positions(self) -> np.ndarray:
        """int64 positions, in the selected output sequence, where a rejected row stood."""
        return self._rejected

    @property
    def files(self) -> list[tuple[str, int, int]]:
        """``(key, first_position, stop_position)`` per input file, positions in the output sequence
        (table rows and rejected rows both count)."""
        return list(self._files)

    @property
    def n_positions(self) -> int:
        """Length of the output sequence: rows plus rejected rows."""
        return self._n_rows + len(self._rejected)

    def _check(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise DataError(f"no column named {name!r}; columns are {self._names}", field=name) from None

    def dictionary(self, name: str) -> np.ndarray:
        """Object array of the column's distinct stripped strings (``""`` = missing, at any index)."""
        d = self._dicts.get(name)
        if d is None:
            self._check(name)
            assert self.directory is not None
            with open(self.directory / "dictionaries.json", encoding="utf-8") as fh:
                all_values = json.load(fh)
            for n, values in zip(self._names, all_values, strict=True):
                arr = np.empty(len(values), dtype=object)
                arr[:] = values
                self._dicts.setdefault(n, arr)
            d = self._dicts[name]
        return d

    def codes(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The column's codes for rows ``[start, stop)`` (memory-mapped for opened tables)."""
        c = self._codes.get(name)
        if c is None:
            self._check(name)
            assert self.directory is not None
            dtype_name, offset = self._layout[name]
            dtype = np.dtype(dtype_name)
            if self._n_rows == 0:
                c = np.zeros(0, dtype=dtype)
            else:
                if self._mmap is None:
                    self._mmap = np.memmap(self.directory / "codes.bin", dtype=np.uint8, mode="r")
                c = self._mmap[offset : offset + self._n_rows * dtype.itemsize].view(dtype)
            self._codes[name] = c
        return c[start:stop]

    def strings(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The column's decoded values (object array of str) for rows ``[start, stop)``."""
        return self.dictionary(name)[self.codes(name, start, stop)]

    def to_frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Decode rows ``[start, stop)`` into a DataFrame of strings (small tables/tests)."""
        return pd.DataFrame({n: self.strings(n, start, stop) for n in self._names}, columns=self._names)

    def iter_row_batches(self, batch_rows: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` row ranges of at most ``batch_rows`` rows covering the table."""
        if batch_rows <= 0:
            raise ValueError("batch_rows must be positive")
        for start in range(0, self._n_rows, batch_rows):
            yield start, min(start + batch_rows, self._n_rows)

    def __repr__(self) -> str:
        where = f" at {self.directory}" if self.directory else ""
        return f"<EncodedTable {self._n_rows} rows × {len(self._names)} columns{where}>"


def _as_strings(col: pd.Series) -> list[str]:
    missing = pd.isna(col).to_numpy()
    return ["" if m else str(v) for v, m in zip(col.tolist(), missing.tolist(), strict=True)]


# -------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Source:
    """One input file: its key (for messages, the random split and ``files``), size and opener."""

    key: str
    size: int
    open: Callable[[], BinaryIO]


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


# The CSV reader.
#
# Files are read in the given order as a stream of ~8 MB blocks cut at a line end. Line starts come from a
# numpy scan of the block (so every row's byte offset is known: the split needs it); lines AML rejects
# before parsing (> 100 KB, an unterminated quote, a bare CR) are taken out; pyarrow parses the rest of
# the block (every column as binary; a row with the wrong number of fields goes to invalid_row_handler,
# whose ``number`` is the row's index among the non-empty lines handed to it); each column is then
# dictionary-encoded by pyarrow and appended to the table. Values may not contain line ends even when
# quoted (aml-reference §3.4), so a line is a row.

_GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 8 << 20
_SAMPLES = 10
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


class _Reader:
    """Reads sources into a TableWriter, keeping the rows a Rearrangement selects."""

    def __init__(self, schema: Any, rearrangement: Any, writer: TableWriter, total_bytes: int) -> None:
        self.schema = schema
        self.rearrangement = rearrangement
        self.writer = writer
        self.total_bytes = total_bytes
        self.names = list(schema.names)
        self.n_columns = len(self.names)
        self.pos = 0  # next position in the selected output sequence
        self.rejected_positions: list[np.ndarray] = []
        self.n_records = 0
        self.n_rejected_total = 0
        self.n_rejected_selected = 0
        self.samples: list[dict[str, Any]] = []
        self.first_bad: dict[str, Any] | None = None
        self.headers: dict[str, str] = {}
        self._convert = pa_csv.ConvertOptions(
            column_types={n: pa.binary() for n in self.names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )

    # -- per file

    def read_file(self, source: Source, file_start: int) -> int:
        """Read one file; returns its (uncompressed) size in bytes."""
        self.key, self.file_start = source.key, file_start
        self.header_pending = bool(self.schema.has_header)
        local = 0  # offset in the file of the first byte not yet handled
        line_no = 0  # lines before ``local``
        carry = b""
        skipping: tuple[int, int, bytes] | None = None  # an overlong line being skipped
        for chunk in _iter_bytes(source):
            if skipping is not None:
                j = chunk.find(b"\n")
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
        elif carry:
            self._block(memoryview(carry), local, line_no)
            local += len(carry)
        return local

    def _long_line(self, offset: int, line_no: int, text: bytes) -> None:
        if self.header_pending:
            self.header_pending = False
            return
        selected = bool(
            self.rearrangement.selects(np.array([offset]), self.total_bytes, self.key, self.file_start)[0]
        )
        self._rejects(np.array([offset]), np.array([line_no + 1]), [1], [text], np.array([selected]))
        if selected:
            self.rejected_positions.append(np.array([self.pos], dtype=np.int64))
            self.pos += 1
        self.n_records += 1

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
            self.headers[self.key] = bytes(block[starts[0] : content_end[0]]).decode("utf-8", "replace")
            self.header_pending = False
            first = 1

        reason = np.zeros(n_lines, dtype=np.int8)
        reason[(content_end - starts) > MAX_ROW_BYTES] = 1
        cr = np.flatnonzero(arr == 13)
        if len(cr) > int(has_cr.sum()):
            line_of = np.searchsorted(starts, cr, side="right") - 1
            bare = cr != content_end[line_of]
            reason[np.unique(line_of[bare])] = 3
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
            data: Any = block[starts[first] :] if first < n_lines else b""
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
        if self.first_bad is None and self.samples:
            self.first_bad = self.samples[0]
        self.n_rejected_total += n
        self.n_rejected_selected += int(np.count_nonzero(selected))
        if self.n_rejected_total > MAX_REJECTED_ROWS:
            fb = self.first_bad or {}
            raise DataError(
                f"more than {MAX_REJECTED_ROWS:,} rows were rejected (reached {self.n_rejected_total:,} in "
                f"{self.key}); the first was {fb.get('file')} line {fb.get('line')}: {fb.get('reason')}",
                field=self.key,
            )

    def _encode(self, table: pa.Table, keep: np.ndarray | None) -> None:
        for i in range(self.n_columns):
            col = table.column(i)
            arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
            enc = pc.dictionary_encode(arr)
            idx = enc.indices.to_numpy(zero_copy_only=False)
            if keep is not None:
                idx = idx[keep]
            self.writer.append_raw(i, enc.dictionary, idx)


def _peek_gzip(source: Source) -> bool:
    fh = source.open()
    try:
        return _read_at_least(fh, 2, 2)[:2] == _GZIP_MAGIC
    finally:
        fh.close()


def build_dataset(
    sources: Sequence[Source], schema: Any, rearrangement: Any, out_dir: Path | str
) -> DatasetInfo:
    """Parse CSV ``sources`` (in the given order) with ``schema``, keep the rows ``rearrangement``
    selects, and write them as an encoded table at ``out_dir`` (atomically).

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
        from amlflow.engine.rearrange import Rearrangement

        rearrangement = Rearrangement()
    if not sources:
        raise DataError("no input data files", field="DataLocationS3")
    sizes = [int(s.size) for s in sources]
    if not rearrangement.is_everything and rearrangement.strategy == "sequential":
        # the split needs the total before reading; gzip members are measured by decompressing once
        sizes = [sum(len(c) for c in _iter_bytes(s)) if _peek_gzip(s) else int(s.size) for s in sources]
    total = sum(sizes)
    with TableWriter(out_dir, schema.names) as writer:
        reader = _Reader(schema, rearrangement, writer, total)
        files: list[tuple[str, int, int]] = []
        read_sizes: list[int] = []
        file_start = 0
        for source, size in zip(sources, sizes, strict=True):
            first = reader.pos
            read_sizes.append(reader.read_file(source, file_start))
            files.append((source.key, first, reader.pos))
            file_start += size
        rejected = (
            np.concatenate(reader.rejected_positions) if reader.rejected_positions else np.zeros(0, np.int64)
        )
        info = DatasetInfo(
            n_rows=writer.n_rows,
            n_rejected=reader.n_rejected_selected,
            data_size_bytes=sum(int(s.size) for s in sources),
            n_files=len(sources),
            rejected_samples=reader.samples,
            n_rows_total=reader.n_records - reader.n_rejected_total,
            n_rejected_total=reader.n_rejected_total,
            files=files,
        )
        meta = info.to_dict()
        meta["data_bytes_read"] = sum(read_sizes)
        meta["headers"] = reader.headers
        meta["rearrangement"] = rearrangement.to_dict()
        writer.finish(rejected_positions=rejected, files=files, info=meta)
    return info
