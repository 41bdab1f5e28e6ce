"""engine.dataset: build_dataset (CSV reading, rejected rows, files, splits) into an encoded table."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amlflow.engine import dataset as dataset_mod
from amlflow.engine.dataset import MAX_ROW_BYTES, DatasetInfo, Source, build_dataset
from amlflow.engine.errors import DataError
from amlflow.engine.rearrange import parse_rearrangement
from amlflow.engine.schema import Schema, binary_view, parse_schema
from amlflow.engine.table import EncodedTable


def _schema(names: list[str], header: bool = False, types: str = "CATEGORICAL") -> Schema:
    return parse_schema(
        json.dumps(
            {
                "dataFileContainsHeader": header,
                "attributes": [{"attributeName": n, "attributeType": types} for n in names],
            }
        )
    )


def _src(key: str, data: bytes) -> Source:
    return Source(key, len(data), lambda: io.BytesIO(data))


def _file_src(path: Path, key: str | None = None) -> Source:
    return Source(key or path.name, path.stat().st_size, lambda: open(path, "rb"))


def _build(
    tmp_path: Path, sources: list[Source], schema: Schema, split: str | None = None, name: str = "t"
) -> tuple[DatasetInfo, EncodedTable]:
    info = build_dataset(sources, schema, parse_rearrangement(split), tmp_path / name)
    return info, EncodedTable.open(tmp_path / name)


def _seq(begin: int, end: int, complement: bool = False) -> str:
    return json.dumps({"splitting": {"percentBegin": begin, "percentEnd": end, "complement": complement}})


def test_banking_sequential_split_is_exactly_aml(tmp_path: Path, data_dir: Path) -> None:
    """AML's own evaluation of banking.csv: 28,833 training rows, 12,355 evaluation rows, 1,363 positives."""
    path = data_dir / "aml-banking" / "banking.csv"
    schema = parse_schema((data_dir / "aml-banking" / "banking.csv.schema").read_text())
    info_tr, train = _build(tmp_path, [_file_src(path)], schema, _seq(0, 70), "train")
    info_ev, evalu = _build(tmp_path, [_file_src(path)], schema, _seq(70, 100), "eval")
    _, comp = _build(tmp_path, [_file_src(path)], schema, _seq(0, 70, complement=True), "comp")
    assert (info_tr.n_rows, info_ev.n_rows, comp.n_rows) == (28_833, 12_355, 12_355)
    assert info_tr.n_rejected == info_ev.n_rejected == 0
    assert info_tr.data_size_bytes == path.stat().st_size == 4_882_918
    y = binary_view(evalu.dictionary("y"))[evalu.codes("y")]
    assert int(np.nansum(y)) == 1_363
    assert sorted(evalu.dictionary("y").tolist()) == ["0", "1"]  # CRLF stripped
    assert comp.strings("age").tolist() == evalu.strings("age").tolist()
    # "previous" is BINARY in AML's schema but holds 0..7: values, not rejected rows
    assert set(train.dictionary("previous").tolist()) >= {"0", "1", "2"}


def test_mnist_sample_gz_with_and_without_header(tmp_path: Path, data_dir: Path) -> None:
    path = data_dir / "mnist-sample" / "train.csv.gz"
    columns = pd.read_csv(path, nrows=0).columns.tolist()
    checked = ["label", "pixel0", "pixel350", "pixel783"]
    expected = pd.read_csv(path, dtype=str, usecols=checked)
    schema = _schema(columns, header=True, types="NUMERIC")
    info, t = _build(tmp_path, [_file_src(path)], schema)
    assert (info.n_rows, t.n_rows, len(t.names)) == (5000, 5000, 785)
    for name in checked:
        assert t.strings(name).tolist() == expected[name].tolist()
    assert t.info["headers"] == {"train.csv.gz": ",".join(columns)}
    # the headerless variant: 784 pixels then the label
    path2 = data_dir / "mnist-sample" / "train_data.csv.gz"
    names2 = [f"pixel{i}" for i in range(784)] + ["label"]
    _, t2 = _build(tmp_path, [_file_src(path2)], _schema(names2), name="t2")
    assert t2.n_rows == 5000
    expected2 = pd.read_csv(path2, dtype=str, header=None, usecols=[350, 784]).set_axis(
        ["pixel350", "label"], axis=1
    )
    assert t2.strings("label").tolist() == expected2["label"].tolist()
    assert t2.strings("pixel350").tolist() == expected2["pixel350"].tolist()


def test_quotes_crlf_and_empty_lines(tmp_path: Path) -> None:
    data = (
        b'id,text,n\r\n1,"a, b",3\r\n\r\n2,"say ""hi""", 4 \r\n3,,\r\n'
        b'4,"x"y,5\r\n5,plain"quote,6'
    )  # last line without a newline
    info, t = _build(tmp_path, [_src("f.csv", data)], _schema(["id", "text", "n"], header=True))
    assert info.n_rows == 5 and info.n_rejected == 0
    assert t.strings("text").tolist() == ["a, b", 'say "hi"', "", "xy", 'plain"quote']
    assert t.strings("n").tolist() == ["3", "4", "", "5", "6"]
    assert t.rejected_positions.tolist() == []


def test_rejected_rows_counted_with_positions(tmp_path: Path) -> None:
    long_value = "x" * (MAX_ROW_BYTES + 10)
    lines = [
        "a,b,c",  # header
        "1,2,3",  # pos 0
        "4,5",  # pos 1: too few fields
        "6,7,8,9",  # pos 2: too many
        "",  # empty: not a row
        '10,"open,11',  # pos 3: unterminated quote
        f"12,{long_value},13",  # pos 4: > 100 KB
        "14,1\r5,16",  # pos 5: bare CR inside
        "17,18,19",  # pos 6
    ]
    data = ("\n".join(lines) + "\n").encode()
    info, t = _build(tmp_path, [_src("bad.csv", data)], _schema(["a", "b", "c"], header=True))
    assert info.n_rows == 2 and t.n_rows == 2
    assert info.n_rejected == info.n_rejected_total == 5
    assert t.rejected_positions.tolist() == [1, 2, 3, 4, 5]
    assert t.strings("a").tolist() == ["1", "17"]
    assert [(s["line"], s["reason"]) for s in info.rejected_samples] == [
        (3, "expected 3 fields, found 2"),
        (4, "expected 3 fields, found 4"),
        (6, "unterminated quote"),
        (7, "row longer than 100 KB"),
        (8, "carriage return inside the row"),
    ]
    assert info.rejected_samples[0]["text"] == "4,5"
    assert info.rejected_samples[0]["offset"] == data.index(b"4,5")
    assert t.files == [("bad.csv", 0, 7)]


def test_rejected_rows_only_in_the_selected_range_get_positions(tmp_path: Path) -> None:
    rows = [f"{i},{i}" if i % 10 else f"{i}" for i in range(100)]  # every 10th row is short
    data = ("\n".join(rows) + "\n").encode()
    schema = _schema(["a", "b"])
    info, t = _build(tmp_path, [_src("f", data)], schema, _seq(50, 100))
    starts = np.cumsum([0] + [len(r) + 1 for r in rows[:-1]])
    sel = starts * 100 >= 50 * len(data)
    first = int(np.argmax(sel))
    bad_sel = [i - first for i in range(first, 100) if i % 10 == 0]
    assert t.rejected_positions.tolist() == bad_sel
    assert info.n_rejected == len(bad_sel) and info.n_rejected_total == 10
    assert info.n_rows + info.n_rejected == 100 - first
    assert t.files == [("f", 0, 100 - first)]


@pytest.mark.parametrize(
    "split",
    [
        _seq(50, 100),
        _seq(0, 50),
        json.dumps({"splitting": {"percentBegin": 0, "percentEnd": 60, "strategy": "random"}}),
    ],
)
def test_unselected_rows_are_checked_as_the_selected_ones(tmp_path: Path, split: str) -> None:
    """Rows a split leaves out are not parsed, but their field counts are checked all the same: the same
    rejects, reasons and samples as a read of every row, quoted fields included."""
    rows = [f"{i},v{i},{i % 3}" for i in range(200)]
    rows[7] = "7,short"  # two fields
    rows[31] = '31,"a,b",2'  # three fields: the comma is quoted
    rows[44] = '44,"a,b"'  # two fields, three if its commas were counted
    rows[120] = "120,x,y,z"  # four
    rows[150] = '150,"q",1,extra'  # four, with a quote
    rows[170] = '"170,5",1'  # two, with a quote
    data = ("\n".join(rows) + "\n").encode()
    schema = _schema(["a", "b", "c"])
    every, _ = _build(tmp_path, [_src("f", data)], schema, None, "every")
    info, t = _build(tmp_path, [_src("f", data)], schema, split, "part")
    assert every.n_rejected_total == info.n_rejected_total == 5
    assert info.rejected_samples == every.rejected_samples
    assert [s["reason"] for s in info.rejected_samples] == [
        "expected 3 fields, found 2",
        "expected 3 fields, found 2",
        "expected 3 fields, found 4",
        "expected 3 fields, found 4",
        "expected 3 fields, found 2",
    ]
    starts = np.cumsum([0] + [len(r) + 1 for r in rows[:-1]])
    sel = parse_rearrangement(split).selects(starts, len(data), "f")
    good = np.ones(200, dtype=bool)
    good[[7, 44, 120, 150, 170]] = False
    assert t.strings("a").tolist() == [str(i) for i in np.flatnonzero(sel & good)]
    assert info.n_rejected == int((sel & ~good).sum())
    assert t.strings("b").tolist() == ["a,b" if i == 31 else f"v{i}" for i in np.flatnonzero(sel & good)]


def test_more_than_10000_rejected_rows_fail(tmp_path: Path) -> None:
    good = b"1,2\n" * 5
    data = good + b"1\n" * 10_001
    with pytest.raises(DataError, match=r"more than 10,000 rows were rejected") as info:
        _build(tmp_path, [_src("s3://b/many-bad.csv", data)], _schema(["a", "b"]))
    assert "s3://b/many-bad.csv line 6: expected 2 fields, found 1" in str(info.value)
    assert not (tmp_path / "t").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the temporary table is gone too
    # exactly 10,000 is still fine
    info2, _ = _build(tmp_path, [_src("ok.csv", good + b"1\n" * 10_000)], _schema(["a", "b"]))
    assert (info2.n_rows, info2.n_rejected) == (5, 10_000)


def test_dictionaries_over_the_budget_fail_naming_the_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column with a value per row grows its dictionary with the data: past half the job's memory
    budget the job fails saying which column and how much, and leaves no table behind."""
    monkeypatch.setattr(dataset_mod, "MIN_DICTIONARY_BYTES", 0)  # no floor: a small input can pass it
    rows = [f"{i * 0.001!r},{i % 2},c{i % 3}" for i in range(20_000)]
    data = ("x,y,z\n" + "\n".join(rows) + "\n").encode()
    schema = _schema(["x", "y", "z"], header=True)
    budget = 2 * 10_000 * dataset_mod.BYTES_PER_DISTINCT_VALUE  # dictionaries may take half: 10,000 values
    with pytest.raises(DataError) as info:
        build_dataset([_src("f", data)], schema, None, tmp_path / "t", memory_budget=budget)
    assert info.value.field == "x"
    message = str(info.value)
    assert message.startswith("x: the columns' distinct values would need more memory than the datasource")
    assert "('x' has " in message and "AMLFLOW_MEMORY_LIMIT" in message
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written
    # within the budget (and without one: the machine's default) it is read
    ok = build_dataset([_src("f", data)], schema, None, tmp_path / "ok", memory_budget=4 * budget)
    assert ok.n_rows == 20_000
    assert build_dataset([_src("f", data)], schema, None, tmp_path / "default").n_rows == 20_000
    # the floor: a budget set small (to make training stream, say) still reads an ordinary datasource
    monkeypatch.setattr(dataset_mod, "MIN_DICTIONARY_BYTES", 4 * budget)
    floor = build_dataset([_src("f", data)], schema, None, tmp_path / "floor", memory_budget=1)
    assert floor.n_rows == 20_000


def test_multiple_files_in_order_with_headers_and_spans(tmp_path: Path) -> None:
    f1 = b"k,v\n1,a\n2,b\n"
    f2 = b"k,v\n3,c\nbad\n4,d\n"
    f3 = gzip.compress(b"k,v\r\n5,e\r\n")
    srcs = [_src("p/part-1", f1), _src("p/part-2", f2), _src("p/part-3.gz", f3)]
    info, t = _build(tmp_path, srcs, _schema(["k", "v"], header=True))
    assert info.n_files == 3 and info.n_rows == 5 and info.n_rejected == 1
    assert t.strings("k").tolist() == ["1", "2", "3", "4", "5"]
    assert t.files == [("p/part-1", 0, 2), ("p/part-2", 2, 5), ("p/part-3.gz", 5, 6)]
    assert t.rejected_positions.tolist() == [3]
    assert info.data_size_bytes == len(f1) + len(f2) + len(f3)
    assert info.rejected_samples[0]["file"] == "p/part-2" and info.rejected_samples[0]["line"] == 3
    # without a header the header lines are rows
    _, t2 = _build(tmp_path, srcs[:1], _schema(["k", "v"]), name="t2")
    assert t2.strings("k").tolist() == ["k", "1", "2"]


def test_sequential_split_across_files_uses_whole_input_bytes(tmp_path: Path) -> None:
    f1 = b"".join(f"{i:04d}\n".encode() for i in range(50))  # 250 bytes
    f2 = b"".join(f"{i:04d}\n".encode() for i in range(50, 100))
    srcs = [_src("a", f1), _src("b", f2)]
    _, t = _build(tmp_path, srcs, _schema(["n"]), _seq(40, 60))
    assert t.strings("n").tolist() == [f"{i:04d}" for i in range(40, 60)]
    assert t.files == [("a", 0, 10), ("b", 10, 20)]
    # gzip input: the split uses the uncompressed sizes, so it selects the same rows
    gz = [_src("a.gz", gzip.compress(f1)), _src("b.gz", gzip.compress(f2))]
    _, tg = _build(tmp_path, gz, _schema(["n"]), _seq(40, 60), name="tg")
    assert tg.strings("n").tolist() == t.strings("n").tolist()


def test_random_split_and_complement_partition(tmp_path: Path, data_dir: Path) -> None:
    path = data_dir / "wine" / "winequality-red-comma.csv"
    names = pd.read_csv(path, nrows=0).columns.tolist()
    schema = _schema(names, header=True, types="NUMERIC")
    doc = {"percentBegin": 0, "percentEnd": 70, "strategy": "random", "strategyParams": {"randomSeed": "x"}}
    a_info, a = _build(tmp_path, [_file_src(path)], schema, json.dumps({"splitting": doc}), "a")
    _, a2 = _build(tmp_path, [_file_src(path)], schema, json.dumps({"splitting": doc}), "a2")
    _, b = _build(
        tmp_path, [_file_src(path)], schema, json.dumps({"splitting": {**doc, "complement": True}}), "b"
    )
    _, full = _build(tmp_path, [_file_src(path)], schema, None, "full")
    assert a.n_rows + b.n_rows == full.n_rows == 1599
    assert 0.65 < a.n_rows / 1599 < 0.75
    assert a.to_frame().equals(a2.to_frame())
    # input order kept: the two sides interleave back into the full table
    raw = path.read_bytes()
    starts = np.flatnonzero(np.frombuffer(raw, np.uint8) == 10)[:-1] + 1
    mask = parse_rearrangement(json.dumps({"splitting": doc})).selects(starts, len(raw), path.name)
    pd.testing.assert_frame_equal(a.to_frame(), full.to_frame()[mask].reset_index(drop=True))
    pd.testing.assert_frame_equal(b.to_frame(), full.to_frame()[~mask].reset_index(drop=True))
    assert a_info.n_rows_total == 1599


def test_small_chunks_give_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows straddling read chunks, overlong lines spanning several chunks, multi-member gzip."""
    rows = [f"{i},{'v' * (i % 7)},{i % 3}" for i in range(3000)]
    rows[100] = "100," + "y" * (MAX_ROW_BYTES + 5000) + ",1"  # rejected, spans many small chunks
    rows[200] = "200,short"
    data = ("\n".join(rows)).encode()  # no final newline
    schema = _schema(["a", "b", "c"])
    big_info, big = _build(tmp_path, [_src("f", data)], schema, _seq(10, 90), "big")
    monkeypatch.setattr(dataset_mod, "CHUNK_BYTES", 4096)
    small_info, small = _build(tmp_path, [_src("f", data)], schema, _seq(10, 90), "small")
    assert big_info.n_rejected_total == small_info.n_rejected_total == 2
    pd.testing.assert_frame_equal(big.to_frame(), small.to_frame())
    assert big.rejected_positions.tolist() == small.rejected_positions.tolist()
    assert sorted(s["reason"] for s in small_info.rejected_samples) == [
        "expected 3 fields, found 2",
        "row longer than 100 KB",
    ]
    multi = gzip.compress(data[:5000]) + gzip.compress(data[5000:])
    _, gz = _build(tmp_path, [_src("f.gz", multi)], schema, _seq(10, 90), "gz")
    pd.testing.assert_frame_equal(gz.to_frame(), small.to_frame())


def test_bad_gzip_and_no_sources(tmp_path: Path) -> None:
    whole = gzip.compress(b"1,2\n" * 1000)
    with pytest.raises(DataError, match="f.gz: the gzip data is truncated"):
        _build(tmp_path, [_src("f.gz", whole[: len(whole) // 2])], _schema(["a", "b"]))
    with pytest.raises(DataError, match="not a valid gzip"):
        _build(tmp_path, [_src("g.gz", b"\x1f\x8b" + b"garbage" * 10)], _schema(["a", "b"]))
    with pytest.raises(DataError, match="no input data files"):
        build_dataset([], _schema(["a"]), None, tmp_path / "t")


def test_non_utf8_bytes_are_replaced(tmp_path: Path) -> None:
    _, t = _build(tmp_path, [_src("f", "café,1\n".encode("latin-1"))], _schema(["a", "b"]))
    assert t.strings("a").tolist() == ["caf\ufffd"]


class _Trickle(io.RawIOBase):
    """A stream that returns at most 1 byte per read (like a slow network body)."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(1 if n != 0 else 0)


def test_short_reads_still_detect_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"a,b\n1,2\n3,4\n")
    src = Source("t.gz", len(data), lambda: _Trickle(data))
    info, t = _build(tmp_path, [src], _schema(["a", "b"], header=True), _seq(0, 100))
    assert info.n_rows == 2 and t.strings("b").tolist() == ["2", "4"]
    _, t2 = _build(tmp_path, [src], _schema(["a", "b"], header=True), _seq(0, 50), name="t2")
    assert t2.strings("a").tolist() == ["1"]


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b'a,"b""c",d', True),
        (b'"ab"c,d', True),
        (b'x,"a"b"c,d', True),
        (b'a,b"c', True),
        (b'"",""', True),
        (b'"ab"",x', False),
        (b'"a,b', False),
        (b'"', False),
    ],
)
def test_unterminated_quote_detection_matches_pyarrow(line: bytes, ok: bool, tmp_path: Path) -> None:
    data = line + b"\n1,2,3\n"
    info, t = _build(tmp_path, [_src("f", data)], _schema(["a", "b", "c"]))
    assert t.strings("a").tolist()[-1] == "1"  # the next line is always its own row
    reasons = [r["reason"] for r in info.rejected_samples if r["line"] == 1]
    assert ("unterminated quote" in reasons) is (not ok)


def test_pathological_quotes_are_rejected(tmp_path: Path) -> None:
    """A 90 KB unterminated field of escaped quotes: the possessive field pattern rejects it without
    backtracking (a backtracking pattern would not finish within the suite's per-test timeout)."""
    line = b'"' + b'a""' * 30_000 + b"b"  # unterminated, many escaped quotes, < 100 KB
    info, t = _build(tmp_path, [_src("f", line + b"\nok\n")], _schema(["a"]))
    assert info.n_rejected == 1
    assert [(r["line"], r["reason"]) for r in info.rejected_samples] == [(1, "unterminated quote")]
    assert t.strings("a").tolist() == ["ok"]


MNIST = Path(os.environ.get("AMLFLOW_MNIST_DIR", "/work/mnist"))


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST / "train.csv").exists(), reason="full Kaggle MNIST not built")
@pytest.mark.parametrize(("name", "rows"), [("train.csv", 42_000), ("test.csv", 28_000)])
def test_full_mnist_reads_every_row(tmp_path: Path, name: str, rows: int) -> None:
    """The full Kaggle files: every row, no rejects, values as pandas reads them (speed is measured by
    bench/engine_bench.py)."""
    path = MNIST / name
    names = pd.read_csv(path, nrows=0).columns.tolist()
    schema = _schema(names, header=True, types="NUMERIC")
    info, t = _build(tmp_path, [_file_src(path)], schema)
    assert info.n_rows == rows and info.n_rejected == 0
    sample = pd.read_csv(path, dtype=str, nrows=500)
    assert t.strings(names[-1], 0, 500).tolist() == sample[names[-1]].tolist()


def _reference_row(line: bytes, n_fields: int) -> list[str] | None:
    """One line read on its own by pyarrow (the reference): its values, or None when rejected."""
    content = line[:-1] if line.endswith(b"\r") else line
    if b"\r" in content or len(content) > MAX_ROW_BYTES:
        return None
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    bad: list[int] = []
    try:
        t = pa_csv.read_csv(
            io.BytesIO(content + b"\n"),
            read_options=pa_csv.ReadOptions(column_names=[f"c{i}" for i in range(n_fields)]),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=lambda r: bad.append(1) or "skip"),
            convert_options=pa_csv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(n_fields)},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
    if bad or t.num_rows != 1:
        return None
    values = [str(t.column(i)[0]) for i in range(n_fields)]
    if any("\n" in v for v in values):  # a quote left open at the end of the line: AML rejects the row
        return None
    return [v.strip() for v in values]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_against_line_by_line_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    pieces = ["a", "b c", " x ", '"q,1"', '"d""e"', '"open', 'mid"quote', "", "7", "\r", '"', "é"]
    lines = []
    for _ in range(400):
        n = int(rng.choice([2, 3, 3, 3, 3, 4]))
        fields = [pieces[int(rng.integers(len(pieces)))] for _ in range(n)]
        line = ",".join(fields)
        if rng.random() < 0.05:
            line = ""
        lines.append(line.encode())
    eol = b"\r\n" if seed == 2 else b"\n"
    data = eol.join(lines) + (eol if seed != 3 else b"")
    monkeypatch.setattr(dataset_mod, "CHUNK_BYTES", 257)
    split = _seq(20, 80)
    info, t = _build(tmp_path, [_src("fz", data)], _schema(["a", "b", "c"]), split)
    # reference: line by line
    offsets, rows, kept_rows, kept_rejected, pos = 0, [], [], [], 0
    total = len(data)
    for line in data.split(b"\n"):
        start = offsets
        offsets += len(line) + 1
        if line in (b"", b"\r") or start >= total:
            continue
        selected = 20 * total <= 100 * start < 80 * total
        ref = _reference_row(line, 3)
        if selected:
            if ref is None:
                kept_rejected.append(pos)
            else:
                kept_rows.append(ref)
            pos += 1
        rows.append(ref)
    assert t.rejected_positions.tolist() == kept_rejected
    assert t.to_frame().to_numpy().tolist() == kept_rows
    assert info.n_rejected_total == sum(r is None for r in rows)


def test_overlong_header_and_last_line_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_mod, "CHUNK_BYTES", 1000)
    huge = "z" * (MAX_ROW_BYTES + 3000)
    data = f"{huge},h\n1,a\n{huge},x\n2,b\n{huge},y".encode()  # the last line has no newline
    info, t = _build(tmp_path, [_src("f", data)], _schema(["n", "v"], header=True))
    assert t.strings("n").tolist() == ["1", "2"]
    assert t.rejected_positions.tolist() == [1, 3]
    assert [(s["line"], s["reason"]) for s in info.rejected_samples] == [
        (3, "row longer than 100 KB"),
        (5, "row longer than 100 KB"),
    ]
    assert info.rejected_samples[0]["offset"] == data.index(b"\n1,a") + 5
    assert t.info["headers"] == {}  # an overlong header is skipped, not kept


_RSS_SCRIPT = """
import json, resource, sys
from pathlib import Path
from amlflow.engine.dataset import Source, build_dataset
from amlflow.engine.schema import parse_schema
path, out = Path(sys.argv[1]), Path(sys.argv[2])
names = path.open().readline().strip().split(",")
schema = parse_schema(json.dumps({"dataFileContainsHeader": True,
    "attributes": [{"attributeName": n, "attributeType": "NUMERIC"} for n in names]}))
sources = [Source(f"part-{i:02d}", path.stat().st_size, lambda: path.open("rb")) for i in range(10)]
info = build_dataset(sources, schema, None, out)
print(json.dumps({"rows": info.n_rows, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST / "train.csv").exists(), reason="full Kaggle MNIST not built")
def test_420k_rows_stay_well_under_1gb(tmp_path: Path) -> None:
    """MNIST train read 10 times (420,000 rows × 785 columns, 730 MB of CSV) in a fresh process."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(MNIST / "train.csv"), str(tmp_path / "t")],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == 420_000
    assert result["rss_mb"] < 600, result
    t = EncodedTable.open(tmp_path / "t")
    assert t.files[9] == ("part-09", 378_000, 420_000)
