"""DataRearrangement parsing and row selection (sequential by bytes, random by hashed byte offset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amlflow.engine.errors import RearrangementError
from amlflow.engine.rearrange import Rearrangement, parse_rearrangement


def _split(**kw: object) -> str:
    return json.dumps({"splitting": kw})


@pytest.mark.parametrize("text", [None, "", "  ", "{}"])
def test_absent_means_everything(text: str | None) -> None:
    r = parse_rearrangement(text)
    assert r == Rearrangement()
    assert r.is_everything
    assert r.selects(np.arange(5), 5).all()


def test_parse_full_document() -> None:
    r = parse_rearrangement(
        _split(
            percentBegin=10,
            percentEnd=70,
            complement=True,
            strategy="random",
            strategyParams={"randomSeed": "s3://bucket/seed"},
        )
    )
    assert r == Rearrangement(10, 70, True, "random", "s3://bucket/seed")
    assert parse_rearrangement(json.dumps(r.to_dict())) == r


def test_parse_string_booleans_and_seed_locations() -> None:
    assert parse_rearrangement(_split(percentEnd=70, complement="true")).complement is True
    assert parse_rearrangement(_split(percentEnd=70, complement="False")).complement is False
    assert parse_rearrangement(_split(strategy="random", randomSeed="abc")).seed == "abc"
    assert parse_rearrangement(_split(strategy="random", strategyParams={"randomSeed": "abc"})).seed == "abc"
    assert parse_rearrangement(_split(strategy="random")).seed == ""
    assert parse_rearrangement(_split(percentBegin="30", percentEnd=70.0)).percent_begin == 30


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("{not json", "DataRearrangement", "not valid JSON"),
        ("[1]", "DataRearrangement", "expected a JSON object"),
        ('{"split": {}}', "split", "unknown key 'split'"),
        ('{"splitting": 3}', "splitting", "expected an object"),
        (_split(percentBegin=-1), "splitting.percentBegin", "outside 0..100"),
        (_split(percentEnd=101), "splitting.percentEnd", "outside 0..100"),
        (_split(percentEnd=70.5), "splitting.percentEnd", "expected an integer"),
        (_split(percentEnd="seventy"), "splitting.percentEnd", "expected an integer"),
        (_split(percentEnd=True), "splitting.percentEnd", "expected an integer"),
        (_split(percentBegin=80, percentEnd=20), "splitting.percentBegin", "greater than percentEnd 20"),
        (_split(complement="yes"), "splitting.complement", "expected true or false"),
        (
            _split(strategy="stratified"),
            "splitting.strategy",
            "'stratified' is not one of sequential, random",
        ),
        (_split(strategyParams=[1]), "splitting.strategyParams", "expected an object"),
        (_split(strategyParams={"seed": 1}), "splitting.strategyParams.seed", "unknown key"),
        (_split(percentbegin=1), "splitting.percentbegin", "unknown key"),
        (_split(strategy="random", randomSeed=["x"]), "splitting.randomSeed", "expected a string"),
        (
            _split(randomSeed="a", strategyParams={"randomSeed": "b"}),
            "splitting.strategyParams.randomSeed",
            "different values",
        ),
    ],
)
def test_errors_name_the_key(text: str, field: str, message: str) -> None:
    with pytest.raises(RearrangementError, match=message) as info:
        parse_rearrangement(text)
    assert info.value.field == field


def test_sequential_bounds_by_byte() -> None:
    r = parse_rearrangement(_split(percentBegin=20, percentEnd=60))
    offsets = np.array([0, 19, 20, 59, 60, 99])
    assert r.selects(offsets, 100).tolist() == [False, False, True, True, False, False]
    # the same offsets in a second file that starts at byte 50 of the input
    assert r.selects(np.array([0, 9, 10]), 100, "b", file_start=50).tolist() == [True, True, False]
    c = parse_rearrangement(_split(percentBegin=20, percentEnd=60, complement=True))
    assert c.selects(offsets, 100).tolist() == [True, True, False, False, True, True]
    # percentEnd 100 keeps the last byte; an empty range selects nothing, its complement everything
    last = parse_rearrangement(_split(percentBegin=99))
    assert last.selects(np.array([98, 99]), 100).tolist() == [False, True]
    assert not parse_rearrangement(_split(percentBegin=40, percentEnd=40)).selects(offsets, 100).any()
    everything = parse_rearrangement(_split(percentBegin=40, percentEnd=40, complement=True))
    assert everything.selects(offsets, 100).all()


def test_sequential_huge_totals_are_exact() -> None:
    total = 3 * 10**17
    r = parse_rearrangement(_split(percentEnd=70))
    edge = 21 * 10**16  # exactly 70 %
    assert r.selects(np.array([edge - 1, edge]), total).tolist() == [True, False]


def test_random_is_deterministic_and_complement_partitions() -> None:
    offsets = np.arange(0, 200_000, 37)
    r = parse_rearrangement(
        _split(percentBegin=0, percentEnd=70, strategy="random", strategyParams={"randomSeed": "seed-1"})
    )
    c = parse_rearrangement(
        _split(
            percentBegin=0,
            percentEnd=70,
            strategy="random",
            complement=True,
            strategyParams={"randomSeed": "seed-1"},
        )
    )
    a = r.selects(offsets, 200_000, "data/a.csv")
    assert np.array_equal(a, r.selects(offsets, 200_000, "data/a.csv"))
    assert np.array_equal(c.selects(offsets, 200_000, "data/a.csv"), ~a)
    assert 0.67 < a.mean() < 0.73
    # a different seed or a different file gives a different, equally sized split
    other = Rearrangement(0, 70, False, "random", "seed-2").selects(offsets, 200_000, "data/a.csv")
    assert not np.array_equal(a, other) and 0.67 < other.mean() < 0.73
    assert not np.array_equal(a, r.selects(offsets, 200_000, "data/b.csv"))
    # per-row keys give the same answer as one key
    assert np.array_equal(a, r.selects(offsets, 200_000, ["data/a.csv"] * len(offsets)))
    # adjacent ranges partition too
    mid = Rearrangement(70, 100, False, "random", "seed-1").selects(offsets, 200_000, "data/a.csv")
    assert np.array_equal(mid, ~a)


def test_random_numbers_follow_the_documented_hash() -> None:
    import hashlib

    r = Rearrangement(0, 100, False, "random", "s")
    digest = hashlib.sha256(b"s\x00k\x00" + b"123").digest()
    expected = int.from_bytes(digest[:8], "big") * 100 / 2**64
    assert r.random_numbers(np.array([123]), "k")[0] == pytest.approx(expected, rel=1e-12)


def test_banking_sequential_split_matches_aml(data_dir: Path) -> None:
    """Row starts scanned directly from the bytes: AML's 28,833 / 12,355 rows, 1,363 positives."""
    raw = (data_dir / "aml-banking" / "banking.csv").read_bytes()
    arr = np.frombuffer(raw, dtype=np.uint8)
    starts = np.flatnonzero(arr == 10) + 1
    starts = starts[starts < len(raw)]  # the first is the header's end: data rows only
    lines = raw[starts[0] :].split(b"\r\n")[: len(starts)]
    positive = np.array([ln.rsplit(b",", 1)[-1] == b"1" for ln in lines])
    train = parse_rearrangement(_split(percentBegin=0, percentEnd=70)).selects(starts, len(raw))
    evaluate = parse_rearrangement(_split(percentBegin=70, percentEnd=100)).selects(starts, len(raw))
    assert (train.sum(), evaluate.sum()) == (28_833, 12_355)
    assert positive[evaluate].sum() == 1_363
    assert not (train & evaluate).any()


def test_random_bounds_are_exact_at_the_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """H = 2**64 - 1 is in 70..100 (a float would round 100*H/2**64 up to 100.0); H = 0 is in 0..x."""
    edge = (70 * 2**64) // 100  # just below 70 %: 100*edge/2**64 < 70
    h = np.array([0, edge, edge + 1, 2**64 - 1], dtype=np.uint64)
    monkeypatch.setattr(Rearrangement, "hashes", lambda self, offsets, keys: h)
    low = Rearrangement(0, 70, False, "random").selects(np.arange(4), 4, "k")
    high = Rearrangement(70, 100, False, "random").selects(np.arange(4), 4, "k")
    assert low.tolist() == [True, True, False, False]
    assert high.tolist() == [False, False, True, True]
    assert Rearrangement(100, 100, True, "random").selects(np.arange(4), 4, "k").all()
