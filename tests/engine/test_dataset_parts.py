"""engine.dataset: a file read as byte-range parts (read_part) and merged (merge_parts) is byte for byte the
table build_dataset writes, wherever the ranges are cut."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amlflow.engine import dataset as dataset_mod
from amlflow.engine.dataset import (
    DatasetInfo,
    Source,
    build_dataset,
    input_sizes,
)
from amlflow.engine.dataset_parts import PartInfo, PartMerger, merge_parts, read_part
from amlflow.engine.errors import DataError
from amlflow.engine.rearrange import Rearrangement, parse_rearrangement
from amlflow.engine.schema import Schema, parse_schema

TABLE_FILES = ("codes.bin", "dictionaries.json", "meta.json")

# every kind of line the reader treats specially; MAX_ROW_BYTES is lowered to 40 in these tests
LONG = "L" * 250  # over MAX_ROW_BYTES (40 here) and over the 200 bytes a sample keeps
FILE_A = (
    'id,name,note\r\n1,alpha,"x, y"\r\n2, beta ,"say ""hi"""\n\n3,gamma,plain\n4,too,many,fields\n'
    '5,"open quote,z\n6,bare\rcr,q\n' + LONG + ",a,b\n7,alpha,  x, y\n"
    '8,delta,"q""uote"\r\n9,,\n10,alpha,last-without-newline'
).encode()
FILE_B = ("id,name,note\n" + "".join(f"{i},n{i % 5},v{i % 3}\n" for i in range(11, 40))).encode()
FILE_C = b"id,name,note\n41,omega,end\n" + LONG.encode() + b"\n42,omega,"  # overlong then a last line


def _schema(header: bool = True) -> Schema:
    return parse_schema(
        json.dumps(
            {
                "dataFileContainsHeader": header,
                "attributes": [
                    {"attributeName": n, "attributeType": "CATEGORICAL"} for n in ("id", "name", "note")
                ],
            }
        )
    )


def _src(key: str, data: bytes) -> Source:
    def open_at(offset: int) -> io.BytesIO:
        f = io.BytesIO(data)
        f.seek(offset)
        return f

    return Source(key, len(data), lambda: io.BytesIO(data), open_at)


REARRANGEMENTS = [
    None,
    '{"splitting": {"percentBegin": 0, "percentEnd": 60}}',
    '{"splitting": {"percentBegin": 30, "percentEnd": 70, "complement": true}}',
    '{"splitting": {"percentBegin": 10, "percentEnd": 80, "strategy": "random", '
    '"strategyParams": {"randomSeed": "s"}}}',
]


@pytest.fixture(autouse=True)
def _small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_mod, "MAX_ROW_BYTES", 40)
    monkeypatch.setattr(dataset_mod, "CHUNK_BYTES", 16)  # many blocks, lines across them


def _files(d: Path) -> dict[str, bytes]:
    return {name: (d / name).read_bytes() for name in TABLE_FILES}


def _parts(
    tmp: Path,
    files: list[tuple[str, bytes]],
    cuts: dict[str, list[int]],
    schema: Schema,
    r: Rearrangement,
    gz: set[str] = frozenset(),  # type: ignore[assignment]
) -> DatasetInfo:
    """Read every file as parts cut at ``cuts[key]`` (gzip files whole) and merge them."""
    sources = [_src(k, gzip.compress(b) if k in gz else b) for k, b in files]
    sizes = input_sizes(sources, r)
    total, start, dirs = sum(sizes), 0, []
    for source, size in zip(sources, sizes, strict=True):
        bounds = [0, *sorted(set(cuts.get(source.key, []))), source.size]
        ranges = [(None, None)] if source.key in gz else list(zip(bounds[:-1], bounds[1:], strict=True))
        for lo, hi in ranges:
            d = tmp / f"part-{len(dirs)}"
            info = read_part(source, schema, r, d, total_bytes=total, file_start=start, lo=lo or 0, hi=hi)
            assert isinstance(info, PartInfo)
            dirs.append(d)
        start += size
    return merge_parts(dirs, schema, r, [(s.key, s.size) for s in sources], tmp / "merged")


def _whole(tmp: Path, files: list[tuple[str, bytes]], schema: Schema, r: Rearrangement, gz=frozenset()):  # type: ignore[no-untyped-def]
    sources = [_src(k, gzip.compress(b) if k in gz else b) for k, b in files]
    return build_dataset(sources, schema, r, tmp / "whole")


@pytest.mark.parametrize("split", REARRANGEMENTS)
def test_one_cut_at_every_byte_is_the_same_table(tmp_path: Path, split: str | None) -> None:
    """Two parts of FILE_A cut at every byte (inside quotes, between CR and LF, in the overlong line, at
    the ends), then FILE_C whole: the merged table's three files are build_dataset's bytes."""
    r = parse_rearrangement(split)
    schema = _schema()
    files = [("a.csv", FILE_A), ("c.csv", FILE_C)]
    whole = _whole(tmp_path, files, schema, r)
    expected = _files(tmp_path / "whole")
    assert whole.n_rejected_total >= 5 and whole.rejected_samples  # the file exercises rejections
    for cut in range(len(FILE_A) + 1):
        work = tmp_path / f"cut{cut}"
        info = _parts(work, files, {"a.csv": [cut]}, schema, r)
        assert _files(work / "merged") == expected, f"cut at byte {cut}"
        assert info == whole


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cuts_a=st.lists(st.integers(0, len(FILE_A)), max_size=6),
    cuts_b=st.lists(st.integers(0, len(FILE_B)), max_size=4),
    which=st.sampled_from(REARRANGEMENTS),
    header=st.booleans(),
    gz_b=st.booleans(),
)
def test_many_cuts_many_files(
    tmp_path_factory: pytest.TempPathFactory,
    cuts_a: list[int],
    cuts_b: list[int],
    which: str | None,
    header: bool,
    gz_b: bool,
) -> None:
    """Several files, several cuts each (repeated cuts = empty ranges), a gzip file read whole, with and
    without a header: the same bytes and the same report as build_dataset."""
    tmp = tmp_path_factory.mktemp("many")
    r, schema = parse_rearrangement(which), _schema(header)
    files = [("a.csv", FILE_A), ("b.csv", FILE_B), ("c.csv", FILE_C)]
    gz = {"b.csv"} if gz_b else set()
    whole = _whole(tmp, files, schema, r, gz)
    merged = _parts(tmp, files, {"a.csv": cuts_a + cuts_a[:1], "b.csv": cuts_b}, schema, r, gz)
    assert _files(tmp / "merged") == _files(tmp / "whole")
    assert merged == whole


def test_part_info_is_relative_to_the_part(tmp_path: Path) -> None:
    """A later part: no header, positions and sample lines from its own start, offsets the file's."""
    schema, r = _schema(), Rearrangement()
    cut = FILE_A.index(b"4,too")
    src = _src("a.csv", FILE_A)
    info = read_part(
        src, schema, r, tmp_path / "p", total_bytes=len(FILE_A), file_start=0, lo=cut - 3, hi=cut + 1
    )
    assert info.start == cut and info.header is None
    assert info.n_lines == 1 and info.n_records == 1 and info.n_rejected_total == 1
    assert info.samples[0]["line"] == 1 and info.samples[0]["offset"] == cut
    assert info.bytes_read == FILE_A.index(b"\n", cut) + 1 - cut
    first = read_part(src, schema, r, tmp_path / "q", total_bytes=len(FILE_A), file_start=0, lo=0, hi=1)
    assert first.header == "id,name,note" and first.n_lines == 1 and first.n_records == 0


def test_too_many_rejected_rows_same_message_whatever_the_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_mod, "MAX_REJECTED_ROWS", 6)
    schema, r = _schema(), Rearrangement()
    files = [("a.csv", FILE_A), ("c.csv", FILE_C), ("d.csv", FILE_A)]
    with pytest.raises(DataError) as whole:
        _whole(tmp_path, files, schema, r)
    assert "more than 6 rows were rejected (reached 7 in d.csv); the first was a.csv line 6" in str(
        whole.value
    )
    for n, cuts in enumerate([[], [10, 50], [len(FILE_A) // 2], [1, 2, 3, 90, 91]]):
        with pytest.raises(DataError) as parts:
            _parts(tmp_path / f"w{n}", files, {"a.csv": cuts, "d.csv": cuts}, schema, r)
        assert str(parts.value) == str(whole.value)


def test_a_part_alone_over_the_limit_overflows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_mod, "MAX_REJECTED_ROWS", 2)
    info = read_part(
        _src("a.csv", FILE_A), _schema(), None, tmp_path / "p", total_bytes=len(FILE_A), file_start=0
    )
    assert info.overflow and info.n_rejected_total > 2 and info.n_rows == 0
    with pytest.raises(DataError, match=r"more than 2 rows were rejected \(reached 3 in a.csv\)"):
        merge_parts([tmp_path / "p"], _schema(), None, [("a.csv", len(FILE_A))], tmp_path / "m")


def test_gzip_cannot_be_read_by_range_and_bad_gzip_fails_alike(tmp_path: Path) -> None:
    data = gzip.compress(FILE_B)
    src = _src("b.csv.gz", data)
    with pytest.raises(ValueError, match="gzip file cannot be read by byte range"):
        read_part(src, _schema(), None, tmp_path / "p", total_bytes=len(data), file_start=0, lo=0, hi=10)
    bad = _src("bad.gz", data[:30] + b"\xff" * 20 + data[50:])
    with pytest.raises(DataError) as whole:
        build_dataset([bad], _schema(), None, tmp_path / "w")
    with pytest.raises(DataError) as part:
        read_part(bad, _schema(), None, tmp_path / "q", total_bytes=bad.size, file_start=0)
    assert str(part.value) == str(whole.value) and "bad.gz" in str(whole.value)


def test_merge_refuses_parts_out_of_order(tmp_path: Path) -> None:
    schema, r = _schema(), Rearrangement()
    a, b = _src("a.csv", FILE_A), _src("b.csv", FILE_B)
    total = a.size + b.size
    read_part(a, schema, r, tmp_path / "a", total_bytes=total, file_start=0)
    read_part(b, schema, r, tmp_path / "b", total_bytes=total, file_start=a.size)
    with pytest.raises(ValueError, match="out of input order"):
        merge_parts(
            [tmp_path / "b", tmp_path / "a"],
            schema,
            r,
            [("a.csv", a.size), ("b.csv", b.size)],
            tmp_path / "m",
        )
    with pytest.raises(ValueError, match="parts of 1 of 2 files"):
        merge_parts([tmp_path / "a"], schema, r, [("a.csv", a.size), ("b.csv", b.size)], tmp_path / "n")


def test_parts_and_their_merge_keep_to_the_dictionary_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part over the dictionary budget fails as build_dataset does; so does a merge whose parts fit
    alone but not together (the service's side of the datasource job on Dask)."""
    monkeypatch.setattr(dataset_mod, "MIN_DICTIONARY_BYTES", 0)
    data = ("id,name,note\n" + "".join(f"{i},n{i},v\n" for i in range(2_000))).encode()
    source, schema = _src("f", data), _schema()
    cut = len(data) // 2
    per_value = dataset_mod.BYTES_PER_DISTINCT_VALUE
    one_part = 2 * per_value * 2_200  # half of it: 2,200 values; a part holds ~2,000 (id and name) + 1
    with pytest.raises(DataError, match=r"^id: the columns' distinct values would need more memory"):
        read_part(
            source,
            schema,
            None,
            tmp_path / "big",
            total_bytes=len(data),
            file_start=0,
            memory_budget=one_part // 4,
        )
    parts = []
    for k, (lo, hi) in enumerate(((0, cut), (cut, len(data)))):
        read_part(
            source,
            schema,
            None,
            tmp_path / f"p{k}",
            total_bytes=len(data),
            file_start=0,
            lo=lo,
            hi=hi,
            memory_budget=one_part,
        )
        parts.append(tmp_path / f"p{k}")
    merged = merge_parts(parts, schema, None, [("f", len(data))], tmp_path / "fits")
    assert merged.n_rows == 2_000  # no budget given to the merge: the machine's default
    merger = PartMerger(schema, None, [("f", len(data))], tmp_path / "merged", memory_budget=one_part)
    with pytest.raises(DataError, match=r"the columns' distinct values would need more memory"), merger as m:
        for part in parts:
            m.add(part)
        m.finish()
    assert not (tmp_path / "merged").exists()
