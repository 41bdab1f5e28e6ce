#!/usr/bin/env python
"""Use the banking model the way AWS's sample ``use_model.py`` does.

A call-for-call re-enactment of aws-samples/machine-learning-samples
``targeted-marketing-python/use_model.py`` (see README.md beside this file): poll the model until it is
COMPLETED, set its score threshold, create a datasource over ``s3://aml-sample-data/banking-batch.csv``
and start a batch prediction into the given S3 URL. The endpoint is never named here.

Usage:
    python banking_use_model.py ml_model_id score_threshold s3_output_url

For example:
    python banking_use_model.py ml-12345678901 0.77 s3://your-bucket/prefix
"""

import base64
import datetime
import os
import random
import sys
import time
from urllib.parse import urlparse

import boto3

UNSCORED_DATA_S3_URL = "s3://aml-sample-data/banking-batch.csv"


def new_id(prefix):
    """The sample's IDs: prefix + base32 of 10 random bytes."""
    return prefix + "-" + base64.b32encode(os.urandom(10)).decode("ascii")


def use_model(model_id, threshold, schema_fn, output_s3, data_s3url):
    """Set the threshold and start a batch prediction; return the batch prediction id."""
    ml = boto3.client("machinelearning")

    poll_until_completed(ml, model_id)  # Can't use it until it's COMPLETED
    ml.update_ml_model(MLModelId=model_id, ScoreThreshold=threshold)
    print("Set score threshold for %s to %.2f" % (model_id, threshold))

    bp_id = new_id("bp")
    ds_id = create_data_source_for_scoring(ml, data_s3url, schema_fn)
    ml.create_batch_prediction(
        BatchPredictionId=bp_id,
        BatchPredictionName="Batch Prediction for marketing sample",
        MLModelId=model_id,
        BatchPredictionDataSourceId=ds_id,
        OutputUri=output_s3,
    )
    print("Created Batch Prediction %s" % bp_id)
    return bp_id


def poll_until_completed(ml, model_id):
    """Poll get_ml_model with exponential backoff and jitter until the model is done."""
    delay = 2
    while True:
        model = ml.get_ml_model(MLModelId=model_id)
        status = model["Status"]
        message = model.get("Message", "")
        now = str(datetime.datetime.now().time())
        print("Model %s is %s (%s) at %s" % (model_id, status, message, now))
        if status in ["COMPLETED", "FAILED", "INVALID"]:
            break
        delay *= random.uniform(1.1, 2.0)
        time.sleep(delay)


def create_data_source_for_scoring(ml, data_s3url, schema_fn):
    """A datasource over the unscored data, without statistics."""
    ds_id = new_id("ds")
    with open(schema_fn) as f:
        schema = f.read()
    ml.create_data_source_from_s3(
        DataSourceId=ds_id,
        DataSourceName="DS for Batch Prediction %s" % data_s3url,
        DataSpec={"DataLocationS3": data_s3url, "DataSchema": schema},
        ComputeStatistics=False,
    )
    print("Created Datasource %s for batch prediction" % ds_id)
    return ds_id


if __name__ == "__main__":
    try:
        model_id = sys.argv[1]
        threshold = float(sys.argv[2])
        s3_output_url = sys.argv[3]
        if urlparse(s3_output_url).scheme != "s3":
            raise RuntimeError("s3_output_url must be an s3:// url")
    except IndexError:
        print(__doc__)
        sys.exit(-1)
    use_model(model_id, threshold, "banking-batch.csv.schema", s3_output_url, UNSCORED_DATA_S3_URL)
