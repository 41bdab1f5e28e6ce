"""The encoded table: how a datasource's rows are stored once parsed, and the CSV reader that builds it.

Every attribute is stored the same way whatever its type (docs/architecture.md, "the encoded table"):
a *dictionary* of the distinct raw strings (stripped of surrounding white space; ``""`` = missing) and
one unsigned integer *code* per row indexing it (``uint8``/``uint16``/``uint32``, the narrowest that
fits). Types are views computed on the dictionary (:mod:`amlflow.engine.schema`).

On disk (one directory, written into a temporary sibling and renamed into place, so readers never see
half a table)::

    meta.json          {"format": "amlflow-encoded-table", "version": 1, "n_rows", "columns": [...],
                        "files": [[key, first_position, stop_position], ...], "info": {...}}
    <i>.dict.json      the dictionary of column i (a JSON list of strings)
    <i>.npy            the codes of column i (memory-mapped when opened)
    rejected.npy       positions in the selected output sequence where a rejected row stood (int64)

Example:
    >>> import pandas as pd
    >>> t = EncodedTable.from_frame(pd.DataFrame({"a": ["x", " y", None, "x"]}))
    >>> t.n_rows, list(t.dictionary("a")), t.codes("a").tolist()
    (4, ['x', 'y', ''], [0, 1, 2, 0])
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

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
VERSION = 1
MAX_ROW_BYTES = 100 * 1024
MAX_REJECTED_ROWS = 10_000
_NPY_HEADER_BYTES = 128


def code_dtype(n_values: int) -> np.dtype[Any]:
    """The narrowest unsigned dtype able to index a dictionary of ``n_values`` entries."""
    if n_values <= 1 << 8:
        return np.dtype(np.uint8)
    if n_values <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def _npy_header(dtype: np.dtype[Any], n: int) -> bytes:
    """A version 1.0 ``.npy`` header of exactly ``_NPY_HEADER_BYTES`` bytes for a 1-D array."""
    text = f"{{'descr': '{dtype.str}', 'fortran_order': False, 'shape': ({n},), }}"
    body_len = _NPY_HEADER_BYTES - 10
    text = text.ljust(body_len - 1) + "\n"
    if len(text) != body_len:  # pragma: no cover - would need > 10**60 rows
        raise ValueError("npy header too long")
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


# --------------------------------------------------------------------------------------------- writer


class _ColumnWriter:
    """Merges per-batch dictionaries into one and appends codes to ``<i>.npy`` as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index: dict[str, int] = {}
        self.values: list[str] = []
        self.dtype = np.dtype(np.uint8)
        self.n = 0
        self.fh: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self.fh.write(b"\0" * _NPY_HEADER_BYTES)

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

    def _widen(self) -> None:
        need = code_dtype(len(self.values))
        if need.itemsize <= self.dtype.itemsize:
            return
        assert self.fh is not None
        self.fh.close()
        old = np.fromfile(self.path, dtype=self.dtype, offset=_NPY_HEADER_BYTES)
        with open(self.path, "wb") as fh:
            fh.write(b"\0" * _NPY_HEADER_BYTES)
            fh.write(old.astype(need).tobytes())
        self.dtype = need
        self.fh = open(self.path, "ab")  # noqa: SIM115

    def append(self, local_values: Sequence[str], local_codes: np.ndarray) -> None:
        """Append rows given as codes into ``local_values`` (a batch's own dictionary)."""
        remap = self._remap(local_values)
        self._widen()
        assert self.fh is not None
        if len(local_codes):
            self.fh.write(remap.astype(self.dtype)[local_codes].tobytes())
        self.n += len(local_codes)

    def finish(self, directory: Path, i: int) -> None:
        assert self.fh is not None
        self.fh.close()
        self.fh = None
        with open(self.path, "r+b") as fh:
            fh.write(_npy_header(self.dtype, self.n))
        os.replace(self.path, directory / f"{i}.npy")
        with open(directory / f"{i}.dict.json", "w", encoding="utf-8") as fh:
            json.dump(self.values, fh, ensure_ascii=False)

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class TableWriter:
    """Writes an encoded table incrementally, atomically: nothing appears at ``out_dir`` until
    :meth:`finish`; :meth:`abort` (or an exception inside ``with``) leaves nothing behind.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "t"
        >>> with TableWriter(d, ["a"]) as w:
        ...     w.append_column(0, ["x", "y"], np.array([0, 1, 1]))
        ...     t = w.finish()
        >>> EncodedTable.open(d).codes("a").tolist()
        [0, 1, 1]
    """

    def __init__(self, out_dir: Path | str, names: Sequence[str]) -> None:
        self.out_dir = Path(out_dir)
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError("column names must be unique")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out_dir.parent / f".{self.out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
        self.tmp.mkdir()
        self.columns = [_ColumnWriter(self.tmp / f"{i}.codes.part") for i in range(len(self.names))]
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
        self.columns[i].append(local_values, np.asarray(local_codes))

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
        """Close every column, write ``meta.json`` and rename the table into place."""
        counts = {c.n for c in self.columns}
        if len(counts) > 1:
            raise ValueError(f"columns have different row counts: {sorted(counts)}")
        n_rows = self.n_rows
        rejected = np.asarray(rejected_positions, dtype=np.int64)
        for i, col in enumerate(self.columns):
            col.finish(self.tmp, i)
        np.save(self.tmp / "rejected.npy", rejected)
        total = n_rows + len(rejected)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "n_rows": n_rows,
            "columns": [
                {"name": name, "dtype": col.dtype.name, "n_values": len(col.values)}
                for name, col in zip(self.names, self.columns, strict=True)
            ],
            "files": [list(f) for f in files] if files is not None else [["", 0, total]],
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
        for col in self.columns:
            col.abort()
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
        dtypes: dict[str, str] | None = None,
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
        self._dtypes = dtypes or {}
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
        rejected = np.load(directory / "rejected.npy")
        return cls(
            names,
            None,
            None,
            meta["n_rows"],
            rejected_positions=rejected,
            files=[tuple(f) for f in meta["files"]],
            info=meta.get("info"),
            directory=directory,
            dtypes={c["name"]: c["dtype"] for c in meta["columns"]},
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
            i = self._check(name)
            assert self.directory is not None
            with open(self.directory / f"{i}.dict.json", encoding="utf-8") as fh:
                values = json.load(fh)
            d = np.empty(len(values), dtype=object)
            d[:] = values
            self._dicts[name] = d
        return d

    def codes(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The column's codes for rows ``[start, stop)`` (memory-mapped for opened tables)."""
        c = self._codes.get(name)
        if c is None:
            i = self._check(name)
            assert self.directory is not None
            if self._n_rows == 0:
                c = np.zeros(0, dtype=self._dtypes.get(name, "uint8"))
            else:
                c = np.load(self.directory / f"{i}.npy", mmap_mode="r")
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
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in col.tolist()]


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


def build_dataset(sources: Sequence[Source], schema: Any, rearrangement: Any, out_dir: Path) -> DatasetInfo:
    """Parse CSV ``sources`` (in order) with ``schema``, keep the rows ``rearrangement`` selects, and
    write them as an encoded table at ``out_dir``."""
    raise NotImplementedError("build_dataset: CSV reading lands in the next commit")
