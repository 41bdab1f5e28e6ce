"""service.batch: the batch output's compressed blocks are a function of the data only — cut from the
whole span in one pass (the in-process job) or partition by partition (Dask workers), they are the same
blocks, so the same gzip bytes; the real engine's CSV with quoted tags (commas, quotes, line breaks) and
rejected rows at block edges."""

from __future__ import annotations

import gzip
import io
import random
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

import pandas as pd
import pytest

from amlflow.engine.batch import write_batch_output
from amlflow.engine.dataset import Source, build_dataset
from amlflow.engine.model import train
from amlflow.engine.params import parse_parameters
from amlflow.engine.recipe import parse_recipe
from amlflow.engine.schema import parse_schema
from amlflow.engine.table import EncodedTable
from amlflow.service import batch as batch_jobs
from amlflow.service.batch import RecordBlocks, block_rows
from amlflow.storage.gzip_blocks import BlockGzipWriter, deflate_block

SCHEMA = parse_schema(
    '{"targetAttributeName": "y", "rowId": "id", "dataFileContainsHeader": false, "attributes": ['
    '{"attributeName": "id", "attributeType": "CATEGORICAL"},'
    '{"attributeName": "x", "attributeType": "CATEGORICAL"},'
    '{"attributeName": "y", "attributeType": "CATEGORICAL"}]}'
)
#: row ids the engine must quote: a comma, a doubled quote, line breaks, surrounding blanks
AWKWARD = ["a,b", 'say "hi"', "two\nlines", "a\n\nb", " pad ", 'x"\ny', "c\r\nd", '"', ",\n,"]


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    ids = [AWKWARD[i // 2 % len(AWKWARD)] + str(i) if i % 2 == 0 else f"r{i}" for i in range(n)]
    return pd.DataFrame(
        {"id": ids, "x": [rng.choice("abc") for _ in range(n)], "y": [rng.choice("pqr") for _ in range(n)]}
    )


@pytest.fixture(scope="module")
def model() -> Any:
    table = EncodedTable.from_frame(_frame(60, 0))
    return train(
        table, SCHEMA, parse_recipe('{"outputs": ["x"]}', SCHEMA), parse_parameters(None), "MULTICLASS"
    )


def _blocks(write: Any, rows: tuple[int, int], block: int, header: bool) -> list[bytes]:
    out: list[bytes] = []
    sink = RecordBlocks(block, header=header, emit=out.append)
    write(cast(BinaryIO, sink), rows)
    sink.close()
    return out


def _partitioned(write: Any, span: tuple[int, int], block: int, size: int) -> list[bytes]:
    """The span's blocks as Dask workers make them: partitions of ``size`` (a multiple of ``block``)."""
    first, stop = span
    out: list[bytes] = []
    for a in range(first, stop, size) or [first]:
        out += _blocks(write, (a, min(a + size, stop)), block, header=a == first)
    return out


def test_quoted_line_breaks_do_not_cut_records(model: Any) -> None:
    table = EncodedTable.from_frame(_frame(101, 1))

    def write(out: BinaryIO, rows: tuple[int, int]) -> None:
        write_batch_output(model, table, SCHEMA, out, rows=rows)

    whole = io.BytesIO()
    write(whole, (0, 101))
    text = whole.getvalue()
    assert text.count(b"\n") > 102  # the tags' line breaks are in the output, inside quotes
    blocks = _blocks(write, (0, 101), 10, header=True)
    assert b"".join(blocks) == text
    assert len(blocks) == 11  # header + 10 records, then 9 x 10, then 1
    parsed = [pd.read_csv(io.BytesIO(blocks[0]), dtype=str, keep_default_na=False)]
    header = text.split(b"\n", 1)[0] + b"\n"
    parsed += [pd.read_csv(io.BytesIO(header + b), dtype=str, keep_default_na=False) for b in blocks[1:]]
    assert [len(p) for p in parsed] == [10] * 10 + [1]  # every block is whole records
    assert pd.concat(parsed)["tag"].tolist() == [str(v) for v in table.strings("id", 0, 101)]
    for k in (1, 3, 10, 25, 40):  # partitions of any number of blocks: the same blocks
        assert _partitioned(write, (0, 101), 10, 10 * k) == blocks, k


def test_records_are_counted_across_any_write_chunks() -> None:
    text = b'h,"x\n"\n' + b"".join(f'{i},"a\n""b""\n,c"\n'.encode() for i in range(50))
    reference = _blocks(lambda out, rows: out.write(text), (0, 0), 7, header=True)
    assert len(reference) == 8 and b"".join(reference) == text
    rng = random.Random(3)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), 12))

        def write(out: BinaryIO, rows: tuple[int, int], cuts: list[int] = cuts) -> None:
            for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True):
                out.write(text[a:b])

        assert _blocks(write, (0, 0), 7, header=True) == reference
    dropped = _blocks(lambda out, rows: out.write(text), (0, 0), 7, header=False)
    assert b"".join(dropped) == text[len(b'h,"x\n"\n') :]  # a later partition: no header


def test_rejected_rows_at_block_edges(model: Any, tmp_path: Path) -> None:
    lines = [f"r{i},{'abc'[i % 3]},{'pqr'[i % 3]}" for i in range(40)]
    for position in (9, 10, 19, 30, 31):  # empty output lines at both sides of block edges
        lines.insert(position, "bad,row")
    path = tmp_path / "batch.csv"
    path.write_text("\n".join(lines) + "\n")
    build_dataset(
        [Source(path.name, path.stat().st_size, partial(path.open, "rb"))], SCHEMA, None, tmp_path / "t"
    )
    table = EncodedTable.open(tmp_path / "t")
    assert table.rejected_positions.tolist() == [9, 10, 19, 30, 31]
    n = table.n_positions

    def write(out: BinaryIO, rows: tuple[int, int]) -> None:
        write_batch_output(model, table, SCHEMA, out, rows=rows)

    blocks = _blocks(write, (0, n), 10, header=True)
    assert [b.count(b"\n") for b in blocks] == [11, 10, 10, 10, 5]
    # empty lines: position 9 ends block 0, 10 and 19 open and end block 1, 30 and 31 open block 3
    assert blocks[0].endswith(b"\n\n") and blocks[1].startswith(b"\n") and blocks[1].endswith(b"\n\n")
    assert blocks[3].startswith(b"\n\n") and not blocks[2].startswith(b"\n")
    for size in (10, 20, 30):
        assert _partitioned(write, (0, n), 10, size) == blocks
    # a second span (another input file) starting mid-table: its own header, its own block edges
    assert _partitioned(write, (17, n), 10, 20) == _blocks(write, (17, n), 10, header=True)
    # an empty span: the header alone
    header = b"tag,trueLabel,p,q,r\n"
    assert blocks[0].startswith(header)
    assert _partitioned(write, (5, 5), 10, 10) == _blocks(write, (5, 5), 10, header=True) == [header]


def test_the_same_gzip_bytes_from_either_path(model: Any) -> None:
    table = EncodedTable.from_frame(_frame(250, 2))

    def write(out: BinaryIO, rows: tuple[int, int]) -> None:
        write_batch_output(model, table, SCHEMA, out, rows=rows)

    def gz(blocks: list[bytes]) -> bytes:
        out = io.BytesIO()
        with BlockGzipWriter(out) as writer:
            for block in blocks:
                writer.add(deflate_block(block))
        return out.getvalue()

    one = gz(_blocks(write, (0, 250), 32, header=True))
    assert one == gz(_partitioned(write, (0, 250), 32, 64))
    plain = io.BytesIO()
    write(plain, (0, 250))
    assert gzip.decompress(one) == plain.getvalue()


def test_block_rows_is_a_function_of_the_output_layout(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    table = EncodedTable.from_frame(_frame(10, 0))
    # tag, trueLabel and 3 classes: 5 fields of ~12 bytes; 256 KiB / 60 → 4,369 → 4,096 rows
    assert block_rows(model, table, SCHEMA) == 4096
    no_tag = parse_schema(SCHEMA.to_json().replace('"rowId": "id", ', ""))
    assert block_rows(model, table, no_tag) == 4096  # 4 fields: 5,461 → 4,096

    class Regression:
        model_type = "REGRESSION"

    class Mnist:
        model_type = "MULTICLASS"
        classes = [str(d) for d in range(10)]

    bare = EncodedTable.from_frame(pd.DataFrame({"x": ["a"]}))
    assert block_rows(Regression(), bare, no_tag) == 16384  # 1 field: the maximum
    assert block_rows(Mnist(), bare, no_tag) == 2048  # 10 fields: 2,184 → 2,048
    monkeypatch.setattr(batch_jobs, "MAX_BLOCK_ROWS", 1000)
    monkeypatch.setattr(batch_jobs, "MIN_BLOCK_ROWS", 1000)
    assert block_rows(Regression(), bare, no_tag) == 1000
    with pytest.raises(ValueError, match="at least 1"):
        RecordBlocks(0, header=True, emit=print)
