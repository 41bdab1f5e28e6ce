"""Entities under ids special to a filesystem keep their own files (runs before test_hostile deletes any)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import SEED_IDS, HostileClient
from tests.reliability.strategies import encode

pytestmark = [pytest.mark.reliability, pytest.mark.server]


def test_odd_ids_keep_their_own_files(hostile: HostileClient, hostile_server: tuple[Any, Any, Path]) -> None:
    """Entities named ``.``, ``..``, ``table``, ``model``, ``TABLE`` (seeded) each work on their own data.

    Regression (issue 8, row 1): a datasource ``.`` overwrote datasource ``table``'s encoded table, a model
    ``.`` replaced model ``model``, and ``..`` wrote ``table/``, ``model/`` and ``insights.json`` into the
    home root.
    """
    for i in SEED_IDS:
        for op, key in [
            ("GetDataSource", "DataSourceId"),
            ("GetMLModel", "MLModelId"),
            ("GetEvaluation", "EvaluationId"),
            ("GetBatchPrediction", "BatchPredictionId"),
        ]:
            response = hostile.send(op, encode({key: i}))
            assert response is not None and response.status_code == 200, f"{op} {i!r}"
            body = response.json()
            assert body["Status"] == "COMPLETED", f"{op} {i!r}: {body.get('Status')} {body.get('Message')}"
        record = {"fixed acidity": "7.4", "volatile acidity": "0.7", "alcohol": "9.4"}
        model = hostile.send("GetMLModel", encode({"MLModelId": i}))
        assert model is not None
        endpoint = model.json()["EndpointInfo"]["EndpointUrl"]
        predicted = hostile.send(
            "Predict", encode({"MLModelId": i, "Record": record, "PredictEndpoint": endpoint})
        )
        assert predicted is not None and predicted.status_code == 200, (
            f"Predict {i!r}: {predicted and predicted.text}"
        )
        assert isinstance(predicted.json()["Prediction"]["predictedValue"], float)
    home = hostile_server[2]
    stray = sorted(
        p.name for p in home.iterdir() if p.name in {"table", "model", "insights.json", "report.json"}
    )
    assert not stray, f"entity files in the home root: {stray}"
