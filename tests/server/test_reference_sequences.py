"""DESIGN.md's reference cases, end to end through the wire with real boto3 (and the AWS CLI).

* Kaggle MNIST (the seed script's calls): three datasources, MULTICLASS with its Parameters, evaluation
  polled with get_evaluation, batch prediction to S3 (moto), Kaggle accuracy from the hidden labels;
* headerless MNIST: separate train/test datasources, batch output read back gzipped from S3 and scored
  from its ``trueLabel`` column;
* AWS's banking sample (``build_model.py`` then ``use_model.py``, run as unmodified subprocesses with only
  ``AWS_ENDPOINT_URL_MACHINE_LEARNING`` set), ``ScoreThreshold`` 0.77, a realtime ``predict``.

Default runs use the head of each file (fast); ``-m slow`` runs the repo's full samples.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server import aml_data
from tests.server.harness import AmlServer, wait_for

pytestmark = pytest.mark.server

MNIST = aml_data.DATA / "mnist-sample"
BANKING = aml_data.DATA / "aml-banking"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def _poll_evaluation(ml: Any, evaluation_id: str, timeout: float = 600) -> dict[str, Any]:
    """The seed script's loop: get_evaluation until COMPLETED (or FAILED)."""
    deadline = time.monotonic() + timeout
    while True:
        ev = ml.get_evaluation(EvaluationId=evaluation_id)
        if ev["Status"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            return ev
        time.sleep(0.2)


def _batch_result(server: AmlServer, output_uri: str, bp_id: str = "") -> tuple[str, list[list[str]]]:
    """The gzipped batch output of ``bp_id`` under ``<OutputUri>/batch-prediction/result/``: (key, rows)."""
    bucket = output_uri.removeprefix("s3://").split("/", 1)[0]
    prefix = output_uri.removeprefix(f"s3://{bucket}/").rstrip("/") + f"/batch-prediction/result/{bp_id}"
    keys = [k for k in server.list(f"s3://{bucket}/{prefix}") if k.endswith(".gz")]
    assert len(keys) == 1, keys
    text = gzip.decompress(server.get(f"s3://{bucket}/{keys[0]}")).decode()
    return keys[0], list(csv.reader(io.StringIO(text)))


def _argmax_labels(rows: list[list[str]]) -> tuple[list[str], list[str]]:
    """(true labels or [], predicted labels) from a MULTICLASS batch output read by its header."""
    header, body = rows[0], [r for r in rows[1:] if r]
    class_cols = [i for i, name in enumerate(header) if name not in ("tag", "trueLabel")]
    truth = [r[header.index("trueLabel")] for r in body] if "trueLabel" in header else []
    preds = [header[max(class_cols, key=lambda i: float(r[i]))] for r in body]
    return truth, preds


def run_kaggle_mnist(server: AmlServer, train_rows: int, test_rows: int, tag: str) -> dict[str, float]:
    """The seed script's call sequence for Kaggle-format MNIST; returns its figures."""
    ml = server.client()
    train_uri = server.put(
        f"s3://mnist-{tag}/input/train.csv.gz",
        aml_data.gz_head(MNIST / "train.csv.gz", train_rows, header=True),
    )
    test_uri = server.put(
        f"s3://mnist-{tag}/input/test.csv.gz", aml_data.gz_head(MNIST / "test.csv.gz", test_rows, header=True)
    )
    train_schema = aml_data.mnist_kaggle_schema(train=True, pixel_type="CATEGORICAL")
    test_schema = aml_data.mnist_kaggle_schema(train=False, pixel_type="NUMERIC")  # AML accepted this
    ml.create_data_source_from_s3(
        DataSourceId=f"ds-{tag}-train",
        DataSourceName="MNIST train 70%",
        DataSpec={
            "DataLocationS3": train_uri,
            "DataSchema": train_schema,
            "DataRearrangement": json.dumps({"splitting": {"percentBegin": 0, "percentEnd": 70}}),
        },
        ComputeStatistics=True,
    )
    ml.create_data_source_from_s3(
        DataSourceId=f"ds-{tag}-eval",
        DataSourceName="MNIST eval 30%",
        DataSpec={
            "DataLocationS3": train_uri,
            "DataSchema": train_schema,
            "DataRearrangement": json.dumps({"splitting": {"percentBegin": 70, "percentEnd": 100}}),
        },
        ComputeStatistics=True,
    )
    ml.create_data_source_from_s3(
        DataSourceId=f"ds-{tag}-test",
        DataSourceName="MNIST test",
        DataSpec={"DataLocationS3": test_uri, "DataSchema": test_schema},
        ComputeStatistics=False,
    )
    ml.create_ml_model(
        MLModelId=f"ml-{tag}",
        MLModelName="MNIST model",
        MLModelType="MULTICLASS",
        TrainingDataSourceId=f"ds-{tag}-train",
        Recipe=json.dumps({"groups": {}, "assignments": {}, "outputs": ["ALL_CATEGORICAL"]}),
        Parameters={
            "sgd.maxMLModelSizeInBytes": "104857600",
            "sgd.maxPasses": "10",
            "sgd.shuffleType": "auto",
            "sgd.l2RegularizationAmount": "1e-5",
        },
    )
    ml.create_evaluation(
        EvaluationId=f"ev-{tag}",
        EvaluationName="MNIST evaluation",
        MLModelId=f"ml-{tag}",
        EvaluationDataSourceId=f"ds-{tag}-eval",
    )
    output_uri = f"s3://mnist-{tag}/output/"
    ml.create_batch_prediction(
        BatchPredictionId=f"bp-{tag}",
        BatchPredictionName="MNIST batch",
        MLModelId=f"ml-{tag}",
        BatchPredictionDataSourceId=f"ds-{tag}-test",
        OutputUri=output_uri,
    )
    ev = _poll_evaluation(ml, f"ev-{tag}")
    assert ev["Status"] == "COMPLETED", ev.get("Message")
    bp = wait_for(ml, "batch_prediction", f"bp-{tag}", timeout=600)
    assert bp["Status"] == "COMPLETED", bp.get("Message")
    assert bp["TotalRecordCount"] == test_rows and bp["InvalidRecordCount"] == 0
    key, rows = _batch_result(server, output_uri)
    assert key.startswith(f"output/batch-prediction/result/bp-{tag}-")
    assert sorted(rows[0]) == [str(d) for d in range(10)]  # one column per class, no trueLabel
    _, preds = _argmax_labels(rows)
    with (MNIST / "test_labels.csv").open() as f:
        hidden = [r["Label"] for _, r in zip(range(test_rows), csv.DictReader(f), strict=False)]
    accuracy = sum(p == t for p, t in zip(preds, hidden, strict=True)) / test_rows
    return {"f1": float(ev["PerformanceMetrics"]["Properties"]["MulticlassAvgFScore"]), "accuracy": accuracy}


def run_headerless_mnist(server: AmlServer, train_rows: int, test_rows: int, tag: str) -> float:
    """Headerless MNIST: train/test datasources, batch output scored from its trueLabel column."""
    ml = server.client()
    schema = aml_data.mnist_headerless_schema()
    train_uri = server.put(
        f"s3://mnist-{tag}/train_data.csv.gz",
        aml_data.gz_head(MNIST / "train_data.csv.gz", train_rows, header=False),
    )
    test_uri = server.put(
        f"s3://mnist-{tag}/test_data.csv.gz",
        aml_data.gz_head(MNIST / "test_data.csv.gz", test_rows, header=False),
    )
    for ds, uri in ((f"ds-{tag}-train", train_uri), (f"ds-{tag}-test", test_uri)):
        ml.create_data_source_from_s3(
            DataSourceId=ds, DataSpec={"DataLocationS3": uri, "DataSchema": schema}, ComputeStatistics=True
        )
    ml.create_ml_model(
        MLModelId=f"ml-{tag}",
        MLModelType="MULTICLASS",
        TrainingDataSourceId=f"ds-{tag}-train",
        Recipe=json.dumps(
            {
                "groups": {},
                "assignments": {},
                "outputs": [
                    "ALL_BINARY",
                    "ALL_CATEGORICAL",
                    "quantile_bin(ALL_NUMERIC,50)",
                    "lowercase(ALL_TEXT)",
                ],
            }
        ),
        Parameters={"sgd.maxPasses": "100", "sgd.l2RegularizationAmount": "1e-4"},
    )
    output_uri = f"s3://mnist-{tag}/out/"
    ml.create_batch_prediction(
        BatchPredictionId=f"bp-{tag}",
        MLModelId=f"ml-{tag}",
        BatchPredictionDataSourceId=f"ds-{tag}-test",
        OutputUri=output_uri,
    )
    ml.get_waiter("batch_prediction_available").wait(
        FilterVariable="MLModelId", EQ=f"ml-{tag}", WaiterConfig={"Delay": 0.2, "MaxAttempts": 3000}
    )
    _, rows = _batch_result(server, output_uri)
    assert "trueLabel" in rows[0]
    truth, preds = _argmax_labels(rows)
    assert len(truth) == test_rows
    return sum(p == t for p, t in zip(preds, truth, strict=True)) / len(truth)


def test_kaggle_mnist_sequence_to_s3(s3_server: AmlServer) -> None:
    figures = run_kaggle_mnist(s3_server, train_rows=1500, test_rows=300, tag="kaggle")
    assert figures["f1"] > 0.70, figures
    assert figures["accuracy"] > 0.70, figures


def test_headerless_mnist_sequence_reads_gzip_output_from_s3(s3_server: AmlServer) -> None:
    accuracy = run_headerless_mnist(s3_server, train_rows=1500, test_rows=300, tag="headerless")
    assert accuracy > 0.70


@pytest.mark.slow
@pytest.mark.ci
def test_kaggle_mnist_full_sample(s3_server: AmlServer) -> None:
    figures = run_kaggle_mnist(s3_server, train_rows=5000, test_rows=1000, tag="kaggle-full")
    assert figures["f1"] > 0.85 and figures["accuracy"] > 0.85, figures


@pytest.mark.slow
@pytest.mark.ci
def test_headerless_mnist_full_sample(s3_server: AmlServer) -> None:
    assert run_headerless_mnist(s3_server, train_rows=5000, test_rows=1000, tag="headerless-full") > 0.85


# ----------------------------------------------------------------------------------------------- banking


def _script_env(server: AmlServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL_MACHINE_LEARNING=server.url,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="sample",
        AWS_SECRET_ACCESS_KEY="sample",
        PYTHONUNBUFFERED="1",
    )
    if server.s3_url:
        env["AWS_ENDPOINT_URL_S3"] = server.s3_url
    return env


def _run_script(cwd: Path, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def run_banking(
    server: AmlServer, tmp_path: Path, rows: int | None, batch_rows: int | None
) -> dict[str, Any]:
    """build_model.py, wait, use_model.py 0.77, then a realtime predict; returns the figures."""
    server.put(
        "s3://aml-sample-data/banking.csv",
        aml_data.banking_rows("banking.csv", rows) if rows else (BANKING / "banking.csv").read_bytes(),
    )
    server.put(
        "s3://aml-sample-data/banking-batch.csv",
        aml_data.banking_rows("banking-batch.csv", batch_rows)
        if batch_rows
        else (BANKING / "banking-batch.csv").read_bytes(),
    )
    for name in ("banking.csv.schema", "banking-batch.csv.schema", "recipe.json"):
        shutil.copy(BANKING / name, tmp_path / name)
    for name in ("banking_build_model.py", "banking_use_model.py"):
        shutil.copy(SCRIPTS / name, tmp_path / name)
    env = _script_env(server)

    built = _run_script(tmp_path, env, "banking_build_model.py")
    model_id = next(line.split()[-1] for line in built.splitlines() if line.startswith("Created ML Model "))
    eval_id = next(line.split()[-1] for line in built.splitlines() if line.startswith("Created Evaluation "))
    ml = server.client()
    model = wait_for(ml, "ml_model", model_id, timeout=900)
    assert model["Status"] == "COMPLETED", model.get("Message")
    assert model["TrainingParameters"]["sgd.maxPasses"] == "100"
    evaluation = wait_for(ml, "evaluation", eval_id, timeout=900)
    assert evaluation["Status"] == "COMPLETED", evaluation.get("Message")

    used = _run_script(tmp_path, env, "banking_use_model.py", model_id, "0.77", "s3://banking-out/ml-output/")
    assert f"Set score threshold for {model_id} to 0.77" in used
    bp_id = next(
        line.split()[-1] for line in used.splitlines() if line.startswith("Created Batch Prediction ")
    )
    assert ml.get_ml_model(MLModelId=model_id)["ScoreThreshold"] == pytest.approx(0.77)
    bp = wait_for(ml, "batch_prediction", bp_id, timeout=900)
    assert bp["Status"] == "COMPLETED", bp.get("Message")
    _, rows = _batch_result(server, "s3://banking-out/ml-output/", bp_id)
    assert rows[0] == ["bestAnswer", "score"]
    body = [r for r in rows[1:] if r]
    assert all(r[0] == ("1" if float(r[1]) >= 0.77 else "0") for r in body)

    info = ml.create_realtime_endpoint(MLModelId=model_id)["RealtimeEndpointInfo"]
    for _ in range(100):
        if info.get("EndpointStatus") == "READY":
            break
        time.sleep(0.1)
        info = ml.get_ml_model(MLModelId=model_id)["EndpointInfo"]
    with (BANKING / "banking-batch.csv").open(newline="") as f:
        record = next(csv.DictReader(f))
    pred = ml.predict(MLModelId=model_id, Record=record, PredictEndpoint=info["EndpointUrl"])["Prediction"]
    label = pred["predictedLabel"]
    assert label == ("1" if pred["predictedScores"][label] >= 0.77 else "0")
    assert pred["details"] == {"PredictiveModelType": "BINARY", "Algorithm": "SGD"}
    return {
        "auc": float(evaluation["PerformanceMetrics"]["Properties"]["BinaryAUC"]),
        "rows": len(body),
        "total": bp["TotalRecordCount"],
    }


def test_banking_sample_scripts(aml_server: AmlServer, tmp_path: Path) -> None:
    figures = run_banking(aml_server, tmp_path, rows=4000, batch_rows=400)
    assert figures["rows"] == figures["total"] == 400
    assert figures["auc"] > 0.85, figures


@pytest.mark.slow
@pytest.mark.ci
def test_banking_sample_scripts_full(aml_server: AmlServer, tmp_path: Path) -> None:
    figures = run_banking(aml_server, tmp_path, rows=None, batch_rows=None)
    assert figures["rows"] == figures["total"] == 4119
    assert figures["auc"] > 0.93, figures


# ----------------------------------------------------------------------------------------------- AWS CLI


def _aws(server: AmlServer, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("aws")
    env = _script_env(server)
    env.pop("AWS_ENDPOINT_URL_MACHINE_LEARNING")
    return subprocess.run(
        [str(exe), "machinelearning", *args, "--endpoint-url", server.url, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_aws_cli_against_the_server(aml_server: AmlServer) -> None:
    aml_server.put("s3://cli/wine.csv", aml_data.wine_csv(200))
    created = _aws(
        aml_server,
        "create-data-source-from-s3",
        "--data-source-id",
        "ds-cli",
        "--data-spec",
        json.dumps({"DataLocationS3": "s3://cli/wine.csv", "DataSchema": aml_data.wine_regression_schema()}),
        "--compute-statistics",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"DataSourceId": "ds-cli"}
    # the CLI's waiter polls every 30 s: let boto3 wait first, then the CLI's waiter must agree at once
    aml_server.client().get_waiter("data_source_available").wait(
        FilterVariable="DataLocationS3",
        EQ="s3://cli/wine.csv",
        WaiterConfig={"Delay": 0.2, "MaxAttempts": 600},
    )
    waited = _aws(
        aml_server,
        "wait",
        "data-source-available",
        "--filter-variable",
        "DataLocationS3",
        "--eq",
        "s3://cli/wine.csv",
    )
    assert waited.returncode == 0, waited.stderr
    listed = _aws(
        aml_server,
        "describe-data-sources",
        "--filter-variable",
        "DataLocationS3",
        "--eq",
        "s3://cli/wine.csv",
    )
    assert listed.returncode == 0, listed.stderr
    results = json.loads(listed.stdout)["Results"]
    assert [r["DataSourceId"] for r in results] == ["ds-cli"] and results[0]["Status"] == "COMPLETED"
    models = _aws(aml_server, "describe-ml-models")
    assert models.returncode == 0 and "Results" in json.loads(models.stdout)
    missing = _aws(aml_server, "get-ml-model", "--ml-model-id", "ml-nope")
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr
