"""engine.batch: AML's number format and batch output layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from amlflow.engine.batch import aml_number
from amlflow.engine.numfmt import _aml_number_decimal

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "data/aml-banking/aml-batch-prediction-bp-sp7EvkPwfHS.csv"


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0.1237027, "1.237027E-1"),
        (0.912984, "9.12984E-1"),
        (0.039156, "3.9156E-2"),
        (0.01237, "1.237E-2"),
        (1.0, "1E0"),
        (0.0, "0E0"),
        (-0.0, "0E0"),
        (122570.8, "1.225708E5"),
        (-15.26385, "-1.526385E1"),
        (0.12345675, "1.234568E-1"),  # a tie in the shortest decimal: half-even → 8
        (0.12345665, "1.234566E-1"),  # ... → 6
        (9.9999995, "1E1"),
        (0.99999999, "1E0"),
        (1.0000001, "1E0"),
        (1.5e-300, "1.5E-300"),
        (123456789.0, "1.234568E8"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
    ],
)
def test_aml_number_examples(x: float, text: str) -> None:
    assert aml_number(x) == text


def test_aml_number_reproduces_real_aml_output_byte_for_byte() -> None:
    lines = GOLDEN.read_text().split("\n")
    assert lines[0] == "bestAnswer,score"
    scores = [line.split(",")[1] for line in lines[1:] if line]
    assert len(scores) == 443
    for s in scores:
        assert aml_number(float(s)) == s
    # every score ≥ 0.77 has bestAnswer 1 (AML's ≥ threshold rule, tutorial threshold 0.77)
    for line in lines[1:]:
        if line:
            best, s = line.split(",")
            assert best == ("1" if float(s) >= 0.77 else "0")


def test_aml_number_fast_path_matches_decimal_reference() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    values = np.concatenate(
        [
            rng.random(20000),
            rng.standard_normal(20000) * 1e4,
            rng.random(20000).astype(np.float32).astype(float),
        ]
    )
    for v in values:
        assert aml_number(float(v)) == _aml_number_decimal(float(v))


# ------------------------------------------------------------------------------------------- the writer

import io  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from amlflow.engine.batch import write_batch_output  # noqa: E402
from amlflow.engine.dataset import Source, build_dataset  # noqa: E402
from amlflow.engine.model import train  # noqa: E402
from amlflow.engine.params import parse_parameters  # noqa: E402
from amlflow.engine.rearrange import parse_rearrangement  # noqa: E402
from amlflow.engine.recipe import parse_recipe  # noqa: E402
from amlflow.engine.schema import parse_schema  # noqa: E402
from amlflow.engine.table import EncodedTable  # noqa: E402


def _source(path: Path) -> Source:
    return Source(path.name, path.stat().st_size, lambda: open(path, "rb"))


@pytest.fixture(scope="module")
def banking_model(tmp_path_factory):
    d = REPO / "data/aml-banking"
    schema = parse_schema((d / "banking.csv.schema").read_text())
    table_dir = tmp_path_factory.mktemp("bank") / "train"
    build_dataset(
        [_source(d / "banking.csv")],
        schema,
        parse_rearrangement('{"splitting": {"percentBegin": 0, "percentEnd": 70}}'),
        table_dir,
    )
    table = EncodedTable.open(table_dir)
    recipe = parse_recipe((d / "recipe.json").read_text(), schema)
    return train(table, schema, recipe, parse_parameters(None), "BINARY")


def test_write_batch_output_banking_layout_matches_real_aml_file(banking_model, tmp_path) -> None:
    d = REPO / "data/aml-banking"
    schema = parse_schema((d / "banking-batch.csv.schema").read_text())
    build_dataset([_source(d / "banking-batch.csv")], schema, None, tmp_path / "batch")
    table = EncodedTable.open(tmp_path / "batch")
    buf = io.BytesIO()
    counts = write_batch_output(banking_model, table, schema, buf, threshold=0.77)
    assert (counts.total, counts.invalid) == (4119, 0)
    ours = buf.getvalue().decode().split("\n")
    real = GOLDEN.read_text().split("\n")
    assert ours[0] == real[0] == "bestAnswer,score"
    assert len(ours) == 4119 + 2 and ours[-1] == ""  # header + rows, final newline
    pattern = __import__("re").compile(r"^[01],-?[1-9](\.\d{1,6})?E-?\d+$|^[01],0E0$")
    assert all(pattern.match(line) for line in ours[1:-1])
    assert all(pattern.match(line) for line in real[1:] if line)
    # our scores agree with AML's on the same rows (same data, same recipe, different SGD)
    ours_s = np.array([float(x.split(",")[1]) for x in ours[1:444]])
    real_s = np.array([float(x.split(",")[1]) for x in real[1:444]])
    assert np.corrcoef(ours_s, real_s)[0, 1] > 0.9
    for line in ours[1:-1]:
        best, score = line.split(",")
        assert best == ("1" if float(score) >= 0.77 else "0")


def _tiny(tmp_path: Path, rows: list[str], schema_json: str) -> tuple[EncodedTable, object]:
    schema = parse_schema(schema_json)
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "in.csv"
    p.write_text("\n".join(rows) + "\n")
    build_dataset([_source(p)], schema, None, tmp_path / "t")
    return EncodedTable.open(tmp_path / "t"), schema


SCHEMA_MC = (
    '{"targetAttributeName": "y", "rowId": "id", "dataFileContainsHeader": false, "attributes": ['
    '{"attributeName": "id", "attributeType": "CATEGORICAL"},'
    '{"attributeName": "x", "attributeType": "CATEGORICAL"},'
    '{"attributeName": "y", "attributeType": "CATEGORICAL"}]}'
)


def test_write_batch_output_multiclass_tag_truelabel_and_rejected_rows(tmp_path: Path) -> None:
    train_rows = [f"r{i},{'abc'[i % 3]},{'xyz'[i % 3]}" for i in range(30)]
    table, schema = _tiny(tmp_path / "a", train_rows, SCHEMA_MC)
    model = train(
        table, schema, parse_recipe('{"outputs": ["x"]}', schema), parse_parameters(None), "MULTICLASS"
    )
    rows = ["t1,a,x", "t2,b,", "bad,row", "t4,c,z", 't5,"a, b",y', "also,bad"]
    batch, _ = _tiny(tmp_path / "b", rows, SCHEMA_MC)
    assert batch.rejected_positions.tolist() == [2, 5]
    buf = io.BytesIO()
    counts = write_batch_output(model, batch, schema, buf)
    lines = buf.getvalue().decode().split("\n")
    assert lines[0] == "tag,trueLabel,x,y,z"
    assert lines[1].startswith("t1,x,") and lines[2].startswith("t2,,") and lines[3] == ""
    assert lines[4].startswith("t4,z,") and lines[5].startswith("t5,y,") and lines[6] == "" and lines[7] == ""
    assert len(lines) == 8
    probs = [float(v) for v in lines[1].split(",")[2:]]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5) and probs[0] > 0.5
    assert (counts.total, counts.invalid) == (6, 2)
    # one file's span: positions 2..5 → rejected, t4, t5
    buf = io.BytesIO()
    counts = write_batch_output(model, batch, schema, buf, rows=(2, 5))
    lines = buf.getvalue().decode().split("\n")
    assert lines[1] == "" and lines[2].startswith("t4,") and lines[3].startswith("t5,") and len(lines) == 5
    assert (counts.total, counts.invalid) == (3, 1)


def test_write_batch_output_regression_and_binary_truelabel(tmp_path: Path) -> None:
    schema = parse_schema(
        '{"targetAttributeName": "y", "attributes": [{"attributeName": "x", "attributeType": '
        '"NUMERIC"}, {"attributeName": "y", "attributeType": "NUMERIC"}]}'
    )
    df = pd.DataFrame({"x": [str(i) for i in range(20)], "y": [str(2 * i + 1) for i in range(20)]})
    table = EncodedTable.from_frame(df)
    model = train(
        table,
        schema,
        parse_recipe('{"outputs": ["x"]}', schema),
        parse_parameters({"sgd.maxPasses": "2000"}),
        "REGRESSION",
    )
    buf = io.BytesIO()
    write_batch_output(model, table, schema, buf)
    lines = buf.getvalue().decode().split("\n")
    assert lines[0] == "trueLabel,score" and len(lines) == 22
    assert lines[1].startswith("1,") and lines[20].startswith("39,")
    assert float(lines[1].split(",")[1]) == pytest.approx(1.0, abs=0.5)
    assert float(lines[20].split(",")[1]) == pytest.approx(39.0, abs=0.5)
    # without a target in the batch schema, there is no trueLabel column
    no_target = parse_schema('{"attributes": [{"attributeName": "x", "attributeType": "NUMERIC"}]}')
    buf = io.BytesIO()
    write_batch_output(model, EncodedTable.from_frame(df[["x"]]), no_target, buf)
    first = buf.getvalue().decode().split("\n")[:2]
    assert first[0] == "score" and float(first[1]) == pytest.approx(1.0, abs=0.5)

    bschema = parse_schema(
        '{"targetAttributeName": "y", "attributes": [{"attributeName": "x", "attributeType": '
        '"NUMERIC"}, {"attributeName": "y", "attributeType": "BINARY"}]}'
    )
    bdf = pd.DataFrame({"x": [str(i) for i in range(20)], "y": ["no"] * 10 + ["YES"] * 9 + ["?"]})
    btable = EncodedTable.from_frame(bdf)
    bmodel = train(
        btable, bschema, parse_recipe('{"outputs": ["x"]}', bschema), parse_parameters(None), "BINARY"
    )
    buf = io.BytesIO()
    write_batch_output(bmodel, btable, bschema, buf, threshold=0.5)
    lines = buf.getvalue().decode().split("\n")
    assert lines[0] == "trueLabel,bestAnswer,score"
    assert lines[1].startswith("0,0,") and lines[19].startswith("1,1,") and lines[20].startswith(",1,")


def test_write_batch_output_rows_out_of_range(tmp_path: Path) -> None:
    schema = parse_schema(
        '{"targetAttributeName": "y", "attributes": [{"attributeName": "x", "attributeType": '
        '"NUMERIC"}, {"attributeName": "y", "attributeType": "NUMERIC"}]}'
    )
    table = EncodedTable.from_frame(pd.DataFrame({"x": ["1", "2"], "y": ["1", "2"]}))
    model = train(
        table, schema, parse_recipe('{"outputs": ["x"]}', schema), parse_parameters(None), "REGRESSION"
    )
    with pytest.raises(ValueError, match="outside 0..2"):
        write_batch_output(model, table, schema, io.BytesIO(), rows=(0, 3))


def test_write_batch_output_every_row_rejected(tmp_path: Path) -> None:
    train_rows = [f"r{i},{'abc'[i % 3]},{'xyz'[i % 3]}" for i in range(30)]
    table, schema = _tiny(tmp_path / "a", train_rows, SCHEMA_MC)
    model = train(
        table, schema, parse_recipe('{"outputs": ["x"]}', schema), parse_parameters(None), "MULTICLASS"
    )
    batch, _ = _tiny(tmp_path / "b", ["bad", "also,bad"], SCHEMA_MC)
    assert batch.n_rows == 0
    buf = io.BytesIO()
    counts = write_batch_output(model, batch, schema, buf)
    assert buf.getvalue() == b"tag,trueLabel,x,y,z\n\n\n"
    assert (counts.total, counts.invalid) == (2, 2)
