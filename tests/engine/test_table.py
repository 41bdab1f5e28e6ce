"""engine.table: EncodedTable in memory and on disk, TableWriter, the Table protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amlflow.engine.errors import DataError
from amlflow.engine.table import EncodedTable, Table, TableWriter, code_dtype

TABLE_FILES = ["codes.bin", "dictionaries.json", "meta.json"]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": ["x", " y", None, "x", "", "y "],
            "b": ["1", "2.5", "nan", float("nan"), "1", "oops"],
        }
    )


def test_from_frame_in_memory() -> None:
    t = EncodedTable.from_frame(_frame())
    assert t.names == ["a", "b"]
    assert t.n_rows == 6
    assert t.dictionary("a").dtype == object
    assert list(t.dictionary("a")) == ["x", "y", ""]
    assert t.codes("a").tolist() == [0, 1, 2, 0, 2, 1]
    assert t.codes("a").dtype == np.uint8
    assert t.strings("b").tolist() == ["1", "2.5", "nan", "", "1", "oops"]
    assert t.codes("a", 2, 4).tolist() == [2, 0]
    assert t.rejected_positions.tolist() == []
    assert t.files == [("", 0, 6)]


def test_from_frame_nullable_and_non_string_columns() -> None:
    df = pd.DataFrame({"a": pd.array(["x", None, "y"], dtype="string"), "b": [1, None, 3]})
    t = EncodedTable.from_frame(df)
    assert t.strings("a").tolist() == ["x", "", "y"]
    assert t.strings("b").tolist() == ["1.0", "", "3.0"]


def test_from_frame_round_trip_on_disk(tmp_path: Path) -> None:
    df = _frame()
    mem = EncodedTable.from_frame(df)
    disk = EncodedTable.from_frame(df, tmp_path / "t")
    again = EncodedTable.open(tmp_path / "t")
    for t in (disk, again):
        assert t.names == mem.names
        assert t.n_rows == mem.n_rows
        for name in t.names:
            assert t.strings(name).tolist() == mem.strings(name).tolist()
    # memory-mapped, not read into memory: a view whose bases lead to the file's mapping
    base = again.codes("a")
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap) and str(base.filename).endswith("codes.bin")
    pd.testing.assert_frame_equal(again.to_frame(), mem.to_frame())
    # nothing left behind but the table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == TABLE_FILES


@pytest.mark.parametrize("spill_bytes", [1 << 30, 1000])
def test_writer_widens_codes_and_merges_batches(tmp_path: Path, spill_bytes: int) -> None:
    values = [f"v{i}" for i in range(70_000)]
    with TableWriter(tmp_path / "t", ["c", "d"], spill_bytes=spill_bytes) as w:
        # three batches, each with its own local dictionary; duplicates across batches merge
        for lo, hi in ((0, 200), (100, 1000), (900, 70_000)):
            local = values[lo:hi]
            codes = np.arange(hi - lo)[::-1]
            w.append_column(0, local, codes)
            w.append_column(1, ["same", " same "], np.zeros(hi - lo, dtype=np.int64))
        t = w.finish(rejected_positions=[3, 5], files=[("k1", 0, 10), ("k2", 10, 200 + 900 + 69_100 + 2)])
    assert t.codes("c").dtype == np.uint32
    assert sorted(t.dictionary("c").tolist()) == sorted(values)
    assert len(t.dictionary("c")) == 70_000
    assert t.n_rows == 200 + 900 + 69_100
    expected = values[0:200][::-1] + values[100:1000][::-1] + values[900:70_000][::-1]
    assert t.strings("c").tolist() == expected
    assert t.dictionary("d").tolist() == ["same"]
    assert t.codes("d").dtype == np.uint8
    assert t.rejected_positions.tolist() == [3, 5]
    assert t.files == [("k1", 0, 10), ("k2", 10, 70_202)]
    assert t.n_positions == 70_202
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert meta["columns"][0]["dtype"] == "uint32"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == TABLE_FILES


def test_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), TableWriter(tmp_path / "t", ["a"]) as w:
        w.append_strings(0, ["x"])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_existing_table(tmp_path: Path) -> None:
    EncodedTable.from_frame(pd.DataFrame({"a": ["1", "2"]}), tmp_path / "t")
    t = EncodedTable.from_frame(pd.DataFrame({"b": ["3"]}), tmp_path / "t")
    assert t.names == ["b"]
    assert EncodedTable.open(tmp_path / "t").strings("b").tolist() == ["3"]


def test_empty_table(tmp_path: Path) -> None:
    t = EncodedTable.from_frame(pd.DataFrame({"a": pd.Series([], dtype=object)}), tmp_path / "t")
    assert t.n_rows == 0
    assert t.codes("a").tolist() == []
    assert list(t.iter_row_batches(10)) == []


def test_iter_row_batches() -> None:
    t = EncodedTable.from_frame(pd.DataFrame({"a": [str(i) for i in range(10)]}))
    assert list(t.iter_row_batches(4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(t.iter_row_batches(10)) == [(0, 10)]
    with pytest.raises(ValueError):
        list(t.iter_row_batches(0))


def test_unknown_column_and_missing_table(tmp_path: Path) -> None:
    t = EncodedTable.from_frame(pd.DataFrame({"a": ["1"]}))
    with pytest.raises(DataError, match="no column named 'zz'"):
        t.dictionary("zz")
    with pytest.raises(DataError, match="no encoded table"):
        EncodedTable.open(tmp_path / "nope")


def test_code_dtype() -> None:
    assert code_dtype(256) == np.uint8
    assert code_dtype(257) == np.uint16
    assert code_dtype(65_536) == np.uint16
    assert code_dtype(65_537) == np.uint32


def test_encoded_table_implements_the_table_protocol(tmp_path: Path) -> None:
    """In memory and opened from disk, an EncodedTable has every member of :class:`Table`."""
    for t in (EncodedTable.from_frame(_frame()), EncodedTable.from_frame(_frame(), tmp_path / "t")):
        assert isinstance(t, Table)
        assert (t.n_rows, t.n_positions, t.rejected_positions.tolist()) == (6, 6, [])
        assert t.files == [("", 0, 6)]
        assert dict(t.info) == {}
        assert t.dictionary("a")[t.codes("a", 1, 3)].tolist() == ["y", ""]
