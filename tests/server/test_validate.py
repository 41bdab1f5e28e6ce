"""Server-side validation: what botocore's client lets through, the server rejects like AWS."""

from __future__ import annotations

from typing import Any

import pytest

from amlflow.server.protocol import ProtocolError
from amlflow.server.validate import validate_input

pytestmark = pytest.mark.server


@pytest.mark.parametrize(
    ("call", "kwargs", "fragments"),
    [
        ("describe_ml_models", {"Limit": 500}, ["at 'Limit'", "less than or equal to 100"]),
        (
            "create_ml_model",
            {"MLModelId": "ml-x", "MLModelType": "NOPE", "TrainingDataSourceId": "ds"},
            ["Value 'NOPE' at 'MLModelType'", "enum value set: [REGRESSION, BINARY, MULTICLASS]"],
        ),
        (
            "get_ml_model",
            {"MLModelId": "has spaces " + "x" * 60},
            [
                "at 'MLModelId'",
                "regular expression pattern: [a-zA-Z0-9_.-]+",
                "less than or equal to 64",
                "2 validation errors detected",
            ],
        ),
        ("describe_data_sources", {"FilterVariable": "NotAVariable"}, ["at 'FilterVariable'"]),
        (
            "create_batch_prediction",
            {
                "BatchPredictionId": "bp",
                "MLModelId": "ml",
                "BatchPredictionDataSourceId": "ds",
                "OutputUri": "http://bucket/out/",
            },
            ["at 'OutputUri'", "s3://"],
        ),
        ("update_ml_model", {"MLModelId": "ml", "MLModelName": "   "}, ["at 'MLModelName'"]),
        (
            "add_tags",
            {"ResourceId": "ml", "ResourceType": "MLModel", "Tags": [{"Key": "bad#key"}]},
            ["at 'Tags.1.member.Key'"],
        ),
    ],
)
def test_invalid_input_reaches_no_service(
    fake_server: Any, fake_ml: Any, call: str, kwargs: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(fake_ml.exceptions.InvalidInputException) as info:
        getattr(fake_ml, call)(**kwargs)
    message = info.value.response["Error"]["Message"]
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unicode_tags_and_own_predict_endpoint_are_valid(fake_server: Any, fake_ml: Any) -> None:
    fake_ml.add_tags(
        ResourceId="ml", ResourceType="MLModel", Tags=[{"Key": "équipe données", "Value": "ML/ops=1+2@x"}]
    )
    out = fake_ml.predict(MLModelId="ml", Record={"a": "b"}, PredictEndpoint=fake_server.url)
    assert "Prediction" in out


def test_predict_endpoint_must_be_http() -> None:
    """(botocore cannot even send to ftp://; a raw client could.)"""
    with pytest.raises(ProtocolError) as info:
        validate_input("Predict", {"MLModelId": "ml", "Record": {}, "PredictEndpoint": "ftp://example"})
    assert "at 'PredictEndpoint'" in info.value.message
    validate_input("Predict", {"MLModelId": "ml", "Record": {}, "PredictEndpoint": "http://127.0.0.1:8080"})
    validate_input(
        "Predict",
        {
            "MLModelId": "ml",
            "Record": {},
            "PredictEndpoint": "https://realtime.machinelearning.us-east-1.amazonaws.com",
        },
    )


def test_passwords_are_not_echoed() -> None:
    params = {
        "DataSourceId": "ds",
        "RoleARN": "arn",
        "DataSpec": {
            "DatabaseInformation": {"DatabaseName": "db", "ClusterIdentifier": "c"},
            "SelectSqlQuery": "select 1",
            "DatabaseCredentials": {"Username": "u", "Password": "short"},
            "S3StagingLocation": "s3://b/p",
        },
    }
    with pytest.raises(ProtocolError) as info:
        validate_input("CreateDataSourceFromRedshift", params)
    assert "DataSpec.DatabaseCredentials.Password" in info.value.message
    assert "short" not in info.value.message


def test_types_and_required_members() -> None:
    with pytest.raises(ProtocolError) as info:
        validate_input("CreateMLModel", {"MLModelId": 5, "Parameters": {"sgd.maxPasses": 10}})
    msg = info.value.message
    assert "at 'MLModelId' failed to satisfy constraint: Member must be a string" in msg
    assert "Value null at 'MLModelType'" in msg and "Value null at 'TrainingDataSourceId'" in msg
    assert "at 'Parameters.sgd.maxPasses'" in msg
    validate_input(
        "CreateMLModel",
        {
            "MLModelId": "ml",
            "MLModelType": "BINARY",
            "TrainingDataSourceId": "ds",
            "UnknownMember": "ignored, like AWS",
        },
    )
