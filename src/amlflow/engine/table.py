"""The encoded table: how a datasource's rows are stored once parsed, and the :class:`Table` protocol.

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

A NUMERIC input column with more than :data:`VALUE_COLUMN_MIN_VALUES` distinct values is stored
**without a dictionary** instead (a *value column*, format version 3): one float64 per row in
``codes.bin`` (nan where the value is missing or not a number), ``"kind": "values"`` and its
``"missing"``/``"invalid"`` row counts in its ``meta.json`` entry, ``[]`` in ``dictionaries.json``.
Its memory no longer grows with its distinct values (docs/scale.md, "Columns without a dictionary");
:meth:`EncodedTable.values` reads it, :meth:`EncodedTable.dictionary`/:meth:`~EncodedTable.codes`
refuse it. Which columns may become value columns is the writer's caller's choice (``value_columns``:
:func:`amlflow.engine.dataset.value_column_indices`); a table without one is written as version 2,
byte for byte as before.

``rejected_positions`` are the positions, in the selected output sequence, where a rejected row stood.
:class:`TableWriter` writes this layout, :class:`EncodedTable` reads it; the CSV reader that fills a
writer is :func:`amlflow.engine.dataset.build_dataset`. Everything that reads a table (the feature
builder, statistics, training, evaluation, batch output) takes a :class:`Table`, which
:class:`EncodedTable` implements.

Example:
    >>> import pandas as pd
    >>> t = EncodedTable.from_frame(pd.DataFrame({"a": ["x", " y", None, "x"]}))
    >>> t.n_rows, list(t.dictionary("a")), t.codes("a").tolist()
    (4, ['x', 'y', ''], [0, 1, 2, 0])
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from amlflow.engine.errors import DataError
from amlflow.engine.schema import numeric_view

__all__ = [
    "BYTES_PER_DISTINCT_VALUE",
    "FORMAT",
    "SPILL_BYTES",
    "VALUE_COLUMN_MIN_VALUES",
    "VERSION",
    "Columns",
    "EncodedTable",
    "Table",
    "TableWriter",
    "code_dtype",
    "is_value_column",
]

FORMAT = "amlflow-encoded-table"
VERSION = 2
#: the version of a table with a value column (older readers refuse it by its version)
VALUES_VERSION = 3
#: a NUMERIC input column with more distinct values than this is stored as float64 values instead of a
#: dictionary (~22 MB of dictionary at BYTES_PER_DISTINCT_VALUE; 8 B a row on disk after)
VALUE_COLUMN_MIN_VALUES = 1 << 16
SPILL_BYTES = 64 << 20
_ALIGN = 64
#: what one distinct value of a column costs while a table is written (the writer's lookup and value
#: lists and the raw values met): measured on a CSV of random floats, 330-350 B per value from 1 to 3
#: million distinct (docs/scale.md, "The datasource job's memory: per distinct value")
BYTES_PER_DISTINCT_VALUE = 340


# ------------------------------------------------------------------------------------------- protocol


@runtime_checkable
class Columns(Protocol):
    """Dictionary-encoded columns, read by name: what a feature builder needs to evaluate a recipe
    (an encoded table, or the one-row stand-in of a realtime record)."""

    @property
    def names(self) -> list[str]:
        """Column names in schema order."""
        ...

    def dictionary(self, name: str) -> np.ndarray:
        """Object array of the column's distinct stripped strings (``""`` = missing)."""
        ...

    def codes(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Unsigned integer codes into :meth:`dictionary` for rows ``[start, stop)``."""
        ...


@runtime_checkable
class Table(Columns, Protocol):
    """An encoded table as the engine reads it: the feature builder, statistics, training, evaluation and
    batch output take a ``Table``. :class:`EncodedTable` is the implementation (``isinstance`` works: the
    protocol is runtime-checkable, by member names only)."""

    @property
    def n_rows(self) -> int:
        """Number of rows (rejected rows excluded)."""
        ...

    @property
    def n_positions(self) -> int:
        """Length of the output sequence: rows plus rejected rows."""
        ...

    @property
    def rejected_positions(self) -> np.ndarray:
        """int64 positions, in the selected output sequence, where a rejected row stood (sorted)."""
        ...

    @property
    def files(self) -> list[tuple[str, int, int]]:
        """``(key, first_position, stop_position)`` per input file, in output-sequence positions."""
        ...

    @property
    def info(self) -> Mapping[str, Any]:
        """The CSV reader's report (``DatasetInfo.to_dict()`` and more); empty for in-memory tables."""
        ...

    def iter_row_batches(self, batch_rows: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` row ranges of at most ``batch_rows`` rows covering the table."""
        ...

    def kind(self, name: str) -> str:
        """``"values"`` for a column stored without a dictionary, else ``"dictionary"``."""
        ...

    def values(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A value column's float64 rows ``[start, stop)`` (nan: missing or invalid)."""
        ...

    def value_counts(self, name: str) -> dict[str, int]:
        """A value column's ``{"missing": rows, "invalid": rows}``."""
        ...


def code_dtype(n_values: int) -> np.dtype[Any]:
    """The narrowest unsigned dtype able to index a dictionary of ``n_values`` entries."""
    if n_values <= 1 << 8:
        return np.dtype(np.uint8)
    if n_values <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def is_value_column(columns: Columns, name: str) -> bool:
    """Whether ``columns`` stores ``name`` without a dictionary (as :meth:`EncodedTable.values`)."""
    kind = getattr(columns, "kind", None)
    return kind is not None and kind(name) == "values"


# --------------------------------------------------------------------------------------------- writer


class _Segments(abc.ABC):
    """A column's rows as arrays: kept in memory until the table spills them to the column's file."""

    kind = "dictionary"

    def __init__(self, spill_path: Path) -> None:
        self.spill_path = spill_path
        self.values: list[str] = []  # the dictionary (none for a value column)
        self.n = 0
        self.buffered: list[np.ndarray] = []
        self.buffered_bytes = 0
        self.spilled: list[tuple[np.dtype[Any], int]] = []  # segments in the spill file, in order

    @property
    @abc.abstractmethod
    def dtype(self) -> np.dtype[Any]:
        """The dtype the rows are written in (a dictionary's narrowest code dtype, or float64)."""

    def _buffer(self, arr: np.ndarray) -> int:
        if len(arr):
            self.buffered.append(arr)
            self.buffered_bytes += arr.nbytes
        self.n += len(arr)
        return self.buffered_bytes

    def segments(self) -> Iterator[np.ndarray]:
        """Every row's array so far, in order, as written (spilled ones read back one at a time)."""
        if self.spilled:
            with open(self.spill_path, "rb") as fh:
                for seg_dtype, count in self.spilled:
                    yield np.fromfile(fh, dtype=seg_dtype, count=count)
        yield from self.buffered

    def spill(self) -> None:
        """Move the buffered arrays to this column's spill file."""
        if not self.buffered:
            return
        with open(self.spill_path, "ab") as fh:
            for arr in self.buffered:
                fh.write(arr.tobytes())
                self.spilled.append((arr.dtype, len(arr)))
        self.buffered, self.buffered_bytes = [], 0

    def write_codes(self, out: BinaryIO) -> None:
        """Write every row, in the final dtype, to ``out``."""
        dtype = self.dtype
        for arr in self.segments():
            out.write(arr.astype(dtype, copy=False).tobytes())

    def meta(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name, "n_values": len(self.values)}


class _ValueWriter(_Segments):
    """A NUMERIC column stored without a dictionary: one float64 a row, nan where the value is missing
    (empty) or invalid (not a finite number, :func:`~amlflow.engine.schema.numeric_view`), counted."""

    kind = "values"

    def __init__(self, spill_path: Path) -> None:
        super().__init__(spill_path)
        self.n_missing = 0
        self.n_invalid = 0

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float64)

    def append_entries(self, stripped: np.ndarray, local_codes: np.ndarray) -> int:
        """Append rows given as codes into ``stripped`` (a batch's dictionary of stripped strings)."""
        local_codes = np.asarray(local_codes, dtype=np.int64)
        view = numeric_view(stripped)
        counts = np.bincount(local_codes, minlength=len(stripped)) if len(stripped) else np.zeros(0, int)
        missing = np.array([v == "" for v in stripped.tolist()], dtype=bool)
        self.n_missing += int(counts[missing].sum())
        self.n_invalid += int(counts[np.isnan(view) & ~missing].sum())
        return self._buffer(view[local_codes] if len(local_codes) else np.zeros(0, np.float64))

    def append_values(self, values: np.ndarray, n_missing: int, n_invalid: int) -> int:
        """Append rows of another value column (``n_missing``/``n_invalid`` of them nan)."""
        self.n_missing += int(n_missing)
        self.n_invalid += int(n_invalid)
        return self._buffer(np.array(values, dtype=np.float64))

    def meta(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype.name,
            "n_values": 0,
            "kind": "values",
            "missing": self.n_missing,
            "invalid": self.n_invalid,
        }


class _ColumnWriter(_Segments):
    """Merges per-batch dictionaries into one; keeps the codes in memory until the table spills them."""

    def __init__(self, spill_path: Path) -> None:
        super().__init__(spill_path)
        self.index: dict[str, int] = {}
        self.raw_seen: pa.Array | None = None  # raw values met so far (append_raw) ...
        self.raw_map = np.zeros(0, dtype=np.int64)  # ... and their codes

    @property
    def dtype(self) -> np.dtype[Any]:
        return code_dtype(len(self.values))

    def to_values(self, spill_path: Path) -> _ValueWriter:
        """This column's rows so far as a value column (spilled to ``spill_path``); this one is emptied."""
        out = _ValueWriter(spill_path)
        d = np.empty(len(self.values), dtype=object)
        d[:] = self.values
        for codes in self.segments():
            out.append_entries(d, codes)
            out.spill()
        if self.spilled:
            self.spill_path.unlink()
        return out

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

    def _remap_stripped(self, local_values: list[str]) -> np.ndarray:
        """:meth:`_remap` for values already stripped (another table's dictionary): one lookup each."""
        get = self.index.get
        found = [get(v) for v in local_values]
        if None in found:
            for j, code in enumerate(found):
                if code is None:
                    v = local_values[j]
                    code = self.index.get(v)  # a value repeated within local_values
                    if code is None:
                        code = self.index[v] = len(self.values)
                        self.values.append(v)
                    found[j] = code
        return np.asarray(found, dtype=np.int64).reshape(len(local_values))

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
        if not len(local_codes):
            return self._buffer(np.zeros(0, dtype=self.dtype))
        return self._buffer(remap.astype(self.dtype)[local_codes])


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

    def __init__(
        self,
        out_dir: Path | str,
        names: Sequence[str],
        *,
        spill_bytes: int = SPILL_BYTES,
        dictionary_budget: int | None = None,
        value_columns: Collection[int] = (),
        value_threshold: int | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        #: bytes the columns' dictionaries may take (at :data:`BYTES_PER_DISTINCT_VALUE` a value) before
        #: an append switches the largest of ``value_columns`` to values or, when it is none of them,
        #: raises a DataError naming it; None: no limit
        self.dictionary_budget = dictionary_budget
        self._n_values = 0
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError("column names must be unique")
        #: the columns that become value columns past ``value_threshold`` distinct values (NUMERIC inputs)
        self.value_columns = frozenset(int(i) for i in value_columns)
        self.value_threshold = VALUE_COLUMN_MIN_VALUES if value_threshold is None else int(value_threshold)
        self.spill_bytes = spill_bytes
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out_dir.parent / f".{self.out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
        self.tmp.mkdir()
        self.columns: list[_ColumnWriter | _ValueWriter] = [
            _ColumnWriter(self.tmp / f"{i}.spill") for i in range(len(self.names))
        ]
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

    def kind(self, i: int) -> str:
        """``"dictionary"`` or ``"values"``: how column ``i`` is stored so far."""
        return self.columns[i].kind

    def append_column(self, i: int, local_values: Sequence[str], local_codes: np.ndarray) -> None:
        """Append rows to column ``i``: ``local_codes`` index ``local_values`` (stripped on merge)."""
        col = self.columns[i]
        before = col.buffered_bytes
        if isinstance(col, _ValueWriter):
            stripped = np.empty(len(local_values), dtype=object)
            stripped[:] = [v.strip() if v else "" for v in local_values]
            self._buffered += col.append_entries(stripped, np.asarray(local_codes)) - before
        else:
            n_before = len(col.values)
            self._buffered += col.append(local_values, np.asarray(local_codes)) - before
            self._grew(i, len(col.values) - n_before)
        self._maybe_spill()

    def append_raw(self, i: int, local_dict: pa.Array, local_codes: np.ndarray) -> None:
        """Append rows to column ``i``: ``local_codes`` index ``local_dict``, a pyarrow binary/string
        array of raw values (decoded as UTF-8 with replacement, stripped on merge)."""
        col = self.columns[i]
        before = col.buffered_bytes
        if isinstance(col, _ValueWriter):
            texts = local_dict.to_pylist()
            stripped = np.empty(len(texts), dtype=object)
            stripped[:] = [
                (v.decode("utf-8", "replace") if isinstance(v, bytes) else v).strip() if v else ""
                for v in texts
            ]
            self._buffered += col.append_entries(stripped, np.asarray(local_codes)) - before
        else:
            n_before = len(col.values)
            self._buffered += col.append_raw(local_dict, np.asarray(local_codes)) - before
            self._grew(i, len(col.values) - n_before)
        self._maybe_spill()

    def append_table(self, table: Columns, n_rows: int, *, slice_rows: int = 1 << 20) -> None:
        """Append the ``n_rows`` rows of ``table`` (the same columns, values already stripped): each
        column's dictionary is remapped once and its codes are copied in slices of ``slice_rows``, so
        memory stays bounded whatever the table's size (a part merge, :class:`~amlflow.engine.dataset.
        PartMerger`). A value column of ``table`` makes this one's a value column too."""
        if list(table.names) != self.names:
            raise ValueError(f"append_table: columns {table.names} are not {self.names}")
        for i, name in enumerate(self.names):
            if is_value_column(table, name):
                self._append_values(i, table, name, n_rows, slice_rows)
                continue
            col = self.columns[i]
            d = table.dictionary(name)
            if isinstance(col, _ColumnWriter):
                n_before = len(col.values)
                remap = col._remap_stripped([str(v) for v in d.tolist()])
                self._grew(i, len(col.values) - n_before)
            col = self.columns[i]  # it may have become a value column
            for a in range(0, n_rows, slice_rows):
                codes = np.asarray(table.codes(name, a, min(a + slice_rows, n_rows)))
                before = col.buffered_bytes
                if isinstance(col, _ValueWriter):
                    self._buffered += col.append_entries(d, codes) - before
                else:
                    self._buffered += col._append_codes(remap, codes) - before
                self._maybe_spill()

    def _append_values(self, i: int, table: Columns, name: str, n_rows: int, slice_rows: int) -> None:
        if i not in self.value_columns:
            raise ValueError(f"append_table: {name!r} is a value column, which this table's is not")
        col = self.columns[i]
        if not isinstance(col, _ValueWriter):
            col = self._to_values(i)
        assert isinstance(table, Table)
        counts = table.value_counts(name)
        missing, invalid = counts["missing"], counts["invalid"]
        for a in range(0, n_rows, slice_rows):
            values = np.asarray(table.values(name, a, min(a + slice_rows, n_rows)))
            before = col.buffered_bytes
            # the source's counts go with its first slice (the rows are nan wherever they are counted)
            self._buffered += col.append_values(values, missing, invalid) - before
            missing = invalid = 0
            self._maybe_spill()

    def _to_values(self, i: int) -> _ValueWriter:
        col = self.columns[i]
        assert isinstance(col, _ColumnWriter)
        self._n_values -= len(col.values)
        self._buffered -= col.buffered_bytes
        new = col.to_values(self.tmp / f"{i}.values.spill")
        self.columns[i] = new
        return new

    def _grew(self, i: int, new_values: int) -> None:
        """Count ``new_values`` more distinct values of column ``i``: past ``value_threshold``, one of
        ``value_columns`` becomes a value column; past :attr:`dictionary_budget`, the largest of them
        does, or (none left) raise."""
        if not new_values:
            return
        self._n_values += new_values
        if i in self.value_columns and len(self.columns[i].values) > self.value_threshold:
            self._to_values(i)
        budget = self.dictionary_budget
        while budget is not None and self._n_values * BYTES_PER_DISTINCT_VALUE > budget:
            widest = max(range(len(self.columns)), key=lambda j: len(self.columns[j].values))
            if widest in self.value_columns:
                self._to_values(widest)
                continue
            name, n = self.names[widest], len(self.columns[widest].values)
            raise DataError(
                f"{name}: the columns' distinct values would need more memory than the datasource job "
                f"may use: {self._n_values:,} distinct values so far ({name!r} has {n:,}), about "
                f"{self._n_values * BYTES_PER_DISTINCT_VALUE / 2**20:,.0f} MB at "
                f"~{BYTES_PER_DISTINCT_VALUE} B each, over {budget / 2**20:,.0f} MB (half of the job's "
                "memory budget, AMLFLOW_MEMORY_LIMIT, and at least 256 MB). "
                "A NUMERIC input attribute is stored without a dictionary past "
                f"{self.value_threshold:,} distinct values, but this column is kept as a dictionary of "
                "its distinct values (a target, rowId, weight, or not NUMERIC), so one with a value per "
                "row (an ID, a free text) grows with the data: raise AMLFLOW_MEMORY_LIMIT, or leave that "
                'column out of the input (docs/scale.md, "The datasource job\'s memory")',
                field=name,
            )

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
            "version": VALUES_VERSION if any(c.kind == "values" for c in self.columns) else VERSION,
            "n_rows": n_rows,
            "columns": [
                {"name": name, "dtype": col.meta()["dtype"], "offset": off, **col.meta()}
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
        value_counts: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self._names = list(names)
        self._value_counts = {k: dict(v) for k, v in (value_counts or {}).items()}
        self._value_rows: dict[str, np.ndarray] = {}
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
        if meta.get("format") != FORMAT or meta.get("version") not in (VERSION, VALUES_VERSION):
            raise DataError(
                f"{directory}: not an {FORMAT} v{VERSION} or v{VALUES_VERSION}", field="directory"
            )
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
            value_counts={
                c["name"]: {"missing": int(c["missing"]), "invalid": int(c["invalid"])}
                for c in meta["columns"]
                if c.get("kind") == "values"
            },
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

    def kind(self, name: str) -> str:
        """``"values"`` for a column stored without a dictionary (:meth:`values`), else ``"dictionary"``."""
        self._check(name)
        return "values" if name in self._value_counts else "dictionary"

    def value_counts(self, name: str) -> dict[str, int]:
        """A value column's ``{"missing": rows, "invalid": rows}`` (both nan in :meth:`values`)."""
        self._refuse_dictionary(name)
        return dict(self._value_counts[name])

    def values(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A value column's float64 rows ``[start, stop)``, memory-mapped (nan: missing or invalid)."""
        self._refuse_dictionary(name)
        return self._rows(name)[start:stop]

    def _refuse_dictionary(self, name: str) -> None:
        if self.kind(name) != "values":
            raise DataError(f"{name}: not a column without a dictionary; read it with codes()", field=name)

    def _refuse_values(self, name: str, what: str) -> None:
        if name in self._value_counts:
            raise DataError(
                f"{name}: stored without a dictionary (a NUMERIC column with more than "
                f"{VALUE_COLUMN_MIN_VALUES:,} distinct values), so it has no {what}; read it with values()",
                field=name,
            )

    def dictionary(self, name: str) -> np.ndarray:
        """Object array of the column's distinct stripped strings (``""`` = missing, at any index)."""
        self._refuse_values(name, "dictionary")
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
            self._refuse_values(name, "codes")
            c = self._rows(name)
        return c[start:stop]

    def _rows(self, name: str) -> np.ndarray:
        """A dictionary column's codes, or a value column's floats: every row, mapped from disk once."""
        cache = self._value_rows if name in self._value_counts else self._codes
        c = cache.get(name)
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
                # a plain ndarray over the mapping: slicing a np.memmap costs ~3 us more (its
                # __array_finalize__), once per column per batch of rows
                c = np.asarray(self._mmap[offset : offset + self._n_rows * dtype.itemsize]).view(dtype)
            cache[name] = c
        return c

    def strings(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The column's decoded values (object array of str) for rows ``[start, stop)``; a value column's
        as ``repr`` of its floats (``""`` where missing or invalid: its text is not kept)."""
        if self.kind(name) == "values":
            out = np.empty(len(self.values(name, start, stop)), dtype=object)
            out[:] = ["" if v != v else repr(v) for v in self.values(name, start, stop).tolist()]
            return out
        values: np.ndarray = self.dictionary(name)[self.codes(name, start, stop)]
        return values

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
