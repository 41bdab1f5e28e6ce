#!/usr/bin/env python
"""Build the banking ("targeted marketing") model the way AWS's sample ``build_model.py`` does.

A call-for-call re-enactment of aws-samples/machine-learning-samples
``targeted-marketing-python/build_model.py`` (see README.md beside this file): two datasources (70/30
sequential split of ``s3://aml-sample-data/banking.csv``), a BINARY model with the sample's parameters
and recipe, and an evaluation. The endpoint is never named here: boto3 reads
``AWS_ENDPOINT_URL_MACHINE_LEARNING``.

Usage:
    python banking_build_model.py ["Optional name for created objects"]
"""

import base64
import json
import os
import sys

import boto3

TRAINING_DATA_S3_URL = "s3://aml-sample-data/banking.csv"


def new_id(prefix):
    """The sample's IDs: prefix + base32 of 10 random bytes (16 characters, no padding)."""
    return prefix + "-" + base64.b32encode(os.urandom(10)).decode("ascii")


def build_model(data_s3_url, schema_fn, recipe_fn, name, train_percent=70):
    """Create the datasources, the model and its evaluation; return the model id."""
    ml = boto3.client("machinelearning")
    train_ds_id, test_ds_id = create_data_sources(ml, data_s3_url, schema_fn, train_percent, name)
    ml_model_id = create_model(ml, train_ds_id, recipe_fn, name)
    create_evaluation(ml, ml_model_id, test_ds_id, name)
    return ml_model_id


def create_data_sources(ml, data_s3_url, schema_fn, train_percent, name):
    """A training datasource with the first ``train_percent``% and a test datasource with the rest."""
    train_ds_id = new_id("ds")
    with open(schema_fn) as f:
        schema = f.read()
    spec = {
        "DataLocationS3": data_s3_url,
        "DataRearrangement": json.dumps({"splitting": {"percentBegin": 0, "percentEnd": train_percent}}),
        "DataSchema": schema,
    }
    ml.create_data_source_from_s3(
        DataSourceId=train_ds_id,
        DataSpec=spec,
        DataSourceName=name + " - training split",
        ComputeStatistics=True,
    )
    print("Created training data set %s" % train_ds_id)

    test_ds_id = new_id("ds")
    spec["DataRearrangement"] = json.dumps({"splitting": {"percentBegin": train_percent, "percentEnd": 100}})
    ml.create_data_source_from_s3(
        DataSourceId=test_ds_id,
        DataSpec=spec,
        DataSourceName=name + " - testing split",
        ComputeStatistics=True,
    )
    print("Created test data set %s" % test_ds_id)
    return train_ds_id, test_ds_id


def create_model(ml, train_ds_id, recipe_fn, name):
    """A BINARY model with the sample's SGD parameters and recipe."""
    model_id = new_id("ml")
    with open(recipe_fn) as f:
        recipe = f.read()
    ml.create_ml_model(
        MLModelId=model_id,
        MLModelName=name + " model",
        MLModelType="BINARY",
        Parameters={
            "sgd.maxPasses": "100",
            "sgd.maxMLModelSizeInBytes": "104857600",
            "sgd.l2RegularizationAmount": "1e-4",
        },
        Recipe=recipe,
        TrainingDataSourceId=train_ds_id,
    )
    print("Created ML Model %s" % model_id)
    return model_id


def create_evaluation(ml, model_id, test_ds_id, name):
    """Evaluate the model on the test split."""
    eval_id = new_id("ev")
    ml.create_evaluation(
        EvaluationId=eval_id,
        EvaluationName=name + " evaluation",
        MLModelId=model_id,
        EvaluationDataSourceId=test_ds_id,
    )
    print("Created Evaluation %s" % eval_id)
    return eval_id


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 2 else "Marketing sample"
    model_id = build_model(TRAINING_DATA_S3_URL, "banking.csv.schema", "recipe.json", name=name)
    print(
        "\nFor the next step in the demo, run:\n    python use_model.py %s 0.77 s3://your-bucket/ml-output/"
        % model_id
    )
